/**
 * `npx tsx bench/replicas.ts`: issuance on one broker process and on two processes of one fleet,
 * on a standalone Redis, then the same on a 3-primary Redis Cluster (test/helpers/redis-cluster.ts,
 * no replicas), in one run (one load at a time; loopback only; about a minute at the defaults). Throughput, latency and CPU per issued token of the brokers and of Redis
 * (every primary of the Cluster summed). Each load is BENCH_DURATION s (default 10) after a 2 s
 * warm-up, with BENCH_CONNECTIONS (64) connections split between the processes. The table goes to
 * stdout and to bench/results/replicas-<ISO time>.md.
 *
 * On a 2-core machine these rows show the overhead of more processes and of the Cluster, not
 * scaling: one broker process already keeps both cores busy with the load generator and Redis.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { startRedisCluster, type RedisCluster } from '../test/helpers/redis-cluster.js';
import { startRedisServer, type RedisProcess } from '../test/helpers/redis.js';
import { CONNECTIONS, DURATION_S, WARMUP_S } from './config.js';
import type { Measured } from './load.js';
import { summarize } from './report.js';
import { fleetScenario, type Env } from './scenarios.js';

async function main(): Promise<void> {
  const startedAt = new Date();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-replicas-'));
  let redis: RedisProcess | undefined;
  let cluster: RedisCluster | undefined;
  let issuer: OidcIssuer | undefined;
  const rows: Measured[] = [];
  try {
    redis = await startRedisServer();
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env: Env = { dir, redis, issuer };
    const where = 'standalone Redis';
    rows.push(await fleetScenario(env, { count: 1, key: 'standalone-1', where }));
    rows.push(await fleetScenario(env, { count: 2, key: 'standalone-2', where }));
    await redis.stop(); // only the Cluster competes for the CPU from here on

    cluster = await startRedisCluster();
    const primaries = await cluster.primaries();
    const onCluster = {
      where: `3-primary Redis Cluster`,
      store: { kind: 'redis', cluster: { nodes: cluster.startupNodes.map((n) => `${n.host}:${n.port}`) } },
      redisPids: primaries.map((n) => n.process.pid),
    };
    rows.push(await fleetScenario(env, { count: 1, key: 'cluster-1', ...onCluster }));
    rows.push(await fleetScenario(env, { count: 2, key: 'cluster-2', ...onCluster }));
  } finally {
    await issuer?.close();
    await redis?.stop();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true }); // holds the bench keys' config files
  }
  const text = [
    `jit-broker bench, replicas — ${startedAt.toISOString()} — node ${process.version}, ${cpus().length} cores, ${CONNECTIONS} keep-alive connections, ${DURATION_S} s after ${WARMUP_S} s warm-up, one run`,
    '',
    '| what | throughput | p50 | p99 | failures | CPU per request |',
    '|---|---|---|---|---|---|',
    ...rows.map((m) => `| ${summarize([m]).join(' | ')} |`),
    '',
  ].join('\n');
  console.log(text);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(join('bench/results', `replicas-${startedAt.toISOString().replace(/[:.]/g, '-')}.md`), text);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
