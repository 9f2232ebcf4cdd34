/**
 * Fail closed when Redis goes away: the broker answers 503 with Retry-After (never a token, never
 * a 500), /readyz names the store, and issuance resumes by itself once Redis is back.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { AuditEvent } from '../../src/grants/store.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { startRedisServer, type RedisProcess } from '../helpers/redis.js';

const RS_CREDENTIAL = 'outage-rs-credential';
let issuer: OidcIssuer;
let redis: RedisProcess;
let broker: BrokerRuntime;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  redis = await startRedisServer();
  broker = await startTestBroker(issuer, {
    store: { kind: 'redis', url: redis.url, key_prefix: 'outage:', command_timeout: '300ms' },
    resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
  });
});
afterAll(async () => {
  await broker?.close();
  await redis?.stop();
  await issuer?.close();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
const start = async () =>
  postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token: await saToken() },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'outage test' },
  });
const renew = async (grant: string, token: string) =>
  postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` });
async function introspect(token: string) {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
}
/** The call's answer and how long it took (fail closed means: at once, not after a hang). */
async function timed<T>(call: () => Promise<T>): Promise<{ res: T; ms: number }> {
  const t = performance.now();
  const res = await call();
  return { res, ms: performance.now() - t };
}

describe('Redis outage', () => {
  it('answers 503 with Retry-After while Redis is down, and recovers without a restart', async () => {
    expect((await start()).status).toBe(201);

    await redis.kill();
    const down = await Promise.all(Array.from({ length: 5 }, start));
    for (const res of down) {
      expect(res.status).toBe(503);
      expect(res.json).toEqual({ error: 'temporarily_unavailable', error_description: 'grant store is unavailable' });
      expect(res.headers.get('retry-after')).toBe('1');
    }
    const ready = await fetch(`${broker.url}/readyz`);
    expect(ready.status).toBe(503);
    // Anonymous: the failing check by name only (the store's error text goes to the log).
    expect(await ready.json()).toEqual({ status: 'not_ready', failing: ['store'] });
    // Verifiers still get the keys of tokens issued before the outage.
    expect(((await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);

    await redis.restart(); // an empty Redis: nothing survived
    let after = await start();
    for (let i = 0; i < 50 && after.status !== 201; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await start();
    }
    expect(after.status).toBe(201);
    expect(await broker.store.getGrant(after.json.grant as string)).toMatchObject({ status: 'active' });
    // The token verifies with the JWKS served now, though Redis lost the published keys.
    const jwks = createLocalJWKSet((await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: [] });
    await expect(jwtVerify(after.json.access_token as string, jwks, { issuer: 'https://broker.test', audience: 'db.payments' })).resolves.toBeTruthy();
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
  }, 30_000);

  it('renewal and introspection fail closed with 503 within 1 s while Redis is down, and recover by themselves', async () => {
    const started = await start();
    expect(started.status).toBe(201);
    const grant = started.json.grant as string;
    const token = started.json.access_token as string;
    expect((await introspect(token)).json.active).toBe(true);

    await redis.kill();
    for (const call of [() => renew(grant, token), () => introspect(token), () => start()]) {
      const { res, ms } = await timed(call);
      expect(res.status).toBe(503);
      expect(res.json).toEqual({ error: 'temporarily_unavailable', error_description: 'grant store is unavailable' });
      expect(res.headers.get('retry-after')).toBe('1');
      // Fail closed at once: a bound on hanging, not a speed figure (bench/ measures speed).
      expect(ms).toBeLessThan(1000);
    }

    await redis.restart(); // empty: the grant is gone, so its token is no longer active
    let after = await start();
    for (let i = 0; i < 50 && after.status !== 201; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await start();
    }
    expect(after.status).toBe(201);
    expect((await introspect(token)).json).toEqual({ active: false });
    expect((await renew(grant, token)).json).toMatchObject({ error: 'invalid_grant' });
    const fresh = await renew(after.json.grant as string, after.json.access_token as string);
    expect(fresh.status).toBe(200);
    expect((await introspect(fresh.json.access_token as string)).json.active).toBe(true);
  }, 30_000);

  it('a renewal whose reply never came (Redis paused) is a 503; retried with the same token it gets the token the renewal recorded', async () => {
    const started = await start();
    expect(started.status).toBe(201);
    const grant = started.json.grant as string;
    const token = started.json.access_token as string;
    const admin = new Redis(redis.url);
    try {
      await admin.client('PAUSE', 1500, 'WRITE');
      const { res, ms } = await timed(() => renew(grant, token));
      expect(res.status).toBe(503);
      expect(res.json.access_token).toBeUndefined();
      expect(ms).toBeLessThan(1500); // the configured 300 ms timeout, not the pause
      // Redis runs the queued renewal once the pause ends: the grant's latest token is one
      // nobody received. The retry presents the old one within the retry window, and gets that
      // latest token (README: a renewal is safe to retry).
      let record = await broker.store.getGrant(grant).catch(() => null);
      for (let i = 0; i < 50 && record?.generation !== 2; i++) {
        await new Promise((r) => setTimeout(r, 100));
        record = await broker.store.getGrant(grant).catch(() => null);
      }
      expect(record).toMatchObject({ generation: 2, status: 'active' });
      const retry = await renew(grant, token);
      expect(retry.status, JSON.stringify(retry.json)).toBe(200);
      expect(decodeJwt(retry.json.access_token as string).jti).toBe(record!.token_jti);
      expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'active', generation: 2 });
    } finally {
      admin.disconnect();
    }
  }, 30_000);

  it('store calls queued behind a stalled batch still fail within the command timeout of their own call (auto-pipelining)', async () => {
    const admin = new Redis(redis.url);
    try {
      await admin.client('PAUSE', 2000, 'ALL');
      // Each call starts in its own event-loop turn, so each waits behind the batch before it.
      const calls: Promise<number>[] = [];
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        calls.push(broker.store.getGrant(`g_${'A'.repeat(22)}_${'B'.repeat(22)}`).then(() => Infinity, () => performance.now() - t));
        await new Promise((r) => setImmediate(r));
      }
      // 300 ms from each call, not 300 ms more per batch ahead of it (600 ms and up): a bound, not a speed figure.
      for (const ms of await Promise.all(calls)) expect(ms).toBeLessThan(500);
    } finally {
      await new Promise((r) => setTimeout(r, 2100));
      admin.disconnect();
    }
  }, 30_000);

  it('a write whose reply never came (Redis paused) is a 503, and its grant, when it lands, is voided', async () => {
    const admin = new Redis(redis.url);
    try {
      await admin.client('PAUSE', 1500, 'WRITE'); // writes queue up; the broker times out at 300 ms
      const res = await start();
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      // Once Redis runs the queued write, the broker voids it: nothing live is left behind.
      const workload = 'k8s://test/ns/payments/sa/api';
      // (Reads share the broker's connection, so they wait behind the paused writes: retried.)
      let events: AuditEvent[] = [];
      for (let i = 0; i < 100 && !events.some((e) => e.type === 'grant.ended'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        events = await broker.store.readAudit(workload).catch(() => events);
      }
      const ended = events.filter((e) => e.type === 'grant.ended');
      expect(ended).toHaveLength(1);
      expect(ended[0]!.reason).toMatch(/^not_delivered/);
      const voided = await broker.store.getGrant(ended[0]!.grant!);
      expect(voided).toMatchObject({ status: 'ended' });
      const live = await broker.store.listWorkloadGrants(workload, { now: Date.now(), liveOnly: true });
      expect(live.map((g) => g.id)).not.toContain(voided!.id);
    } finally {
      admin.disconnect();
    }
  }, 30_000);
});
