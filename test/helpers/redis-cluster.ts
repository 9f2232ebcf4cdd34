import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, type RedisProcess } from './redis.js';
import { infoFields, LOOPBACK, processGroup, redisCommand, until } from './redis-group.js';

export { infoFields, LOOPBACK, redisCommand } from './redis-group.js';

/**
 * A real Redis Cluster for tests: three primaries (optionally one or two replicas each) from
 * `redis-server --cluster-enabled yes` processes on free loopback ports, joined by
 * `redis-cli --cluster create`. Every process is stopped by its PID and the private directory
 * (nodes.conf files) removed by `stop()`, whatever happened; a failed start cleans up the same way.
 */

const CLI = process.env.REDIS_CLI_BIN ?? 'redis-cli';
const run = promisify(execFile);

export interface ClusterNode {
  /** The redis-server process (its `pid`, `kill()` and `stop()` signal exactly that PID). */
  readonly process: RedisProcess;
  readonly port: number;
  readonly url: string;
  /** The node's cluster id (CLUSTER MYID). */
  readonly id: string;
  /** Its role when the cluster was made; a failover may change it (see `primaries()`). */
  readonly initialRole: 'primary' | 'replica';
  /** Its TLS port, when the cluster was started with `tls` (the plain port stays open for the harness). */
  readonly tlsPort?: number;
}

export interface RedisCluster {
  /** The private directory (node dirs, configs); removed by stop(). */
  readonly dir: string;
  /** Every node, the three primaries first. */
  readonly nodes: readonly ClusterNode[];
  /** For an ioredis `Cluster`: every node's address. */
  readonly startupNodes: readonly { host: string; port: number }[];
  /** The same, TLS ports (when started with `tls`). */
  readonly tlsStartupNodes: readonly { host: string; port: number }[];
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
  /**
   * Replicas per primary: true or 1 (six nodes), or 2 (nine nodes: once a replica is promoted it
   * still has one of its own, which `WAIT 1` after a failover needs). Default none.
   */
  replicas?: boolean | 1 | 2;
  /** cluster-node-timeout: how long a node may be unreachable before it counts as failed. Default 2000 ms. */
  nodeTimeoutMs?: number;
  /** Extra redis-server arguments for every node (e.g. `--appendonly yes`, `--aclfile`). */
  args?: readonly string[];
  /** How long the whole start may take. Default 20 s. */
  readyTimeoutMs?: number;
  /**
   * TLS as well, with these PEM files: each node also listens on a TLS port, and the nodes talk
   * to each other (cluster bus, replication) over TLS; clients are not asked for certificates.
   */
  tls?: { certFile: string; keyFile: string; caFile: string };
}

const PRIMARIES = 3;

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

export async function startRedisCluster(opts: StartClusterOptions = {}): Promise<RedisCluster> {
  const perPrimary = opts.replicas === true ? 1 : opts.replicas || 0;
  const count = PRIMARIES * (1 + perPrimary);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  const group = processGroup('redis-cluster');
  const { dir, stop } = group;

  try {
    // Each node gets a bus port of its own (not port + 10000, which may be taken or past 65535).
    const tlsPorts = new Map<RedisProcess, number>();
    const tlsArgs = async (): Promise<string[]> => {
      const t = opts.tls;
      if (!t) return [];
      const port = String(await freePort());
      return ['--tls-port', port, '--tls-cert-file', t.certFile, '--tls-key-file', t.keyFile, '--tls-ca-cert-file', t.caFile, '--tls-auth-clients', 'no', '--tls-cluster', 'yes', '--tls-replication', 'yes'];
    };
    const started = await group.startAll(
      Array.from({ length: count }, async (_, i) => {
        const tls = await tlsArgs();
        const p = await group.start(`node-${i}`, [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', join(dir, `node-${i}`, 'nodes.conf'),
          '--cluster-port', String(await freePort()),
          '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 2000),
          // A replica takes over however long its link was down (tests kill primaries at will).
          '--cluster-replica-validity-factor', '0',
          // A replica's first sync starts at once (Redis waits 5 s for more replicas by default).
          '--repl-diskless-sync-delay', '0',
          ...tls,
          ...(opts.args ?? []),
        ]);
        if (tls.length > 0) tlsPorts.set(p, Number(tls[1]));
        return p;
      }),
    );
    await run(
      CLI,
      ['--cluster', 'create', ...started.map((p) => `${LOOPBACK}:${p.port}`), '--cluster-replicas', String(perPrimary), '--cluster-yes'],
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
        ...(tlsPorts.has(p) ? { tlsPort: tlsPorts.get(p)! } : {}),
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
      tlsStartupNodes: nodes.flatMap((n) => (n.tlsPort ? [{ host: LOOPBACK, port: n.tlsPort }] : [])),
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
