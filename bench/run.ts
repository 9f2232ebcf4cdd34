/**
 * npm run bench: the broker's throughput on loopback next to what bounds it and what it competes
 * with, all in one invocation so the figures can be compared. Each server under load runs as its
 * own process (the broker through the real CLI, `serve --config`) so its CPU can be read from
 * /proc; autocannon loads it from this process with 64 keep-alive connections.
 *
 * - Loads, BENCH_RUNS times (3 by default), each run on a fresh Redis with fresh processes:
 *   the broker's scenarios (bench/scenarios.ts: issuance over HTTP, HTTPS and mTLS, renewal,
 *   introspection, JWKS, and issuance on two broker processes at once), the HTTP floor
 *   (bench/floor.ts), the peer oidc-provider (bench/peer.ts) and the grant-write ceiling
 *   (bench/grants.ts).
 * - Growth (bench/growth.ts): issuance and a listing page with no other grants and with
 *   BENCH_GROWTH_GRANTS (1M) live grants in Redis, side by side in each run; the fill is once.
 * - Memory per grant (bench/memory.ts), once, on fresh redis-servers.
 * - In-process costs (sign, verify, X.509, the SDK's task.token()), measured first while nothing else runs.
 *
 * The report (bench/report.ts) goes to stdout and to bench/results/<ISO time>.md.
 * At the defaults it takes about 10 minutes; BENCH_DURATION, BENCH_RUNS, BENCH_CONNECTIONS and
 * BENCH_GROWTH_GRANTS shorten it.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { loadTlsMaterial, type TlsMaterial } from '../src/tls/material.js';
import { startRedisServer } from '../test/helpers/redis.js';
import { RUNS } from './config.js';
import { floorScenario } from './floor.js';
import { measureGrantWrites } from './grants.js';
import { measureGrowth } from './growth.js';
import type { Measured } from './load.js';
import { measureMemory } from './memory.js';
import { peerScenario } from './peer.js';
import { TRUST_DOMAIN, createBenchPki, writeBrokerTlsFiles, type BenchPki, type BrokerTlsFiles } from './pki.js';
import { report, type Results } from './report.js';
import { httpScenarios, httpsScenarios, twoBrokerScenario } from './scenarios.js';
import { measureClientToken } from './sdk.js';
import { measureJoseSign, measureSign, measureVerify } from './sign.js';
import { measureResourceVerify } from './verify.js';
import { measureCachedAttest, measureChainValidation } from './x509.js';

/** In-process costs, measured before the servers and Redis compete for the CPU. */
async function measureOps(pki: BenchPki, material: TlsMaterial): Promise<Results['ops']> {
  const rs = await measureResourceVerify();
  return [
    { key: 'sign', label: 'ES256 task-token sign (node:crypto, in-process, one at a time)', cost: await measureSign() },
    { key: 'jose-sign', label: 'ES256 sign via jose/WebCrypto (for comparison; what oidc-provider uses)', cost: await measureJoseSign() },
    { key: 'verify', label: 'ES256 inbound token verify (jose jwtVerify)', cost: await measureVerify() },
    { key: 'rs-jose', label: 'resource server: jose.jwtVerify on a task token (local JWKS; alg, typ, iss, aud, exp)', cost: rs.jose },
    { key: 'rs-verify', label: 'resource server: jit-broker/verify verify() on the same token (JWKS cached)', cost: rs.verify },
    { key: 'rs-verify-intent', label: 'resource server: verify() with the action and resource checks', cost: rs.verifyIntent },
    { key: 'x509-chain', label: 'X.509-SVID chain validation, uncached (parse leaf + intermediate, validate to the root)', cost: await measureChainValidation(pki, material) },
    { key: 'x509-cached', label: 'X.509-SVID attest, cached (the per-request cost on a known certificate)', cost: await measureCachedAttest(pki, material) },
    { key: 'sdk-token', label: 'SDK task.token() on a live task (jit-broker/sdk, in-process, token cached)', cost: await measureClientToken() },
  ];
}

/** One run of the loads, one server at a time (two for the fleet), sharing a fresh Redis and one OIDC issuer. */
async function measureRun(dir: string, pki: BenchPki, tlsFiles: BrokerTlsFiles): Promise<Measured[]> {
  const redis = await startRedisServer();
  let issuer: OidcIssuer | undefined;
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env = { dir, redis, issuer };
    const writes = await measureGrantWrites(redis);
    const http = await httpScenarios(env);
    const fleet = await twoBrokerScenario(env);
    const https = await httpsScenarios(env, pki, tlsFiles);
    const floor = await floorScenario(dir, http.issuance);
    const peer = await peerScenario();
    return [...writes, ...http.measured, fleet, ...https, floor, ...peer];
  } finally {
    await issuer?.close();
    await redis.stop();
  }
}

async function main() {
  const startedAt = new Date();
  const pki = await createBenchPki();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
  try {
    const tlsFiles = writeBrokerTlsFiles(dir, pki);
    const ops = await measureOps(pki, loadTlsMaterial({ bundles: { [TRUST_DOMAIN]: tlsFiles.bundle } }));
    const byKey = new Map<string, Measured[]>();
    const keep = (ms: Measured[]) => ms.forEach((m) => byKey.set(m.key, [...(byKey.get(m.key) ?? []), m]));
    for (let run = 1; run <= RUNS; run++) {
      console.error(`run ${run} of ${RUNS}`);
      keep(await measureRun(dir, pki, tlsFiles));
    }
    const growth = await measureGrowth(dir);
    growth.byRun.forEach(keep);
    const memory = await measureMemory();
    const text = report({ byKey, ops, fill: growth.fill, memory }, startedAt);
    console.log(text);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(join('bench/results', `${startedAt.toISOString().replace(/[:.]/g, '-')}.md`), text);
  } finally {
    rmSync(dir, { recursive: true, force: true }); // holds the bench keys
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
