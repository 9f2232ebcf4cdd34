import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, startRedisServer, type RedisProcess } from './redis.js';

/**
 * A real Redis Cluster for tests: three primaries (optionally one replica each) from
 * `redis-server --cluster-enabled yes` processes on free loopback ports, joined by
 * `redis-cli --cluster create`. Every process is stopped by its PID and the private directory
 * (nodes.conf files) removed by `stop()`, whatever happened; a failed start cleans up the same way.
 */

const CLI = process.env.REDIS_CLI_BIN ?? 'redis-cli';
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const LOOPBACK = '127.0.0.1';

export interface ClusterNode {
  /** The redis-server process (its `pid`, `kill()` and `stop()` signal exactly that PID). */
  readonly process: RedisProcess;
  readonly port: number;
  readonly url: string;
  /** The node's cluster id (CLUSTER MYID). */
  readonly id: string;
  /** Its role when the cluster was made; a failover may change it (see `primaries()`). */
  readonly initialRole: 'primary' | 'replica';
}

export interface RedisCluster {
  /** The private directory (node dirs, configs); removed by stop(). */
  readonly dir: string;
  /** Every node, the three primaries first. */
  readonly nodes: readonly ClusterNode[];
  /** For an ioredis `Cluster`: every node's address. */
  readonly startupNodes: readonly { host: string; port: number }[];
  /** The current primaries, as a live node's CLUSTER NODES says (healthy ones only). */
  primaries(): Promise<ClusterNode[]>;
  /** One command on one node, over a short-lived connection of its own. */
  command(node: ClusterNode, ...args: (string | number)[]): Promise<unknown>;
  /** Waits until every live node says cluster_state:ok with all 16384 slots served. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** SIGKILL one node (by PID) and wait for it to exit: a crash. */
  kill(node: ClusterNode): Promise<void>;
  /** Stops every node by PID and removes the private directory. Idempotent. */
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  /** One replica per primary (six nodes). Default false. */
  replicas?: boolean;
  /** cluster-node-timeout: how long a node may be unreachable before it counts as failed. Default 2000 ms. */
  nodeTimeoutMs?: number;
  /** Extra redis-server arguments for every node (e.g. `--appendonly yes`, `--aclfile`). */
  args?: readonly string[];
  /** How long the whole start may take. Default 20 s. */
  readyTimeoutMs?: number;
}

const PRIMARIES = 3;

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

/** Ids of the primaries a CLUSTER NODES reply names without a fail flag. */
function healthyPrimaries(nodesReply: string): Set<string> {
  return new Set(
    nodesReply
      .split('\n')
      .map((line) => line.split(' '))
      .filter((f) => f.length > 2 && f[2]!.split(',').includes('master') && !/fail/.test(f[2]!))
      .map((f) => f[0]!),
  );
}

async function until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
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

export async function startRedisCluster(opts: StartClusterOptions = {}): Promise<RedisCluster> {
  const count = opts.replicas ? PRIMARIES * 2 : PRIMARIES;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const dir = mkdtempSync(join(tmpdir(), 'jit-redis-cluster-'));
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

  try {
    // Each node gets a bus port of its own (not port + 10000, which may be taken or past 65535).
    // allSettled: a node that fails to start must not leave the others running unrecorded.
    const settled = await Promise.allSettled(
      Array.from({ length: count }, async (_, i) => {
        const nodeDir = join(dir, `node-${i}`);
        mkdirSync(nodeDir);
        const p = await startRedisServer({
          args: [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', join(nodeDir, 'nodes.conf'),
            '--cluster-port', String(await freePort()),
            '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 2000),
            // A replica takes over however long its link was down (tests kill primaries at will).
            '--cluster-replica-validity-factor', '0',
            '--dir', nodeDir,
            // A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
            '--repl-diskless-sync-delay', '0',
            ...(opts.args ?? []),
          ],
        });
        processes.push(p);
        return p;
      }),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const started = processes.slice();
    await run(
      CLI,
      ['--cluster', 'create', ...started.map((p) => `${LOOPBACK}:${p.port}`), '--cluster-replicas', opts.replicas ? '1' : '0', '--cluster-yes'],
      { timeout: readyTimeoutMs },
    ).catch((e: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`redis-cli --cluster create failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    });
    const ids = await Promise.all(started.map((p) => redisCommand(p.port, ['CLUSTER', 'MYID'])));
    const roles = await Promise.all(started.map(async (p) => infoFields(await redisCommand(p.port, ['INFO', 'replication'])).get('role')));
    const nodes: ClusterNode[] = started
      .map((p, i): ClusterNode => ({
        process: p,
        port: p.port,
        url: p.url,
        id: String(ids[i]),
        initialRole: roles[i] === 'master' ? 'primary' : 'replica',
      }))
      .sort((a, b) => (a.initialRole === b.initialRole ? 0 : a.initialRole === 'primary' ? -1 : 1));
    const killed = new Set<ClusterNode>();
    const alive = (n: ClusterNode) => !killed.has(n);

    const waitHealthy = (timeoutMs = readyTimeoutMs) =>
      until('cluster_state:ok with all slots served on every live node', timeoutMs, async () => {
        const live = nodes.filter(alive);
        const infos = await Promise.all(live.map((n) => redisCommand(n.port, ['CLUSTER', 'INFO']).then(infoFields)));
        if (!infos.every((f) => f.get('cluster_state') === 'ok' && f.get('cluster_slots_ok') === '16384')) return false;
        // Every replica has its primary's data stream (a failover test needs it before the kill).
        const reps = await Promise.all(live.map((n) => redisCommand(n.port, ['INFO', 'replication']).then(infoFields)));
        if (!reps.every((f) => f.get('role') === 'master' || f.get('master_link_status') === 'up')) return false;
        // And every live node's view (gossip) has the same three healthy primaries.
        const views = await Promise.all(live.map((n) => redisCommand(n.port, ['CLUSTER', 'NODES']).then((t) => [...healthyPrimaries(String(t))].sort().join())));
        return views.every((v) => v === views[0] && v.split(',').length === PRIMARIES);
      });
    await waitHealthy();

    const cluster: RedisCluster = {
      dir,
      nodes,
      startupNodes: nodes.map((n) => ({ host: LOOPBACK, port: n.port })),
      async primaries() {
        let lastError: unknown;
        for (const n of nodes.filter(alive)) {
          try {
            const ids = healthyPrimaries(String(await redisCommand(n.port, ['CLUSTER', 'NODES'])));
            return nodes.filter((node) => ids.has(node.id));
          } catch (e) {
            lastError = e;
          }
        }
        throw new Error(`no live node answered CLUSTER NODES: ${String(lastError)}`);
      },
      command: (node, ...args) => redisCommand(node.port, args),
      waitHealthy,
      async kill(node) {
        killed.add(node);
        await node.process.kill();
      },
      stop,
    };
    return cluster;
  } catch (e) {
    await stop();
    throw e;
  }
}
