/**
 * Revocation wins over memory pressure (issue 11, item 3): with its private redis-server at
 * `maxmemory` (noeviction), the broker refuses to issue (503, nothing written), but ending,
 * revoking and the replay check still take effect, so introspection answers inactive, and their
 * audit events are written. When a closing event cannot be written at all, the grant closes
 * anyway and a log line names it.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { grantKeys, workloadTag } from '../../src/grants/ids.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { startRedisServer, type RedisProcess } from '../helpers/redis.js';

const RS_CREDENTIAL = 'oom-rs-credential-0123456789';
const WORKLOAD = 'k8s://test/ns/payments/sa/api';
let issuer: OidcIssuer;
let redis: RedisProcess;
let admin: Redis;
let broker: BrokerRuntime & { prefix: string };
let logged = '';

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  redis = await startRedisServer({ args: ['--maxmemory-policy', 'noeviction'] });
  admin = new Redis(redis.url);
  const sink = new Writable({ write: (c, _e, cb) => ((logged += String(c)), cb()) });
  broker = await startTestBroker(
    issuer,
    {
      store: { kind: 'redis', url: redis.url, key_prefix: 'oom:', command_timeout: '1s' },
      prefix: 'oom:',
      resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
      log: { level: 'warn' },
    },
    { destination: sink },
  );
});
afterEach(async () => {
  await admin.config('SET', 'maxmemory', '0');
  await admin.del(...(await admin.keys('pad:*')), 'pad:none');
});
afterAll(async () => {
  await broker?.close();
  admin?.disconnect();
  await redis?.stop();
  await issuer?.close();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
const start = async () =>
  postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token: await saToken() },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'oom test' },
  });
async function started() {
  const res = await start();
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}
const renew = async (grant: string, token: string) =>
  postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` });
const end = (grant: string, token: string) => postJson(`${broker.url}/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${token}` });
async function form(path: string, token: string) {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}
const introspect = (token: string) => form('/oauth2/introspect', token);
const revoke = (token: string) => form('/oauth2/revoke', token);

/**
 * Sets maxmemory just above what is used, then fills Redis until even a small write is refused:
 * a large write alone can be refused for its own query buffer while small ones still fit.
 */
async function fillToMaxmemory(): Promise<void> {
  const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
  await admin.config('SET', 'maxmemory', String(used + 512 * 1024));
  let i = 0;
  for (const size of [32 * 1024, 256]) {
    const pad = 'x'.repeat(size);
    for (let refused = false; !refused; i++) {
      if (i > 20_000) throw new Error('Redis never reached maxmemory');
      refused = await admin.set(`pad:${i}`, pad).then(
        () => false,
        (e: unknown) => /OOM/.test(String(e)),
      );
    }
  }
}

describe('at maxmemory (noeviction)', () => {
  it('issuance fails closed with 503, but end, revoke and the replay check take effect and are audited', async () => {
    const toEnd = await started();
    const toRevoke = await started();
    const replayed = await started();
    const toRenew = await started();
    const renewed = await renew(replayed.grant, replayed.token);
    expect(renewed.status).toBe(200);
    // Twice: the first token is then older than the one just superseded (a retry within the window is no replay).
    const renewedAgain = await renew(replayed.grant, renewed.json.access_token as string);
    expect(renewedAgain.status).toBe(200);
    const latest = renewedAgain.json.access_token as string;

    await fillToMaxmemory();
    const keysBefore = await admin.dbsize();
    // The OOM state: no token, no grant, nothing written (not even a void marker).
    const refused = await start();
    expect(refused.status).toBe(503);
    expect(refused.json.access_token).toBeUndefined();
    expect(await admin.dbsize()).toBe(keysBefore);

    // End by its holder.
    const ended = await end(toEnd.grant, toEnd.token);
    expect(ended.status, JSON.stringify(ended.json)).toBe(200);
    expect(ended.json.status).toBe('ended');
    expect((await introspect(toEnd.token)).json).toEqual({ active: false });

    // RFC 7009 revocation by the resource server.
    expect((await introspect(toRevoke.token)).json.active).toBe(true);
    expect((await revoke(toRevoke.token)).status).toBe(200);
    expect((await introspect(toRevoke.token)).json).toEqual({ active: false });

    // A superseded token presented for renewal: two holders, so the grant is revoked.
    const replay = await renew(replayed.grant, replayed.token);
    expect(replay.json).toMatchObject({ error: 'invalid_grant', error_description: expect.stringContaining('two holders') });
    expect((await introspect(latest)).json).toEqual({ active: false });

    // A renewal fails closed (503, nothing changed); one of an ended grant needs no write: invalid_grant.
    expect((await renew(toRenew.grant, toRenew.token)).status).toBe(503);
    expect(await broker.store.getGrant(toRenew.grant)).toMatchObject({ status: 'active', generation: 1 });
    expect((await renew(toEnd.grant, toEnd.token)).json).toMatchObject({ error: 'invalid_grant' });

    // Still out of memory, and each closing was audited.
    expect((await start()).status).toBe(503);
    const events = await broker.store.readAudit(WORKLOAD);
    const last = (grant: string) => events.filter((e) => e.grant === grant).at(-1)?.type;
    expect(last(toEnd.grant)).toBe('grant.ended');
    expect(last(toRevoke.grant)).toBe('grant.revoked');
    expect(last(replayed.grant)).toBe('grant.replay_detected');
  }, 60_000);

  it('a revocation whose audit event cannot be written still takes effect, and a log line says so', async () => {
    const victim = await started();
    // The workload's audit stream is replaced by a string: every XADD to it fails (WRONGTYPE).
    const keys = grantKeys('oom:', workloadTag(WORKLOAD));
    await admin.del(keys.audit);
    await admin.set(keys.audit, 'not a stream');
    try {
      logged = '';
      expect((await revoke(victim.token)).status).toBe(200);
      expect((await introspect(victim.token)).json).toEqual({ active: false });
      expect(await broker.store.getGrant(victim.grant)).toMatchObject({ status: 'revoked' });
      const line = logged.split('\n').find((l) => l.includes(victim.grant) && /audit event/.test(l));
      expect(line, logged).toBeDefined();
      expect(line).not.toContain(victim.token);
    } finally {
      await admin.del(keys.audit);
    }
  }, 30_000);
});
