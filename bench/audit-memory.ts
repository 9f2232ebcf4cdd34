/**
 * Redis memory of denied requests (issue 11, item 4): INFO `used_memory` of a fresh
 * redis-server before and after N denied task starts through the broker's service function
 * (`broker.startTask`, with the caller's address as the HTTP adapter would pass it), read on a
 * connection of the bench's own. Each request asks for 64 actions of 121 characters no rule
 * allows: the largest denial a request can cause.
 *
 *   npx tsx bench/audit-memory.ts            # 100,000 from 1 source, then 100,000 from 1,000
 *   AUDIT_BENCH_REQUESTS=20000 npx tsx bench/audit-memory.ts
 *
 * Shapes: one source (one address, one workload named by a rule), and 1,000 sources (1,000
 * addresses, each its own workload that no rule names: the shared partitions). Requests run 32
 * at a time, well within one summary window (1 min); a longer run adds one summary event per
 * stream and minute.
 */
import { Redis } from 'ioredis';
import { parseConfig } from '../src/config/load.js';
import { BENCH_KEY_PUBLICATION_SECRET } from './scenarios.js';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { AccessDenied } from '../src/errors.js';
import { silentLogger } from '../src/log.js';
import { startBroker } from '../src/server.js';
import { startRedisServer } from '../test/helpers/redis.js';

const REQUESTS = Number(process.env.AUDIT_BENCH_REQUESTS ?? 100_000);
const AUDIENCE = 'jit-broker';
const ACTIONS = Array.from({ length: 64 }, (_, i) => `${'a'.repeat(120)}${i}`);

async function usedMemory(client: Redis): Promise<number> {
  const m = /^used_memory:(\d+)/m.exec(await client.info('memory'));
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

interface Shape {
  name: string;
  sources: number;
  /** The namespace of the workloads: `payments` is named by the rule, `strangers` by none. */
  namespace: string;
}

async function measure(issuer: OidcIssuer, shape: Shape) {
  const redis = await startRedisServer();
  const probe = new Redis(redis.url);
  const config = parseConfig({
    issuer: 'https://broker.bench',
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'redis', url: redis.url, key_prefix: 'jit:' },
    tokens: { key_publication_secret: BENCH_KEY_PUBLICATION_SECRET },
    attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
    limits: { failed_attestations: { burst: 1_000_000 } },
    policies: [{ name: 'payments', workloads: ['k8s://bench/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] }],
  });
  const runtime = await startBroker(config, { log: silentLogger });
  try {
    const tokens = await Promise.all(
      Array.from({ length: shape.sources }, (_, i) =>
        issuer.mintServiceAccountToken({ cluster: 'bench', namespace: shape.namespace, serviceAccount: `sa${i}`, audience: AUDIENCE, ttlSeconds: 3600 }),
      ),
    );
    const before = await usedMemory(probe);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let i = next++; i < REQUESTS; i = next++) {
          const s = i % shape.sources;
          const body = { attestation: { kind: 'oidc', token: tokens[s] }, intent: { audience: 'db.payments', actions: ACTIONS, resources: ['db://payments/x'], purpose: 'bench' } };
          const ctx = { clientAddress: `10.${(s >> 16) & 255}.${(s >> 8) & 255}.${s & 255}` };
          await runtime.broker.startTask(body, ctx).then(
            () => {
              throw new Error('a bench request was allowed');
            },
            (e: unknown) => {
              if (!(e instanceof AccessDenied)) throw e;
            },
          );
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    const bytes = (await usedMemory(probe)) - before;
    const entries = (await Promise.all((await probe.keys('jit:*')).map(async (k) => ((await probe.type(k)) === 'stream' ? probe.xlen(k) : 0)))).reduce((a, b) => a + b, 0);
    return { ...shape, requests: REQUESTS, bytes, perRequest: bytes / REQUESTS, perRecorded: entries ? bytes / entries : 0, entries, seconds };
  } finally {
    await runtime.close();
    probe.disconnect();
    await redis.stop();
  }
}

const issuer = await startOidcIssuer({ alg: 'ES256' });
try {
  const rows = [];
  for (const shape of [
    { name: 'one source', sources: 1, namespace: 'payments' },
    { name: '1,000 sources', sources: 1000, namespace: 'strangers' },
  ]) {
    const r = await measure(issuer, shape);
    rows.push(r);
    console.error(`${r.name}: ${r.requests} denied requests, ${r.entries} audit entries, +${r.bytes} B of Redis (${(r.bytes / 2 ** 20).toFixed(2)} MiB), ${r.perRequest.toFixed(1)} B per request, ${r.perRecorded.toFixed(0)} B per recorded entry, ${r.seconds.toFixed(1)} s`);
  }
  console.log('| shape | denied requests | audit entries | Redis bytes added | per request | per recorded entry |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.name} | ${r.requests} | ${r.entries} | ${r.bytes} | ${r.perRequest.toFixed(1)} | ${r.perRecorded.toFixed(0)} |`);
} finally {
  await issuer.close();
}
