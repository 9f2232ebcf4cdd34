/**
 * npm run bench: issuance throughput of POST /v1/tasks on loopback, next to the in-process cost
 * of one ES256 sign and of X.509-SVID validation. Each broker runs as its own process (the real
 * CLI, `serve --config`), backed by a private redis-server; autocannon loads it from this process
 * with 64 keep-alive connections.
 *
 * Scenarios: a platform token over plain HTTP (the original figure, unchanged), the same over
 * HTTPS without a client certificate (what TLS alone costs), and mTLS with an X.509-SVID in the
 * handshake and no attestation in the body.
 */
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { freePort } from '../src/util/net.js';
import { loadTlsMaterial, type TlsMaterial } from '../src/tls/material.js';
import { startRedisServer } from '../test/helpers/redis.js';
import { cpuSeconds, requestJson, withBroker, type BrokerProcess, type ClientTls } from './broker.js';
import { SVID_ID, TRUST_DOMAIN, clientTls, createBenchPki, writeBrokerTlsFiles, type BenchPki, type BrokerTlsFiles } from './pki.js';
import { measureJoseSign, measureSign, measureVerify, type OpCost } from './sign.js';
import { measureCachedAttest, measureChainValidation } from './x509.js';

const DURATION_S = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const WARMUP_S = 2;

const intent = { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' };

const policies = [
  { name: 'bench', workloads: ['k8s://bench/ns/bench/sa/*'], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'] },
  // The mTLS workload: its tokens carry cnf.x5t#S256, and the rule insists on it.
  { name: 'bench-svid', workloads: [`spiffe://${TRUST_DOMAIN}/ns/bench/sa/*`], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'], require_binding: true },
];

type Row = string[];
const op = (what: string, c: OpCost): Row => [what, `${c.opsPerSec}/s`, `${c.usPerOp} µs`, '', '', ''];

interface Env {
  dir: string;
  redis: { url: string; pid: number };
  issuer: OidcIssuer;
}

function brokerConfig(env: Env, port: number, prefix: string, tls?: Record<string, unknown>): Record<string, unknown> {
  return {
    issuer: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'redis', url: env.redis.url, key_prefix: prefix },
    grants: { max_active_per_workload: 100_000 },
    log: { level: 'info' },
    ...(tls ? { tls } : {}),
    attestation: { oidc: { issuers: [{ issuer: env.issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
    policies,
  };
}

/**
 * autocannon sets rejectUnauthorized: false on every connection, but Node still verifies the
 * chain against `ca` and calls checkServerIdentity only when it verified: counting those calls
 * counts trusted handshakes, which under keep-alive is one per connection.
 */
function countingTls(tls: ClientTls) {
  const handshakes = { verified: 0, wrongName: 0 };
  const check = (host: string, cert: PeerCertificate) => {
    const problem = checkServerIdentity(host, cert);
    handshakes[problem ? 'wrongName' : 'verified']++;
    return problem;
  };
  return { handshakes, tlsOptions: { ...tls, checkServerIdentity: check } };
}

interface Load {
  label: string;
  broker: BrokerProcess;
  redisPid: number;
  body: string;
  /** For HTTPS: what the load generator trusts and presents. */
  tls?: ClientTls;
}

/** One autocannon run of `duration` seconds, with its own handshake count. */
async function cannon(l: Load, duration: number) {
  const counted = l.tls ? countingTls(l.tls) : undefined;
  const result = await autocannon({
    url: `${l.broker.url}/v1/tasks`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: l.body,
    connections: CONNECTIONS,
    duration,
    ...(counted ? { tlsOptions: counted.tlsOptions } : {}),
  });
  return { result, handshakes: counted?.handshakes };
}

/** Warm-up, then the measured run; every response counts (non-2xx and connection errors are reported). */
async function load(l: Load): Promise<Row> {
  await cannon(l, WARMUP_S);
  const cpuBefore = { broker: cpuSeconds(l.broker.pid), redis: cpuSeconds(l.redisPid) };
  const { result, handshakes } = await cannon(l, DURATION_S);
  const cpu = { broker: cpuSeconds(l.broker.pid) - cpuBefore.broker, redis: cpuSeconds(l.redisPid) - cpuBefore.redis };
  const ok = result['2xx'];
  const failures = [`${result.non2xx} non-2xx`, `${result.errors} errors`];
  if (handshakes) failures.push(`${handshakes.verified} TLS handshakes${handshakes.wrongName ? `, ${handshakes.wrongName} with a wrong server name` : ''}`);
  const perRequest = (s: number) => (ok ? ((s / ok) * 1e6).toFixed(0) : '–');
  return [
    l.label,
    `${Math.round(ok / DURATION_S)}/s`,
    `${result.latency.p50} ms`,
    `${result.latency.p99} ms`,
    failures.join(', '),
    `${perRequest(cpu.broker)} µs broker + ${perRequest(cpu.redis)} µs redis`,
  ];
}

/** The same platform token reused for every request, as Kubernetes workloads do. */
async function platformTokenBody(issuer: OidcIssuer): Promise<string> {
  const token = await issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount: 'loader', audience: 'jit-broker', ttlSeconds: 3600 });
  return JSON.stringify({ attestation: { kind: 'oidc', token }, intent });
}

/** The original scenario: platform token over plain HTTP. */
async function httpScenario(env: Env): Promise<Row[]> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const body = await platformTokenBody(env.issuer);
  return withBroker({ name: 'http', dir: env.dir, url, config: brokerConfig(env, port, 'bench:') }, async (broker) => [
    await load({ label: 'POST /v1/tasks (platform token, reused)', broker, redisPid: env.redis.pid, body }),
  ]);
}

/** One HTTPS broker with client CA bundles: platform token without a client certificate, then mTLS. */
async function httpsScenarios(env: Env, pki: BenchPki, files: BrokerTlsFiles): Promise<Row[]> {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const tlsConfig = { cert: files.cert, key: files.key, client_ca_bundles: { [TRUST_DOMAIN]: files.bundle } };
  const svid = clientTls(pki);
  const serverOnly = { ca: svid.ca };
  const config = brokerConfig(env, port, 'bench-tls:', tlsConfig);
  const platformBody = await platformTokenBody(env.issuer);
  const mtlsBody = JSON.stringify({ intent });
  return withBroker({ name: 'https', dir: env.dir, url, config, tls: serverOnly }, async (broker) => {
    await checkMtlsIssuance(url, mtlsBody, svid);
    const redisPid = env.redis.pid;
    return [
      await load({ label: 'POST /v1/tasks over HTTPS (platform token, no client cert)', broker, redisPid, body: platformBody, tls: serverOnly }),
      await load({ label: 'POST /v1/tasks over mTLS (X.509-SVID in the handshake)', broker, redisPid, body: mtlsBody, tls: svid }),
    ];
  });
}

/** One request with full verification first: the server certificate is trusted and the SVID attests. */
async function checkMtlsIssuance(url: string, body: string, tls: ClientTls): Promise<void> {
  const res = await requestJson(`${url}/v1/tasks`, { method: 'POST', body, tls });
  if (res.status !== 201 || res.json.workload !== SVID_ID) {
    throw new Error(`mTLS issuance check failed: ${res.status} ${JSON.stringify(res.json)}`);
  }
}

function table(rows: Row[]): string {
  return [
    `jit-broker bench — ${new Date().toISOString()} — node ${process.version}, ${CONNECTIONS} keep-alive connections, ${DURATION_S} s after ${WARMUP_S} s warm-up`,
    '',
    '| what | throughput | p50 | p99 | failures | CPU per request |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  ].join('\n');
}

/** In-process costs, measured before the brokers and Redis compete for the CPU. */
async function measureOps(pki: BenchPki, material: TlsMaterial): Promise<Row[]> {
  return [
    op('ES256 task-token sign (node:crypto, in-process, one at a time)', await measureSign()),
    op('ES256 sign via jose/WebCrypto (for comparison)', await measureJoseSign()),
    op('ES256 inbound token verify (jose jwtVerify)', await measureVerify()),
    op('X.509-SVID chain validation, uncached (parse leaf + intermediate, validate to the root)', await measureChainValidation(pki, material)),
    op('X.509-SVID attest, cached (the per-request cost on a known certificate)', await measureCachedAttest(pki, material)),
  ];
}

/** The load scenarios, one broker process at a time, sharing one Redis and one OIDC issuer. */
async function measureLoads(dir: string, pki: BenchPki, tlsFiles: BrokerTlsFiles): Promise<Row[]> {
  const redis = await startRedisServer();
  let issuer: OidcIssuer | undefined;
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env: Env = { dir, redis, issuer };
    return [...(await httpScenario(env)), ...(await httpsScenarios(env, pki, tlsFiles))];
  } finally {
    await issuer?.close();
    await redis.stop();
  }
}

async function main() {
  const pki = await createBenchPki();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
  try {
    const tlsFiles = writeBrokerTlsFiles(dir, pki);
    const ops = await measureOps(pki, loadTlsMaterial({ bundles: { [TRUST_DOMAIN]: tlsFiles.bundle } }));
    const text = table([...(await measureLoads(dir, pki, tlsFiles)), ...ops]);
    console.log(text);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(join('bench/results', `${new Date().toISOString().replace(/[:.]/g, '-')}.md`), text);
  } finally {
    rmSync(dir, { recursive: true, force: true }); // holds the bench keys
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
