/**
 * GET /metrics after a scripted workload over the real HTTP API (real OIDC issuer, the harness's
 * Redis): each counter moves by exactly what the workload did, labels never hold a workload id
 * or grant id; and the request log: one line per request, X-Request-Id honoured or made.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grantKeys, workloadTag } from '../../src/grants/ids.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { DENIAL_REASONS } from '../../src/protocol/denials.js';
import type { BrokerRuntime } from '../../src/server.js';
import { LIVE_GRANTS_SAMPLE_MS } from '../../src/metrics.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl } from '../helpers/redis.js';

const RS_CREDENTIAL = 'rs-metrics-credential-0123456789';
const OPERATOR_CREDENTIAL = 'op-metrics-credential-0123456789';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'metrics test' };

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
const logLines: Record<string, unknown>[] = [];
const workloads = new Set<string>();
const grants = new Set<string>();

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  const destination = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const line of String(chunk).split('\n').filter(Boolean)) logLines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  broker = await startTestBroker(
    issuer,
    {
      resource_servers: [{ name: 'rs-payments', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL) }],
      operators: [{ name: 'root', role: 'admin', credential_sha256: sha256(OPERATOR_CREDENTIAL) }],
      log: { level: 'info' },
    },
    { destination },
  );
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const saToken = (namespace = 'payments') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

async function start(namespace = 'payments', over: Partial<typeof intent> & { task?: string } = {}) {
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken(namespace) }, intent: { ...intent, ...over } });
  if (res.status === 201) {
    workloads.add(res.json.workload as string);
    grants.add(res.json.grant as string);
  }
  return res;
}
const renew = async (grant: string, token: string) =>
  postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` });
const end = (grant: string, token: string) => postJson(`${broker.url}/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${token}` });
const form = async (path: string, token: string, bearer?: string) => {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: new URLSearchParams({ token }).toString(),
  });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
};

/** Every sample of the exposition: `name{labels}` → value. */
async function scrape(): Promise<{ text: string; samples: Map<string, number> }> {
  const res = await fetch(`${broker.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    samples.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return { text, samples };
}

describe('GET /metrics', () => {
  it('counts a scripted workload exactly: issuances, renewals, denials by reason and rule, replays, revocations by who, latency by route', async () => {
    const before = (await scrape()).samples;

    const a = await start(); // issuance 1
    expect(a.status).toBe(201);
    const renewed = await renew(a.json.grant as string, a.json.access_token as string); // renewal 1
    expect(renewed.status).toBe(200);
    expect((await end(a.json.grant as string, renewed.json.access_token as string)).status).toBe(200); // an end: no revocation

    const b = await start(); // issuance 2
    const introspected = await form('/oauth2/introspect', b.json.access_token as string, RS_CREDENTIAL);
    expect(introspected.json).toMatchObject({ active: true });
    expect((await form('/oauth2/revoke', b.json.access_token as string, RS_CREDENTIAL)).status).toBe(200); // revocation by a resource server

    const c = await start(); // issuance 3
    expect((await form('/oauth2/revoke', c.json.access_token as string)).status).toBe(200); // by its holder (the token is its credential)

    // A replay: renew twice, then present the first token (two behind: no retry).
    const d = await start(); // issuance 4
    const d1 = await renew(d.json.grant as string, d.json.access_token as string); // renewal 2
    const d2 = await renew(d.json.grant as string, d1.json.access_token as string); // renewal 3
    expect(d2.status).toBe(200);
    const replay = await renew(d.json.grant as string, d.json.access_token as string);
    expect(replay.json).toMatchObject({ error_reason: 'replay_detected' });

    expect((await start('payments', { audience: 'db.other' })).status).toBe(403); // policy_audience, rule payments
    expect((await start('payments', { actions: ['delete'] })).status).toBe(403); // policy_actions, rule payments
    expect((await start('elsewhere')).status).toBe(403); // policy_no_rule, rule none
    const badEvidence = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: 'not-a-token' }, intent });
    expect(badEvidence.status).toBe(401); // attestation

    const { text, samples: after } = await scrape();
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    expect(delta('jit_broker_issuances_total{rule="payments"}')).toBe(4);
    expect(delta('jit_broker_renewals_total')).toBe(3);
    expect(delta('jit_broker_replays_total{operation="renew"}')).toBe(1);
    expect(delta('jit_broker_revocations_total{by="resource_server"}')).toBe(1);
    expect(delta('jit_broker_revocations_total{by="holder"}')).toBe(1);
    expect(delta('jit_broker_revocations_total{by="operator"}')).toBe(0);
    expect(delta('jit_broker_denials_total{reason="policy_audience",rule="payments"}')).toBe(1);
    expect(delta('jit_broker_denials_total{reason="policy_actions",rule="payments"}')).toBe(1);
    expect(delta('jit_broker_denials_total{reason="policy_no_rule",rule="none"}')).toBe(1);
    expect(delta('jit_broker_denials_total{reason="attestation",rule="none"}')).toBe(1);
    const denials = [...after].filter(([k]) => k.startsWith('jit_broker_denials_total{'));
    expect(denials.reduce((n, [, v]) => n + v, 0)).toBe(4);
    for (const [k] of denials) expect(DENIAL_REASONS).toContain(/reason="([^"]+)"/.exec(k)?.[1]);

    // Latency by route pattern, never by path.
    const count = (route: string, status: number, method = 'POST') => delta(`jit_broker_http_request_duration_seconds_count{method="${method}",route="${route}",status="${status}"}`);
    expect(count('/v1/tasks', 201)).toBe(4);
    expect(count('/v1/tasks', 403)).toBe(3);
    expect(count('/v1/tasks', 401)).toBe(1);
    expect(count('/v1/tasks/:grant/renew', 200)).toBe(3);
    expect(count('/v1/tasks/:grant/renew', 400)).toBe(1);
    expect(count('/v1/tasks/:grant/end', 200)).toBe(1);
    expect(count('/oauth2/introspect', 200)).toBe(1);
    expect(count('/oauth2/revoke', 200)).toBe(2);

    // Keys, the issuer's key cache, Redis and the process.
    expect(after.get('jit_broker_published_keys')).toBeGreaterThanOrEqual(1);
    expect(after.get('jit_broker_signing_key_age_seconds')).toBeGreaterThanOrEqual(0);
    expect(after.get(`jit_broker_issuer_keys{issuer="${issuer.issuer}"}`)).toBeGreaterThanOrEqual(1);
    expect(after.get(`jit_broker_issuer_keys_fetch_failing{issuer="${issuer.issuer}"}`)).toBe(0);
    expect(text).toContain('# TYPE jit_broker_redis_command_failures_total counter');
    expect(text).toContain('# TYPE jit_broker_undecodable_records_total counter');
    expect(after.get('jit_broker_process_resident_memory_bytes')).toBeGreaterThan(0);

    // No label holds a workload id, a grant id or a path with one.
    expect(workloads.size).toBe(1);
    expect(grants.size).toBe(4);
    for (const id of [...workloads, ...grants, 'k8s://']) expect(text).not.toContain(id);
  });

  it('the operator kill switch counts revocations by operator (a dry run none); an undecodable grant record is counted', async () => {
    const before = (await scrape()).samples;
    const x = await start('payments', { task: 'kill-me' });
    const y = await start('payments', { task: 'kill-me' });
    const kill = (dry: boolean) => postJson(`${broker.url}/v1/grants/revoke`, { selector: { task: 'kill-me' }, reason: 'drill', dry_run: dry }, { authorization: `Bearer ${OPERATOR_CREDENTIAL}` });
    expect((await kill(true)).json).toMatchObject({ revoked: 2 });
    expect((await kill(false)).json).toMatchObject({ revoked: 2 });

    // A record that does not decode: introspection answers inactive, and the metric counts it.
    const z = await start();
    const redis = new Redis(redisUrl());
    try {
      await redis.set(grantKeys(broker.prefix, workloadTag(z.json.workload as string)).grant(z.json.grant as string), 'garbage', 'KEEPTTL');
    } finally {
      redis.disconnect();
    }
    expect((await form('/oauth2/introspect', z.json.access_token as string, RS_CREDENTIAL)).json).toEqual({ active: false });

    const after = (await scrape()).samples;
    const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
    expect(delta('jit_broker_revocations_total{by="operator"}')).toBe(2);
    expect(delta('jit_broker_undecodable_records_total{kind="grant"}')).toBe(1);
    expect(delta('jit_broker_issuances_total{rule="payments"}')).toBe(3);
    for (const g of [x, y, z]) expect([...after.keys()].join('\n')).not.toContain(g.json.grant as string);
  });

  it('Redis failures are counted', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
    const down = await startTestBroker(issuer, { store: { kind: 'redis', url: `redis://127.0.0.1:${port}`, command_timeout: '200ms' } });
    try {
      const res = await fetch(`${down.url}/readyz`);
      expect(res.status).toBe(503);
      const text = await (await fetch(`${down.url}/metrics`)).text();
      const failures = Number(/^jit_broker_redis_command_failures_total\{kind="error"\} (\d+)$/m.exec(text)?.[1] ?? 0);
      expect(failures).toBeGreaterThanOrEqual(1);
      // Live grants cannot be read: unknown (NaN), never a made-up 0.
      expect(text).toMatch(/^jit_broker_live_grants nan$/im);
      expect(text).toMatch(/^jit_broker_live_grants_sample_age_seconds nan$/im);
    } finally {
      await down.close();
    }
  });

  it('each broker has a registry of its own', async () => {
    const other = await startTestBroker(issuer);
    try {
      const res = await fetch(`${other.url}/metrics`);
      const text = await res.text();
      expect(text).not.toMatch(/^jit_broker_issuances_total/m);
    } finally {
      await other.close();
    }
  });
});

describe('live grants', () => {
  it.each(['redis', 'memory'] as const)('jit_broker_live_grants moves by exactly the live grants a workload leaves (start 3, end 1: +2), sampled at most every 15 s (%s store)', async (kind) => {
    let offset = 0;
    const own = await startTestBroker(issuer, kind === 'memory' ? { store: { kind: 'memory' } } : {}, { clock: () => Date.now() + offset });
    try {
      const gauge = async (name = 'jit_broker_live_grants') => {
        const text = await (await fetch(`${own.url}/metrics`)).text();
        const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
        return m ? Number(m[1]) : undefined;
      };
      const before = await gauge();
      expect(before).toBe(0);
      const started = [];
      for (let i = 0; i < 3; i++) {
        const res = await postJson(`${own.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent });
        expect(res.status).toBe(201);
        started.push(res.json);
      }
      const first = started[0]!;
      expect((await postJson(`${own.url}/v1/tasks/${first.grant as string}/end`, {}, { authorization: `Bearer ${first.access_token as string}` })).status).toBe(200);
      // Within the sample period the last sample is served: scrapes cost the store nothing more.
      expect(await gauge()).toBe(before);
      offset += LIVE_GRANTS_SAMPLE_MS;
      expect(await gauge()).toBe(before! + 2);
      expect(await gauge('jit_broker_live_grants_partial')).toBe(0);
      expect(await gauge('jit_broker_live_grants_sample_age_seconds')).toBeLessThan(LIVE_GRANTS_SAMPLE_MS / 1000);
      // Grants past their end are not live: the rule's lifetime is 1 h.
      offset += 3_600_000 + LIVE_GRANTS_SAMPLE_MS;
      expect(await gauge()).toBe(0);
    } finally {
      await own.close();
    }
  });
});

describe('metrics.listen', () => {
  it('serves /metrics on a listener of its own, and the main listener answers 404 there (and leaves it out of /openapi.json)', async () => {
    const own = await startTestBroker(issuer, { metrics: { listen: { host: '127.0.0.1', port: 0 } } });
    const metricsUrl = own.metricsUrl;
    try {
      expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(metricsUrl).not.toBe(own.url);
      const scraped = await fetch(`${metricsUrl}/metrics`);
      expect(scraped.status).toBe(200);
      expect(scraped.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await scraped.text()).toMatch(/^jit_broker_live_grants \d+$/m);
      const main = await fetch(`${own.url}/metrics`);
      expect(main.status).toBe(404);
      expect(await main.json()).toMatchObject({ error: 'not_found' });
      // Nothing else on the metrics listener.
      const other = await fetch(`${metricsUrl}/healthz`);
      expect(other.status).toBe(404);
      expect(await other.json()).toMatchObject({ error: 'not_found' });
      const doc = (await (await fetch(`${own.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
      expect(doc.paths['/metrics']).toBeUndefined();
      expect(doc.paths['/healthz']).toBeDefined();
    } finally {
      await own.close();
    }
    await expect(fetch(`${metricsUrl}/metrics`)).rejects.toThrow();
  });

  it('a metrics port in use stops the start with an error naming it, and leaves no listener behind; the same port as listen.port is a config error', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    const mainPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
    try {
      await expect(startTestBroker(issuer, { listen: { host: '127.0.0.1', port: mainPort }, metrics: { listen: { host: '127.0.0.1', port } } })).rejects.toThrow(/cannot listen for metrics on 127\.0\.0\.1:\d+: the address is already in use \(choose another metrics\.listen\.port\)/);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
    // The main listener had started: it was closed again.
    await expect(fetch(`http://127.0.0.1:${mainPort}/healthz`)).rejects.toThrow();
    await expect(startTestBroker(issuer, { listen: { host: '127.0.0.1', port: 9464 }, metrics: { listen: { port: 9464 } } })).rejects.toThrow(
      /metrics\.listen\.port: must differ from listen\.port \(9464\)/,
    );
  });
});

describe('request log', () => {
  it('one line per request: id, method, route pattern, status, latency, client; level as a label; X-Request-Id honoured and returned', async () => {
    const res = await fetch(`${broker.url}/healthz`, { headers: { 'x-request-id': 'trace-abc.123' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('trace-abc.123');
    const line = logLines.find((l) => l.req_id === 'trace-abc.123');
    expect(line).toMatchObject({ level: 'info', msg: 'request', method: 'GET', route: '/healthz', status: 200, client: '127.0.0.1' });
    expect(typeof line?.ms).toBe('number');
    expect(logLines.filter((l) => l.req_id === 'trace-abc.123')).toHaveLength(1);
  });

  it('an unsafe or overlong X-Request-Id is replaced by a fresh one', async () => {
    for (const bad of ['a b', 'x'.repeat(129), '<script>', '']) {
      const res = await fetch(`${broker.url}/healthz`, { headers: { 'x-request-id': bad } });
      const id = res.headers.get('x-request-id') ?? '';
      expect(id).toMatch(/^[0-9a-f]{32}$/);
      expect(logLines.find((l) => l.req_id === id)).toMatchObject({ route: '/healthz', status: 200 });
    }
    const fresh = await fetch(`${broker.url}/healthz`);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f]{32}$/);
  });

  it('names the route pattern, never the path (grant ids, unknown paths), and holds no token', async () => {
    const s = await start();
    const token = s.json.access_token as string;
    const res = await fetch(`${broker.url}/v1/tasks/${s.json.grant as string}/end`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'x-request-id': 'end-1' } });
    expect(res.status).toBe(200);
    expect(logLines.find((l) => l.req_id === 'end-1')).toMatchObject({ method: 'POST', route: '/v1/tasks/:grant/end', status: 200 });
    const missing = await fetch(`${broker.url}/no/such/${token}`, { headers: { 'x-request-id': 'nf-1' } });
    expect(missing.status).toBe(404);
    const nf = logLines.find((l) => l.req_id === 'nf-1');
    expect(nf).toMatchObject({ route: 'unmatched', status: 404 });
    const requestLines = JSON.stringify(logLines.filter((l) => l.msg === 'request'));
    expect(requestLines).not.toContain(token);
    expect(requestLines).not.toContain(s.json.grant as string);
    expect(requestLines).not.toContain('eyJ');
  });
});
