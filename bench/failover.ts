/**
 * `npx tsx bench/failover.ts`: the failover window under issuance load, on a Sentinel group (one
 * primary, two replicas, three sentinels; test/helpers/redis-sentinel.ts) and on a 3-primary Redis
 * Cluster with two replicas per primary (test/helpers/redis-cluster.ts), one after the other, each
 * with one broker process (the real CLI) that waits for one replica after every grant write
 * (`store.replication.min_replicas: 1`; on the Cluster the promoted replica keeps one of its own).
 * The load is the failover tests' (bench/failover-load.ts): LOOPS request loops, one workload each;
 * with at least MIN_IN_FLIGHT requests in flight the primary (on the Cluster: the one serving the
 * most of the load's workloads) is SIGKILLed by PID. Reported per topology: the window (first
 * failure after the kill to the first 201 after it), the settled time (to the first 201 after the
 * last failure), failures after recovery, and the answers' counts, for the workloads the kill
 * affected. Each load is bounded (MAX_LOAD_MS); the whole run takes well under 90 s. The table goes
 * to stdout and to bench/results/failover-<ISO time>.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { workloadTag } from '../src/grants/ids.js';
import { freePort } from '../src/util/net.js';
import { startRedisCluster, type RedisCluster } from '../test/helpers/redis-cluster.js';
import { startRedisSentinel, type RedisSentinelGroup } from '../test/helpers/redis-sentinel.js';
import { withBroker } from './broker.js';
import { issuanceLoadThroughFailover, workloadOf, type LoadResult } from './failover-load.js';
import { brokerConfig, type Env } from './scenarios.js';

const DOWN_AFTER_MS = 1000;
const NODE_TIMEOUT_MS = 1000;
const LOOPS = 40;
const MIN_IN_FLIGHT = 32;
const MAX_LOAD_MS = 25_000;
const PREFIX = 'bench-failover:';

/** The failover load's workloads and intent (bench/failover-load.ts): their issuer entry and rule. */
function failoverConfig(env: Env, port: number, store: Record<string, unknown>): Record<string, unknown> {
  return {
    ...brokerConfig(env, port, PREFIX, { store: { ...store, command_timeout: '1s', replication: { min_replicas: 1, timeout: '250ms' } } }),
    attestation: { oidc: { issuers: [{ issuer: env.issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] } },
    policies: [{ name: 'failover', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] }],
  };
}

interface Row {
  what: string;
  detection: string;
  load: LoadResult;
  affected: (workload: string) => boolean;
}

async function onBroker(env: Env, name: string, store: Record<string, unknown>, run: (url: string) => Promise<LoadResult>): Promise<LoadResult> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  return withBroker({ name, dir: env.dir, url, config: failoverConfig(env, port, store) }, () => run(url));
}

async function sentinelRow(env: Env, issuer: OidcIssuer): Promise<Row> {
  let group: RedisSentinelGroup | undefined;
  try {
    group = await startRedisSentinel({ downAfterMs: DOWN_AFTER_MS, failoverTimeoutMs: 5000 });
    const g = group;
    const store = { kind: 'redis', sentinel: { nodes: g.sentinelAddrs.map((a) => `${a.host}:${a.port}`), master_name: g.masterName } };
    const load = await onBroker(env, 'failover-sentinel', store, (brokerUrl) =>
      issuanceLoadThroughFailover({
        brokerUrl,
        issuer,
        name: 'sentinel',
        loops: LOOPS,
        minInFlight: MIN_IN_FLIGHT,
        warmAnswers: 200,
        kill: () => g.kill(g.primary),
        // Every sentinel names the new primary; then 1.5 s more, so a late reconnect would show.
        failedOver: async () => (await Promise.all(g.sentinels.map((s) => g.command(s, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', g.masterName)))).every((a) => (a as string[])[1] !== String(g.primary.port)),
        quietMs: 1500,
        okAfterFailure: 100,
        maxMs: MAX_LOAD_MS,
        clientTimeoutMs: 10_000,
      }),
    );
    return { what: 'Sentinel: 1 primary, 2 replicas, 3 sentinels', detection: `down-after-milliseconds ${DOWN_AFTER_MS}`, load, affected: () => true };
  } finally {
    await group?.stop();
  }
}

async function clusterRow(env: Env, issuer: OidcIssuer): Promise<Row> {
  let cluster: RedisCluster | undefined;
  try {
    cluster = await startRedisCluster({ replicas: 2, nodeTimeoutMs: NODE_TIMEOUT_MS });
    const c = cluster;
    // The victim: the primary serving the most of the load's workloads (their keys' hash tag decides the slot).
    const [first] = c.nodes;
    const ranges = (await c.command(first!, 'CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    const byPort = new Map<number, Set<string>>();
    for (let i = 0; i < LOOPS; i++) {
      const workload = workloadOf(`cluster-${i}`);
      const slot = Number(await c.command(first!, 'CLUSTER', 'KEYSLOT', `${PREFIX}{w:${workloadTag(workload)}}`));
      const port = Number(ranges.find(([from, to]) => slot >= from && slot <= to)![2][1]);
      byPort.set(port, (byPort.get(port) ?? new Set()).add(workload));
    }
    const [victimPort, onVictim] = [...byPort].sort((a, b) => b[1].size - a[1].size)[0]!;
    const victim = c.nodes.find((n) => n.port === victimPort)!;
    const affected = (w: string) => onVictim.has(w);
    const store = { kind: 'redis', cluster: { nodes: c.startupNodes.map((n) => `${n.host}:${n.port}`) } };
    const load = await onBroker(env, 'failover-cluster', store, (brokerUrl) =>
      issuanceLoadThroughFailover({
        brokerUrl,
        issuer,
        name: 'cluster',
        loops: LOOPS,
        minInFlight: MIN_IN_FLIGHT,
        warmAnswers: 200,
        kill: () => c.kill(victim),
        affected,
        okAfterFailure: 50,
        maxMs: MAX_LOAD_MS,
        clientTimeoutMs: 10_000,
      }),
    );
    return { what: `Cluster: 3 primaries, 2 replicas each (the killed primary's ${onVictim.size} of ${LOOPS} workloads)`, detection: `cluster-node-timeout ${NODE_TIMEOUT_MS}`, load, affected };
  } finally {
    await cluster?.stop();
  }
}

const s = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);

function line(r: Row): string {
  const after = r.load.answers.filter((a) => a.endedAt >= r.load.killedAt && r.affected(a.workload));
  const failed = after.filter((a) => a.status !== 201);
  const other = failed.filter((a) => a.status !== 503).length;
  return `| ${r.what} | \`${r.detection}\` | ${s(r.load.windowMs)} | ${s(r.load.settledMs)} | ${r.load.failuresAfterRecovery.length} | ${r.load.inFlightAtKill} | ${after.length - failed.length} tokens, ${failed.length} 503s${other ? `, ${other} other` : ''} |`;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-failover-'));
  let issuer: OidcIssuer | undefined;
  const rows: Row[] = [];
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    // brokerConfig's standalone Redis is replaced by each topology's store.
    const env: Env = { dir, redis: { url: 'redis://127.0.0.1:1', pid: 0 }, issuer };
    rows.push(await sentinelRow(env, issuer));
    rows.push(await clusterRow(env, issuer));
  } finally {
    await issuer?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  const text = [
    `jit-broker bench, failover window — ${startedAt.toISOString()} — node ${process.version}, ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(1)} at the end, ${LOOPS} request loops, one run`,
    '',
    '| topology | failure detection | window | settled | failures after recovery | in flight at the kill | answers after the kill |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(line),
    '',
  ].join('\n');
  console.log(text);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(join('bench/results', `failover-${startedAt.toISOString().replace(/[:.]/g, '-')}.md`), text);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
