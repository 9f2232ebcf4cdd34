/**
 * Abuse limits over real HTTP and the harness's Redis: the per-workload issuance rate and the
 * live-grant cap hold exactly under 100 concurrent requests (both are checked in the grant's own
 * Lua script), and failed authentications from one address are cut off with 429 + Retry-After.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { CAP_DENIAL_REASON, RATE_DENIAL_REASON } from '../../src/grants/codec.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

let issuer: OidcIssuer;
const brokers: BrokerRuntime[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  for (const b of brokers) await b.close();
  await issuer?.close();
});

async function brokerWith(overrides: Parameters<typeof startTestBroker>[1]) {
  const b = await startTestBroker(issuer, overrides);
  brokers.push(b);
  return b;
}

const saToken = (serviceAccount: string) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount, audience: AUDIENCE, ttlSeconds: 600 });
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'limits test' };
const start = (b: BrokerRuntime, token: string) => postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });

/** 100 requests at once from one workload; the statuses counted. */
async function burst(b: BrokerRuntime, serviceAccount: string) {
  const token = await saToken(serviceAccount);
  const results = await Promise.all(Array.from({ length: 100 }, () => start(b, token)));
  const count = (status: number) => results.filter((r) => r.status === status).length;
  return { results, created: count(201), limited: count(429) };
}

describe('per-workload issuance rate', () => {
  it('holds exactly under 100 concurrent requests: burst 10 → 10 tokens, 90 × 429 with Retry-After, each audited', async () => {
    const b = await brokerWith({ limits: { issuance: { rate: 1, per: '1h', burst: 10 }, failed_attestations: { burst: 1_000_000 } } });
    const { results, created, limited } = await burst(b, 'rate');
    expect({ created, limited }).toEqual({ created: 10, limited: 90 });
    for (const r of results.filter((x) => x.status === 429)) {
      expect(r.json).toEqual({ error: 'rate_limited', error_description: 'too many tokens requested for this workload; retry later' });
      // One token per hour: the next one is about an hour away.
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(3000);
    }
    const events = await b.store.readAudit('k8s://test/ns/payments/sa/rate');
    expect(events.filter((e) => e.type === 'grant.issued')).toHaveLength(10);
    expect(events.filter((e) => e.type === 'grant.denied' && e.reason === RATE_DENIAL_REASON)).toHaveLength(90);
    expect(await b.store.listWorkloadGrants('k8s://test/ns/payments/sa/rate', { now: Date.now() })).toHaveLength(10);

    // Renewal takes from the same bucket.
    const first = results.find((r) => r.status === 201)!;
    const renewal = await postJson(
      `${b.url}/v1/tasks/${first.json.grant as string}/renew`,
      { attestation: { kind: 'oidc', token: await saToken('rate') } },
      { authorization: `Bearer ${first.json.access_token as string}` },
    );
    expect(renewal.status).toBe(429);
    expect(await b.store.getGrant(first.json.grant as string)).toMatchObject({ generation: 1, status: 'active' });

    // Other workloads have their own bucket.
    expect((await burst(b, 'other')).created).toBe(10);
  });
});

describe('per-workload live-grant cap', () => {
  it('holds exactly under 100 concurrent requests: cap 7 → 7 tokens, 93 × 429, each audited', async () => {
    const b = await brokerWith({ grants: { max_active_per_workload: 7 } });
    const { results, created, limited } = await burst(b, 'cap');
    expect({ created, limited }).toEqual({ created: 7, limited: 93 });
    for (const r of results.filter((x) => x.status === 429)) {
      expect(r.json.error_description).toBe('too many active grants for this workload (limit 7); end a task or retry later');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    const events = await b.store.readAudit('k8s://test/ns/payments/sa/cap');
    expect(events.filter((e) => e.type === 'grant.denied' && e.reason === CAP_DENIAL_REASON)).toHaveLength(93);

    // Ending one task frees exactly one slot.
    const one = results.find((r) => r.status === 201)!;
    const ended = await postJson(`${b.url}/v1/tasks/${one.json.grant as string}/end`, '', { authorization: `Bearer ${one.json.access_token as string}` });
    expect(ended.status).toBe(200);
    expect((await burst(b, 'cap')).created).toBe(1);
  });
});

describe('failed authentications per source address', () => {
  it('after `burst` failures the address is refused with 429 before any verification, even with good evidence', async () => {
    const b = await brokerWith({ limits: { failed_attestations: { rate: 1, per: '1h', burst: 5 }, issuance: { rate: 1_000_000, burst: 1_000_000 } } });
    const good = await saToken('api');
    expect((await start(b, good)).status).toBe(201);
    for (let i = 0; i < 5; i++) {
      const bad = await start(b, `${good.slice(0, -4)}AAAA`); // signature does not verify
      expect(bad.status).toBe(401);
    }
    const refused = await start(b, good);
    expect(refused.status).toBe(429);
    expect(refused.json).toEqual({ error: 'rate_limited', error_description: 'too many failed authentication attempts from this address; retry later' });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(3000);
    // Task tokens that do not verify count too, and the refusal covers every route that authenticates.
    const renewal = await postJson(`${b.url}/v1/tasks/g_${'0'.repeat(22)}_${'0'.repeat(22)}/renew`, {}, { authorization: 'Bearer x.y.z' });
    expect(renewal.status).toBe(429);
  });

  it('holds exactly under 100 concurrent attempts once half the budget is spent: 3 left → 3 × 401, 97 × 429', async () => {
    const b = await brokerWith({ limits: { failed_attestations: { rate: 1, per: '1h', burst: 6 }, issuance: { rate: 1_000_000, burst: 1_000_000 } } });
    const good = await saToken('api');
    const bad = `${good.slice(0, -4)}AAAA`;
    for (let i = 0; i < 3; i++) expect((await start(b, bad)).status).toBe(401);
    const results = await Promise.all(Array.from({ length: 100 }, () => start(b, bad)));
    const failed = results.filter((r) => r.status === 401).length;
    const limited = results.filter((r) => r.status === 429).length;
    expect({ failed, limited }).toEqual({ failed: 3, limited: 97 });
    expect((await start(b, good)).status).toBe(429);
  });

  it('X-Forwarded-For counts only from a trusted proxy, and only its own (last) entry', async () => {
    const limits = { failed_attestations: { rate: 1, per: '1h', burst: 2 }, issuance: { rate: 1_000_000, burst: 1_000_000 } };
    const proxied = await brokerWith({ limits, http: { trusted_proxies: ['127.0.0.1/32', '::1'] } });
    const good = await saToken('api');
    const bad = `${good.slice(0, -4)}AAAA`;
    const via = (b: BrokerRuntime, token: string, xff?: string) =>
      postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent }, xff ? { 'x-forwarded-for': xff } : {});
    for (let i = 0; i < 2; i++) expect((await via(proxied, bad, '203.0.113.5')).status).toBe(401);
    expect((await via(proxied, good, '203.0.113.5')).status).toBe(429);
    // A client cannot step around it by prepending addresses: the proxy's own entry is the last.
    expect((await via(proxied, good, '198.51.100.1, 203.0.113.5')).status).toBe(429);
    // Other clients behind the same proxy are not refused; `[v6]:port` and `v4:port` entries read as addresses.
    expect((await via(proxied, good, '203.0.113.6')).status).toBe(201);
    expect((await via(proxied, good, '203.0.113.5:4711')).status).toBe(429);
    expect((await via(proxied, good, '[2001:db8::5]:443')).status).toBe(201);
    // Without a readable entry, failures count against the proxy itself: never no limit.
    expect((await via(proxied, good)).status).toBe(201);
    for (const junk of ['unknown', '203.0.113.9,']) expect((await via(proxied, bad, junk)).status).toBe(401);
    expect((await via(proxied, good)).status).toBe(429);
    expect((await via(proxied, good, '203.0.113.6')).status).toBe(201);

    // From an address that is no trusted proxy, the header is the client's word: ignored.
    const direct = await brokerWith({ limits });
    expect((await via(direct, bad, '203.0.113.7')).status).toBe(401);
    expect((await via(direct, bad, '203.0.113.8')).status).toBe(401);
    expect((await via(direct, good, '203.0.113.9')).status).toBe(429);
  });
});
