/**
 * The broker's own loads, each against broker processes started from the real CLI on the run's
 * Redis: issuance with a platform token over plain HTTP (the headline figure), renewal,
 * introspection and the JWKS on that broker; the same issuance on two broker processes at once;
 * and issuance over HTTPS and mTLS on a TLS broker.
 */
import { createHash, randomBytes } from 'node:crypto';
import type autocannon from 'autocannon';
import type { OidcIssuer } from '../src/dev/oidc-issuer.js';
import { freePort } from '../src/util/net.js';
import { requestJson, withBroker, type BrokerProcess, type ClientTls } from './broker.js';
import type { Reply } from './child.js';
import { CONNECTIONS, CONNECTION_LEVELS, atLevel } from './config.js';
import { JSON_HEADERS, connectionShares, fixed, load, type CpuPart, type Measured, type Traffic } from './load.js';
import { SVID_ID, TRUST_DOMAIN, clientTls, type BenchPki, type BrokerTlsFiles } from './pki.js';

const intent = { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' };

const policies = [
  { name: 'bench', workloads: ['k8s://bench/ns/bench/sa/*'], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'] },
  // The mTLS workload: its tokens carry cnf.x5t#S256, and the rule insists on it.
  { name: 'bench-svid', workloads: [`spiffe://${TRUST_DOMAIN}/ns/bench/sa/*`], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'], require_binding: true },
];

/** The resource server that introspects; the broker's config holds only the credential's hash. */
const RS_CREDENTIAL = randomBytes(32).toString('base64url');
const resourceServers = [{ name: 'bench-rs', audiences: ['db.bench'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }];

/** The bench operator (admin): queries and the kill switch in bench/growth.ts. */
export const OPERATOR_CREDENTIAL = randomBytes(32).toString('base64url');
const operators = [{ name: 'bench-operator', role: 'admin', credential_sha256: createHash('sha256').update(OPERATOR_CREDENTIAL).digest('hex') }];

/** The bench measures cost, not limits: per-workload issuance/renewal (100/s by default) and failures lifted. */
const limits = { issuance: { rate: 1_000_000, burst: 1_000_000 }, failed_attestations: { burst: 1_000_000 } };

/**
 * The key publication secret every bench broker of this run shares (made per run: the config
 * files are written by this process, so the brokers of one fleet get the same one).
 */
export const BENCH_KEY_PUBLICATION_SECRET = randomBytes(32).toString('hex');

/** The key prefix of the plain-HTTP brokers (and of the growth fill, which shares their keyspace). */
export const BROKER_PREFIX = 'bench:';

/** What one run's brokers share: a fresh Redis and a local OIDC issuer. */
export interface Env {
  dir: string;
  redis: { url: string; pid: number };
  issuer: OidcIssuer;
}

/** The bench broker's config; `issuer` defaults to its own URL (two processes of one fleet share one). */
export function brokerConfig(
  env: Env,
  port: number,
  prefix: string,
  o: { tls?: Record<string, unknown>; issuer?: string; globalIndex?: boolean; store?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return {
    issuer: o.issuer ?? `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    store: { ...(o.store ?? { kind: 'redis', url: env.redis.url }), key_prefix: prefix, ...(o.globalIndex === false ? { global_index: false } : {}) },
    operators,
    grants: { max_active_per_workload: 100_000 },
    tokens: { key_publication_secret: BENCH_KEY_PUBLICATION_SECRET },
    limits,
    log: { level: 'info' },
    ...(o.tls ? { tls: o.tls } : {}),
    attestation: { oidc: { issuers: [{ issuer: env.issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
    resource_servers: resourceServers,
    policies,
  };
}

/** CPU counted for a broker load: the broker process(es), then Redis. */
export const brokerCpu = (brokers: BrokerProcess[], redisPids: number | number[]): CpuPart[] => [
  { who: brokers.length > 1 ? 'brokers' : 'broker', pids: brokers.map((b) => b.pid) },
  { who: 'redis', pids: typeof redisPids === 'number' ? [redisPids] : redisPids },
];

/** A platform token of a service account in the bench namespace, valid for an hour. */
function platformToken(issuer: OidcIssuer, serviceAccount: string): Promise<string> {
  return issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount, audience: 'jit-broker', ttlSeconds: 3600 });
}

const oidc = (token: string) => ({ kind: 'oidc', token });

/** Issuance: the same platform token reused for every request, as Kubernetes workloads do. */
export async function issueTraffic(issuer: OidcIssuer, serviceAccount = 'loader'): Promise<Traffic> {
  const token = await platformToken(issuer, serviceAccount);
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

async function startTask(url: string, body: string): Promise<Held & { reply: Reply }> {
  const reply = await requestJson(`${url}/v1/tasks`, { method: 'POST', body });
  expect('task start', reply, reply.status === 201);
  return { grant: reply.json.grant as string, token: reply.json.access_token as string, reply };
}

/**
 * Renewal: each connection renews a grant of its own, always with the token its previous renewal
 * returned (presenting a superseded token is a replay, which revokes the grant). The state lives
 * in a closure per connection, not in autocannon's `context`: that is reset each time a
 * connection's request list wraps around, i.e. after every request here.
 */
export async function renewTraffic(broker: BrokerProcess, issuer: OidcIssuer, connections = CONNECTIONS): Promise<Traffic> {
  const token = await platformToken(issuer, 'renewer');
  const startBody = JSON.stringify({ attestation: oidc(token), intent });
  const held = await Promise.all(Array.from({ length: connections }, () => startTask(broker.url, startBody)));
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

/** Task start and renewal on `broker`, at each of CONNECTION_LEVELS in turn (keys "issue@1", ..., "issue"). */
export async function startAndRenewLevels(broker: BrokerProcess, env: Env, issue: Traffic, redisPid: number): Promise<Measured[]> {
  const common = { servers: [broker], cpu: brokerCpu([broker], redisPid) };
  const measured: Measured[] = [];
  for (const c of CONNECTION_LEVELS) {
    measured.push(await load({ ...common, connections: c, key: atLevel('issue', c), label: 'POST /v1/tasks (platform token, reused)', traffic: fixed(issue) }));
  }
  for (const c of CONNECTION_LEVELS) {
    const label = 'POST /v1/tasks/{grant}/renew (platform token, reused; a grant per connection)';
    measured.push(await load({ ...common, connections: c, key: atLevel('renew', c), label, traffic: () => renewTraffic(broker, env.issuer, c) }));
  }
  return measured;
}

/**
 * The plain-HTTP broker: issuance (the original figure) and renewal at each concurrency, then
 * introspection and the JWKS. Also returns one real issuance response, which the HTTP floor answers with.
 */
export async function httpScenarios(env: Env): Promise<{ measured: Measured[]; issuance: { request: string; response: string } }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const issue = await issueTraffic(env.issuer);
  return withBroker({ name: 'http', dir: env.dir, url, config: brokerConfig(env, port, BROKER_PREFIX) }, async (broker) => {
    const { reply } = await startTask(url, issue.body!);
    const common = { servers: [broker], cpu: brokerCpu([broker], env.redis.pid) };
    const measured = [
      ...(await startAndRenewLevels(broker, env, issue, env.redis.pid)),
      await load({ ...common, key: 'introspect', label: 'POST /oauth2/introspect (bearer credential, a live token)', traffic: () => introspectTraffic(broker, env.issuer) }),
      await load({ ...common, key: 'jwks', label: 'GET /.well-known/jwks.json', traffic: fixed(jwksTraffic) }),
    ];
    return { measured, issuance: { request: issue.body!, response: reply.text } };
  });
}

/**
 * Broker processes of one fleet (same issuer, store and key prefix; only the port differs), loaded
 * at the same time with the connections split between them, by one workload (a service account
 * named after the key, so fleets of one run do not share a per-workload grant cap): the figure
 * that says whether issuance scales out or the store (or the machine) is the limit. `store`
 * replaces the run's standalone Redis (a Cluster), whose processes `redisPids` name for the CPU count.
 */
export async function fleetScenario(
  env: Env,
  o: { count: number; key: string; where: string; prefix?: string; store?: Record<string, unknown>; redisPids?: number[] },
): Promise<Measured> {
  const ports: number[] = [];
  while (ports.length < o.count) {
    const port = await freePort();
    if (!ports.includes(port)) ports.push(port);
  }
  const issuer = `http://127.0.0.1:${ports[0]}`;
  const issue = await issueTraffic(env.issuer, o.key);
  const processes = o.count === 1 ? 'one broker process' : `${o.count} broker processes`;
  const split = o.count === 1 ? `${CONNECTIONS} connections` : `${connectionShares(o.count).join(' + ')} connections, summed`;
  const label = `POST /v1/tasks on ${processes}, ${o.where} (${split})`;
  const brokers: BrokerProcess[] = [];
  const startFrom = (i: number): Promise<Measured> => {
    if (i === ports.length) return load({ key: o.key, label, servers: brokers, cpu: brokerCpu(brokers, o.redisPids ?? [env.redis.pid]), traffic: fixed(issue) });
    const config = brokerConfig(env, ports[i]!, o.prefix ?? BROKER_PREFIX, { issuer, ...(o.store ? { store: o.store } : {}) });
    return withBroker({ name: `${o.key}-${i + 1}`, dir: env.dir, url: `http://127.0.0.1:${ports[i]}`, config }, (b) => {
      brokers.push(b);
      return startFrom(i + 1);
    });
  };
  return startFrom(0);
}

/** Two broker processes on the run's Redis (the main run's fleet row). */
export const twoBrokerScenario = (env: Env): Promise<Measured> => fleetScenario(env, { count: 2, key: 'issue-2proc', where: 'one Redis' });

/** One HTTPS broker with client CA bundles: platform token without a client certificate, then mTLS. */
export async function httpsScenarios(env: Env, pki: BenchPki, files: BrokerTlsFiles): Promise<Measured[]> {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const tls = { cert: files.cert, key: files.key, client_ca_bundles: { [TRUST_DOMAIN]: files.bundle } };
  const svid = clientTls(pki);
  const serverOnly = { ca: svid.ca };
  const config = brokerConfig(env, port, 'bench-tls:', { tls });
  const platform = await issueTraffic(env.issuer);
  const mtlsBody = JSON.stringify({ intent });
  return withBroker({ name: 'https', dir: env.dir, url, config, tls: serverOnly }, async (broker) => {
    await checkMtlsIssuance(url, mtlsBody, svid);
    const common = { servers: [broker], cpu: brokerCpu([broker], env.redis.pid) };
    return [
      await load({ ...common, key: 'issue-https', label: 'POST /v1/tasks over HTTPS (platform token, no client cert)', traffic: fixed(platform), tls: serverOnly }),
      await load({ ...common, key: 'issue-mtls', label: 'POST /v1/tasks over mTLS (X.509-SVID in the handshake)', traffic: fixed(issueTrafficWith(mtlsBody)), tls: svid }),
    ];
  });
}

/** One request with full verification first: the server certificate is trusted and the SVID attests. */
async function checkMtlsIssuance(url: string, body: string, tls: ClientTls): Promise<void> {
  const res = await requestJson(`${url}/v1/tasks`, { method: 'POST', body, tls });
  expect('mTLS issuance check', res, res.status === 201 && res.json.workload === SVID_ID);
}
