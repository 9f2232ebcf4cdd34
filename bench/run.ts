/**
 * npm run bench: throughput of the broker's endpoints on loopback, next to the in-process cost
 * of one ES256 sign and of X.509-SVID validation. Each broker runs as its own process (the real
 * CLI, `serve --config`), backed by a private redis-server; autocannon loads it from this process
 * with 64 keep-alive connections. The whole set of loads runs BENCH_RUNS times (3 by default),
 * each time with a fresh Redis and fresh brokers; the table gives the median and the min–max.
 *
 * Scenarios: issuance with a platform token over plain HTTP (the original figure, unchanged), the
 * same over HTTPS without a client certificate (what TLS alone costs), and mTLS with an
 * X.509-SVID in the handshake and no attestation in the body; then, on the plain-HTTP broker,
 * renewal (each connection renewing its own grant), RFC 7662 introspection of a live token by a
 * resource server, and the JWKS.
 */
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
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
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const WARMUP_S = 2;

const intent = { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' };

const policies = [
  { name: 'bench', workloads: ['k8s://bench/ns/bench/sa/*'], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'] },
  // The mTLS workload: its tokens carry cnf.x5t#S256, and the rule insists on it.
  { name: 'bench-svid', workloads: [`spiffe://${TRUST_DOMAIN}/ns/bench/sa/*`], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'], require_binding: true },
];

/** The resource server that introspects; the broker's config holds only the credential's hash. */
const RS_CREDENTIAL = randomBytes(32).toString('base64url');
const resourceServers = [{ name: 'bench-rs', audiences: ['db.bench'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }];

/** The bench measures cost, not limits: per-workload issuance/renewal (100/s by default) and failures lifted. */
const limits = { issuance: { rate: 1_000_000, burst: 1_000_000 }, failed_attestations: { burst: 1_000_000 } };

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
    limits,
    log: { level: 'info' },
    ...(tls ? { tls } : {}),
    attestation: { oidc: { issuers: [{ issuer: env.issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
    resource_servers: resourceServers,
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

/** What every connection of one run sends, and what a right answer looks like. */
interface Traffic {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** A response whose body fails this counts as a wrong answer (autocannon's mismatches), whatever its status. */
  verifyBody: (body: string) => boolean;
  /** Per-connection state: autocannon calls this once for each connection, before its first request. */
  setupClient?: (client: autocannon.Client) => void;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

interface Load {
  label: string;
  broker: BrokerProcess;
  redisPid: number;
  /** Called before each run (the warm-up too), outside the CPU count: no state carries over between runs. */
  traffic: () => Promise<Traffic>;
  /** For HTTPS: what the load generator trusts and presents. */
  tls?: ClientTls;
}

/** Traffic without state, the same for every run. */
const fixed = (t: Traffic) => () => Promise.resolve(t);

/** One measured load: throughput and latency of the 2xx responses, what went wrong, CPU µs per 2xx. */
interface Measured {
  label: string;
  perSecond: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  wrongBodies: number;
  handshakes?: { verified: number; wrongName: number };
  cpuUs: { broker: number; redis: number };
}

/** One autocannon run of `duration` seconds, with its own handshake count. */
async function cannon(l: Load, t: Traffic, duration: number) {
  const counted = l.tls ? countingTls(l.tls) : undefined;
  const result = await autocannon({
    url: `${l.broker.url}${t.path}`,
    method: t.method,
    headers: t.headers,
    body: t.body,
    verifyBody: (b) => t.verifyBody(String(b)), // always a string at run time; typed more widely
    setupClient: t.setupClient,
    connections: CONNECTIONS,
    duration,
    ...(counted ? { tlsOptions: counted.tlsOptions } : {}),
  });
  return { result, handshakes: counted?.handshakes };
}

/** Warm-up, then the measured run; every response counts (non-2xx, wrong bodies and connection errors are reported). */
async function load(l: Load): Promise<Measured> {
  await cannon(l, await l.traffic(), WARMUP_S);
  const traffic = await l.traffic();
  const cpuBefore = { broker: cpuSeconds(l.broker.pid), redis: cpuSeconds(l.redisPid) };
  const { result, handshakes } = await cannon(l, traffic, DURATION_S);
  const cpu = { broker: cpuSeconds(l.broker.pid) - cpuBefore.broker, redis: cpuSeconds(l.redisPid) - cpuBefore.redis };
  const ok = result['2xx'];
  const perRequest = (s: number) => (ok ? (s / ok) * 1e6 : NaN);
  const m: Measured = {
    label: l.label,
    perSecond: ok / DURATION_S,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    wrongBodies: result.mismatches,
    ...(handshakes ? { handshakes } : {}),
    cpuUs: { broker: perRequest(cpu.broker), redis: perRequest(cpu.redis) },
  };
  console.error(`${m.label}: ${Math.round(m.perSecond)}/s, p99 ${m.p99} ms, ${m.non2xx} non-2xx, ${m.errors} errors, ${m.wrongBodies} wrong bodies`);
  return m;
}

/** A platform token of a service account in the bench namespace, valid for an hour. */
function platformToken(issuer: OidcIssuer, serviceAccount: string): Promise<string> {
  return issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount, audience: 'jit-broker', ttlSeconds: 3600 });
}

const oidc = (token: string) => ({ kind: 'oidc', token });

/** Issuance: the same platform token reused for every request, as Kubernetes workloads do. */
async function issueTraffic(issuer: OidcIssuer): Promise<Traffic> {
  const token = await platformToken(issuer, 'loader');
  return issueTrafficWith(JSON.stringify({ attestation: oidc(token), intent }));
}

function issueTrafficWith(body: string): Traffic {
  return { method: 'POST', path: '/v1/tasks', headers: JSON_HEADERS, body, verifyBody: (b) => b.includes('"access_token"') };
}

/** A started task: its grant, and the latest token for it. */
interface Held {
  grant: string;
  token: string;
}

function expect(what: string, res: { status: number; json: Record<string, unknown> }, ok: boolean): void {
  if (!ok) throw new Error(`${what} failed: ${res.status} ${JSON.stringify(res.json)}`);
}

async function startTask(url: string, body: string): Promise<Held> {
  const res = await requestJson(`${url}/v1/tasks`, { method: 'POST', body });
  expect('task start', res, res.status === 201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}

/**
 * Renewal: each connection renews a grant of its own, always with the token its previous renewal
 * returned (presenting a superseded token is a replay, which revokes the grant). The state lives
 * in a closure per connection, not in autocannon's `context`: that is reset each time a
 * connection's request list wraps around, i.e. after every request here.
 */
async function renewTraffic(broker: BrokerProcess, issuer: OidcIssuer): Promise<Traffic> {
  const token = await platformToken(issuer, 'renewer');
  const startBody = JSON.stringify({ attestation: oidc(token), intent });
  const held = await Promise.all(Array.from({ length: CONNECTIONS }, () => startTask(broker.url, startBody)));
  return {
    method: 'POST',
    path: '/v1/tasks', // each connection's renewal sets its own
    headers: JSON_HEADERS,
    body: JSON.stringify({ attestation: oidc(token) }),
    verifyBody: (b) => b.includes('"generation"'),
    setupClient: (client) => {
      const mine = held.pop();
      if (!mine) throw new Error('more connections than grants');
      client.setRequests([renewal(mine)]);
    },
  };
}

/** Renews `held` with its latest token, and keeps the token each 200 returns for the next renewal. */
function renewal(held: Held): autocannon.Request {
  return {
    setupRequest: (req) => ({ ...req, path: `/v1/tasks/${held.grant}/renew`, headers: { ...req.headers, authorization: `Bearer ${held.token}` } }),
    onResponse: (status, body) => {
      if (status === 200) held.token = (JSON.parse(body) as { access_token: string }).access_token;
    },
  };
}

/**
 * Introspection: the bench resource server asks about one live token over and over (introspection
 * changes nothing). Checked in full once; under load, each body must begin `{"active":true,`.
 */
async function introspectTraffic(broker: BrokerProcess, issuer: OidcIssuer): Promise<Traffic> {
  const token = await platformToken(issuer, 'introspected');
  const held = await startTask(broker.url, JSON.stringify({ attestation: oidc(token), intent }));
  const headers = { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` };
  const body = new URLSearchParams({ token: held.token }).toString();
  const res = await requestJson(`${broker.url}/oauth2/introspect`, { method: 'POST', headers, body });
  expect('introspection', res, res.status === 200 && res.json.active === true && res.json.grant === held.grant);
  return { method: 'POST', path: '/oauth2/introspect', headers, body, verifyBody: (b) => b.startsWith('{"active":true,') };
}

const jwksTraffic: Traffic = { method: 'GET', path: '/.well-known/jwks.json', verifyBody: (b) => b.startsWith('{"keys":[{') };

/** The plain-HTTP broker: issuance (the original figure), then renewal, introspection and the JWKS. */
async function httpScenarios(env: Env): Promise<Measured[]> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const issue = await issueTraffic(env.issuer);
  return withBroker({ name: 'http', dir: env.dir, url, config: brokerConfig(env, port, 'bench:') }, async (broker) => {
    const common = { broker, redisPid: env.redis.pid };
    return [
      await load({ ...common, label: 'POST /v1/tasks (platform token, reused)', traffic: fixed(issue) }),
      await load({ ...common, label: 'POST /v1/tasks/{grant}/renew (platform token, reused; a grant per connection)', traffic: () => renewTraffic(broker, env.issuer) }),
      await load({ ...common, label: 'POST /oauth2/introspect (bearer credential, a live token)', traffic: () => introspectTraffic(broker, env.issuer) }),
      await load({ ...common, label: 'GET /.well-known/jwks.json', traffic: fixed(jwksTraffic) }),
    ];
  });
}

/** One HTTPS broker with client CA bundles: platform token without a client certificate, then mTLS. */
async function httpsScenarios(env: Env, pki: BenchPki, files: BrokerTlsFiles): Promise<Measured[]> {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const tlsConfig = { cert: files.cert, key: files.key, client_ca_bundles: { [TRUST_DOMAIN]: files.bundle } };
  const svid = clientTls(pki);
  const serverOnly = { ca: svid.ca };
  const config = brokerConfig(env, port, 'bench-tls:', tlsConfig);
  const platform = await issueTraffic(env.issuer);
  const mtlsBody = JSON.stringify({ intent });
  return withBroker({ name: 'https', dir: env.dir, url, config, tls: serverOnly }, async (broker) => {
    await checkMtlsIssuance(url, mtlsBody, svid);
    const redisPid = env.redis.pid;
    return [
      await load({ label: 'POST /v1/tasks over HTTPS (platform token, no client cert)', broker, redisPid, traffic: fixed(platform), tls: serverOnly }),
      await load({ label: 'POST /v1/tasks over mTLS (X.509-SVID in the handshake)', broker, redisPid, traffic: fixed(issueTrafficWith(mtlsBody)), tls: svid }),
    ];
  });
}

/** One request with full verification first: the server certificate is trusted and the SVID attests. */
async function checkMtlsIssuance(url: string, body: string, tls: ClientTls): Promise<void> {
  const res = await requestJson(`${url}/v1/tasks`, { method: 'POST', body, tls });
  expect('mTLS issuance check', res, res.status === 201 && res.json.workload === SVID_ID);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** "median (min–max)", or the one value when there was one run. */
function spread(xs: number[], unit: string): string {
  const r = (x: number) => (Number.isFinite(x) ? Math.round(x) : '–');
  if (xs.length === 1) return `${r(xs[0]!)}${unit}`;
  return `${r(median(xs))}${unit} (${r(Math.min(...xs))}–${r(Math.max(...xs))})`;
}

/** One table row from the runs of one scenario: medians with min–max; failures summed over the runs. */
function summarize(runs: Measured[]): Row {
  const of = (f: (m: Measured) => number) => runs.map(f);
  const sum = (f: (m: Measured) => number) => of(f).reduce((a, b) => a + b, 0);
  const failures = [`${sum((m) => m.non2xx)} non-2xx`, `${sum((m) => m.errors)} errors`, `${sum((m) => m.wrongBodies)} wrong bodies`];
  if (runs[0]!.handshakes) {
    const wrongName = sum((m) => m.handshakes!.wrongName);
    failures.push(`${of((m) => m.handshakes!.verified).join('/')} TLS handshakes${wrongName ? `, ${wrongName} with a wrong server name` : ''}`);
  }
  return [
    runs[0]!.label,
    spread(of((m) => m.perSecond), '/s'),
    spread(of((m) => m.p50), ' ms'),
    spread(of((m) => m.p99), ' ms'),
    failures.join(', '),
    `${spread(of((m) => m.cpuUs.broker), ' µs')} broker + ${spread(of((m) => m.cpuUs.redis), ' µs')} redis`,
  ];
}

function table(rows: Row[]): string {
  const runs = RUNS > 1 ? `, median of ${RUNS} runs (min–max), failures summed over the runs` : '';
  return [
    `jit-broker bench — ${new Date().toISOString()} — node ${process.version}, ${CONNECTIONS} keep-alive connections, ${DURATION_S} s after ${WARMUP_S} s warm-up${runs}`,
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

/** One run of the load scenarios, one broker process at a time, sharing a fresh Redis and one OIDC issuer. */
async function measureLoads(dir: string, pki: BenchPki, tlsFiles: BrokerTlsFiles): Promise<Measured[]> {
  const redis = await startRedisServer();
  let issuer: OidcIssuer | undefined;
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env: Env = { dir, redis, issuer };
    return [...(await httpScenarios(env)), ...(await httpsScenarios(env, pki, tlsFiles))];
  } finally {
    await issuer?.close();
    await redis.stop();
  }
}

/** RUNS runs of the loads, one row per scenario. */
async function loadRows(dir: string, pki: BenchPki, tlsFiles: BrokerTlsFiles): Promise<Row[]> {
  const byLabel = new Map<string, Measured[]>();
  for (let run = 1; run <= RUNS; run++) {
    console.error(`run ${run} of ${RUNS}`);
    for (const m of await measureLoads(dir, pki, tlsFiles)) byLabel.set(m.label, [...(byLabel.get(m.label) ?? []), m]);
  }
  return [...byLabel.values()].map(summarize);
}

async function main() {
  const pki = await createBenchPki();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
  try {
    const tlsFiles = writeBrokerTlsFiles(dir, pki);
    const ops = await measureOps(pki, loadTlsMaterial({ bundles: { [TRUST_DOMAIN]: tlsFiles.bundle } }));
    const text = table([...(await loadRows(dir, pki, tlsFiles)), ...ops]);
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
