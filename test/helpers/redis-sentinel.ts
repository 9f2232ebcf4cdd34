import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RedisProcess } from './redis.js';
import { infoFields, LOOPBACK, processGroup, redisCommand as commandOn, until } from './redis-group.js';

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

export async function startRedisSentinel(opts: StartSentinelOptions = {}): Promise<RedisSentinelGroup> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const group = processGroup('redis-sentinel');
  const { dir, stop, start, startAll } = group;

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
        return start(`sentinel-${i}`, ['--sentinel'], { configFile: conf });
      }),
    );

    await until('sentinels agreeing on the primary, its replicas and each other', readyTimeoutMs, async () => {
      const agreed = await Promise.all(
        sentinels.map(async (s) => {
          const addr = (await commandOn(s.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME])) as string[] | null;
          const known = (await commandOn(s.port, ['SENTINEL', 'REPLICAS', MASTER_NAME])) as unknown[];
          const peers = (await commandOn(s.port, ['SENTINEL', 'SENTINELS', MASTER_NAME])) as unknown[];
          return addr?.[1] === String(primary.port) && known.length === 2 && peers.length === 2;
        }),
      );
      const links = await Promise.all(replicas.map((r) => commandOn(r.port, ['INFO', 'replication']).then(infoFields)));
      return agreed.every(Boolean) && links.every((f) => f.get('master_link_status') === 'up');
    });

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
