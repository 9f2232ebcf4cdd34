import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisProcess, type StartRedisOptions } from './redis.js';

/** What the topology harnesses (redis-cluster.ts, redis-sentinel.ts) share. */

export const LOOPBACK = '127.0.0.1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One command over a connection of its own (no retries, no offline queue), then disconnects. */
export async function redisCommand(port: number, args: (string | number)[]): Promise<unknown> {
  // No CLIENT SETINFO: Redis 7.0 answers it with an error, which would count in INFO errorstats.
  const redis = new Redis({ host: LOOPBACK, port, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 1000, disableClientInfo: true });
  redis.on('error', () => undefined); // surfaced by the rejected command
  try {
    await redis.connect();
    return await redis.call(String(args[0]), ...args.slice(1).map(String));
  } finally {
    redis.disconnect();
  }
}

/** `key:value` lines of INFO / CLUSTER INFO as a map. */
export function infoFields(text: unknown): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of String(text).split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return out;
}

/** Polls `check` every 100 ms until it answers true; after `timeoutMs`, throws naming `what` (and the last error). */
export async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
      last = '';
    } catch (e) {
      last = ` (last error: ${(e as Error).message})`;
    }
    await sleep(100);
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms${last}`);
}

export interface ProcessGroup {
  /** The group's private directory (each process gets a subdirectory as its --dir). */
  readonly dir: string;
  /** Starts one redis-server in `<dir>/<name>` and records it for stop(). */
  start(name: string, args: readonly string[], o?: Pick<StartRedisOptions, 'configFile'>): Promise<RedisProcess>;
  /** Several starts at once; every one that started is recorded before the first failure is rethrown. */
  startAll(starts: Promise<RedisProcess>[]): Promise<RedisProcess[]>;
  /** Stops every recorded process by its PID, then removes the directory, whatever happened. Idempotent. */
  stop(): Promise<void>;
}

/** A set of redis-server processes under one private temp dir named `jit-<name>-…`. */
export function processGroup(name: string): ProcessGroup {
  const dir = mkdtempSync(join(tmpdir(), `jit-${name}-`));
  const processes: RedisProcess[] = [];
  let stopped = false;
  return {
    dir,
    async start(sub, args, o = {}) {
      const own = join(dir, sub);
      mkdirSync(own);
      const p = await startRedisServer({ args: [...args, '--dir', own], ...o });
      processes.push(p);
      return p;
    },
    async startAll(starts) {
      const settled = await Promise.allSettled(starts);
      const failed = settled.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      return settled.map((r) => (r as PromiseFulfilledResult<RedisProcess>).value);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await Promise.all(processes.map((p) => p.stop()));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
