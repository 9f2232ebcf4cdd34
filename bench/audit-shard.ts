/**
 * What the global audit log's shard copy (grants/audit-log.ts) adds to a task start's store
 * write: createGrant through the real Redis store with the copy on and off, interleaved rounds
 * in the same run against one fresh redis-server on loopback.
 *
 *   npx tsx bench/audit-shard.ts [grants per round, default 2000] [rounds, default 6]
 *
 * Then whole task starts (POST /v1/tasks over loopback HTTP, in-process broker), the same A/B.
 *
 * Two figures per variant (medians over rounds): the latency of one createGrant awaited alone
 * (what a task start waits for; the copy is sent after the script's reply and never awaited),
 * and the throughput of 64 concurrent creates (Redis and client CPU: the copy is one more XADD).
 */
import { startRedisServer } from '../test/helpers/redis.js';
import { realisticGrant, workloadId } from './grants.js';
import { createRedisGrantStore } from '../src/grants/redis-store.js';
import { silentLogger } from '../src/log.js';
import { BENCH_KEY_PUBLICATION_SECRET, brokerConfig } from './scenarios.js';
import { startOidcIssuer } from '../src/dev/oidc-issuer.js';
import { parseConfig } from '../src/config/load.js';
import { startBroker } from '../src/server.js';

const N = Number(process.argv[2] ?? 2000);
const ROUNDS = Number(process.argv[3] ?? 6);
const RETENTION_MS = 7 * 86_400_000;

const redis = await startRedisServer();
const make = (on: boolean, prefix: string) =>
  createRedisGrantStore({ url: redis.url, keyPrefix: prefix, commandTimeoutMs: 60_000, keyPublicationSecrets: [BENCH_KEY_PUBLICATION_SECRET], log: silentLogger, globalAuditLog: on });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results: Record<'on' | 'off', { p50us: number[]; p99us: number[]; perSec: number[] }> = {
  on: { p50us: [], p99us: [], perSec: [] },
  off: { p50us: [], p99us: [], perSec: [] },
};

let seq = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of (round % 2 ? ['off', 'on'] : ['on', 'off']) as ('on' | 'off')[]) {
    const store = make(variant === 'on', `bench:${variant}:${round}:`);
    await store.ping();
    // Sequential: one task start's wait.
    const lat: number[] = [];
    for (let i = 0; i < N; i++) {
      const n = seq++;
      const now = Date.now();
      const t = process.hrtime.bigint();
      await store.createGrant(realisticGrant(workloadId(n % 1000), n, now), { now, maxActive: 1_000_000, retentionMs: RETENTION_MS });
      lat.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    lat.sort((a, b) => a - b);
    results[variant].p50us.push(lat[Math.floor(N / 2)]!);
    results[variant].p99us.push(lat[Math.floor(N * 0.99)]!);
    // Concurrent: 64 in flight.
    const start = process.hrtime.bigint();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < N) {
          next++;
          const n = seq++;
          const now = Date.now();
          await store.createGrant(realisticGrant(workloadId(n % 1000), n, now), { now, maxActive: 1_000_000, retentionMs: RETENTION_MS });
        }
      }),
    );
    results[variant].perSec.push(N / (Number(process.hrtime.bigint() - start) / 1e9));
    await store.close();
  }
}
// Whole task starts over HTTP (loopback, in-process broker, platform-token attestation), the
// same A/B: one POST /v1/tasks awaited at a time.
const issuer = await startOidcIssuer({ alg: 'ES256' });
const env = { dir: '', redis: { url: redis.url, pid: 0 }, issuer };
const token = await issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount: 'loader', audience: 'jit-broker', ttlSeconds: 3600 });
const http: Record<'on' | 'off', number[]> = { on: [], off: [] };
const TASKS = Math.max(200, Math.floor(N / 4));
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of (round % 2 ? ['off', 'on'] : ['on', 'off']) as ('on' | 'off')[]) {
    const prefix = `bench:http:${variant}:${round}:`;
    const store = make(variant === 'on', prefix);
    const broker = await startBroker(parseConfig(brokerConfig(env, 0, prefix)), { log: silentLogger, store });
    const url = broker.url;
    const body = JSON.stringify({ attestation: { kind: 'oidc', token }, intent: { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench' } });
    const lat: number[] = [];
    for (let i = 0; i < TASKS; i++) {
      const t = process.hrtime.bigint();
      const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      if (res.status !== 201) throw new Error(`task start: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
      if (i >= 20) lat.push(Number(process.hrtime.bigint() - t) / 1000); // after warm-up
    }
    http[variant].push(median(lat));
    await broker.close();
    await store.close();
  }
}
await issuer.close();
await redis.stop();
console.log(`POST /v1/tasks, ${TASKS} sequential task starts x ${ROUNDS} rounds per variant (median of per-round medians, µs)`);
console.log(`| shard copy off | ${median(http.off).toFixed(0)} |`);
console.log(`| shard copy on  | ${median(http.on).toFixed(0)} |`);
console.log(`per-round medians off: ${http.off.map((x) => x.toFixed(0)).join(' ')}; on: ${http.on.map((x) => x.toFixed(0)).join(' ')}`);
console.log(`createGrant, ${N} grants x ${ROUNDS} rounds per variant, 1000 workloads, loopback redis-server (medians over rounds)`);
console.log('| shard copy | sequential p50 (µs) | sequential p99 (µs) | 64 in flight (grants/s) |');
console.log('|---|---|---|---|');
for (const v of ['off', 'on'] as const) {
  const r = results[v];
  console.log(`| ${v} | ${median(r.p50us).toFixed(0)} | ${median(r.p99us).toFixed(0)} | ${median(r.perSec).toFixed(0)} |`);
}
