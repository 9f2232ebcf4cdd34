import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { infoFields, LOOPBACK, redisCommand as commandOn } from './redis-cluster.js';
import { startRedisServer, type RedisProcess } from './redis.js';

/**
 * A real Sentinel group for tests: one primary, two replicas and three sentinels
 * (`redis-server <conf> --sentinel`, each conf in the group's private temp dir, which sentinels
 * rewrite), all on free loopback ports. Ready once every sentinel names the primary, knows both
 * replicas and the two other sentinels, and both replicas stream from the primary. `stop()`
 * stops every process by PID and removes the directory, whatever happened.
 */

export const MASTER_NAME = 'jit-primary';

export interface RedisSentinelGroup {
  /** The private directory (node dirs, configs); removed by stop(). */
  readonly dir: string;
  readonly masterName: string;
  /** The primary at start (a failover makes one of the replicas primary: see currentPrimary). */
  readonly primary: RedisProcess;
  readonly replicas: readonly RedisProcess[];
  readonly sentinels: readonly RedisProcess[];
  /** For an ioredis `sentinels` option. */
  readonly sentinelAddrs: readonly { host: string; port: number }[];
  /** The primary and the replicas. */
  readonly dataNodes: readonly RedisProcess[];
  /** The primary's port as the first answering sentinel names it. */
  currentPrimary(): Promise<number>;
  /** One command on one process, over a short-lived connection of its own. */
  command(node: RedisProcess, ...args: (string | number)[]): Promise<unknown>;
  /** SIGKILL one process (by PID) and wait for it to exit: a crash. */
  kill(node: RedisProcess): Promise<void>;
  /** Stops every process by PID and removes the private directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartSentinelOptions {
  /** Sentinels' down-after-milliseconds: how long the primary may not answer before failover. Default 2000. */
  downAfterMs?: number;
  /** Sentinels' failover-timeout. Default 10000. */
  failoverTimeoutMs?: number;
  /** Extra redis-server arguments for the primary and the replicas (e.g. `--appendonly yes`). */
  args?: readonly string[];
  /** How long the whole start may take. Default 20 s. */
  readyTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startRedisSentinel(opts: StartSentinelOptions = {}): Promise<RedisSentinelGroup> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const dir = mkdtempSync(join(tmpdir(), 'jit-redis-sentinel-'));
  const processes: RedisProcess[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      await Promise.all(processes.map((p) => p.stop()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const nodeDir = (name: string) => {
    const d = join(dir, name);
    mkdirSync(d);
    return d;
  };
  const start = async (name: string, args: string[], configFile?: string) => {
    const p = await startRedisServer({ args: [...args, '--dir', nodeDir(name)], ...(configFile ? { configFile } : {}) });
    processes.push(p);
    return p;
  };
  /** Starts all; records every one that started before rethrowing the first failure. */
  const startAll = async (starts: Promise<RedisProcess>[]) => {
    const settled = await Promise.allSettled(starts);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((r) => (r as PromiseFulfilledResult<RedisProcess>).value);
  };

  try {
    // A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
    const primary = await start('primary', ['--repl-diskless-sync-delay', '0', ...(opts.args ?? [])]);
    const replicas = await startAll(
      [1, 2].map((i) => start(`replica-${i}`, ['--replicaof', LOOPBACK, String(primary.port), '--repl-diskless-sync-delay', '0', ...(opts.args ?? [])])),
    );
    const sentinels = await startAll(
      [1, 2, 3].map((i) => {
        const conf = join(dir, `sentinel-${i}.conf`);
        writeFileSync(
          conf,
          [
            `sentinel monitor ${MASTER_NAME} ${LOOPBACK} ${primary.port} 2`,
            `sentinel down-after-milliseconds ${MASTER_NAME} ${opts.downAfterMs ?? 2000}`,
            `sentinel failover-timeout ${MASTER_NAME} ${opts.failoverTimeoutMs ?? 10_000}`,
            `sentinel parallel-syncs ${MASTER_NAME} 1`,
            '',
          ].join('\n'),
        );
        return start(`sentinel-${i}`, ['--sentinel'], conf);
      }),
    );

    const deadline = Date.now() + readyTimeoutMs;
    let last = '';
    for (;;) {
      try {
        const agreed = await Promise.all(
          sentinels.map(async (s) => {
            const addr = (await commandOn(s.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME])) as string[] | null;
            const known = (await commandOn(s.port, ['SENTINEL', 'REPLICAS', MASTER_NAME])) as unknown[];
            const peers = (await commandOn(s.port, ['SENTINEL', 'SENTINELS', MASTER_NAME])) as unknown[];
            return addr?.[1] === String(primary.port) && known.length === 2 && peers.length === 2;
          }),
        );
        const links = await Promise.all(replicas.map((r) => commandOn(r.port, ['INFO', 'replication']).then(infoFields)));
        if (agreed.every(Boolean) && links.every((f) => f.get('master_link_status') === 'up')) break;
        last = '';
      } catch (e) {
        last = ` (last error: ${(e as Error).message})`;
      }
      if (Date.now() > deadline) throw new Error(`sentinel group not ready within ${readyTimeoutMs} ms${last}`);
      await sleep(100);
    }

    return {
      dir,
      masterName: MASTER_NAME,
      primary,
      replicas,
      sentinels,
      sentinelAddrs: sentinels.map((s) => ({ host: LOOPBACK, port: s.port })),
      dataNodes: [primary, ...replicas],
      async currentPrimary() {
        let lastError: unknown;
        for (const s of sentinels) {
          try {
            const addr = (await commandOn(s.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME])) as string[] | null;
            if (addr) return Number(addr[1]);
          } catch (e) {
            lastError = e;
          }
        }
        throw new Error(`no sentinel named the primary: ${String(lastError)}`);
      },
      command: (node, ...args) => commandOn(node.port, args),
      kill: (node) => node.kill(),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
