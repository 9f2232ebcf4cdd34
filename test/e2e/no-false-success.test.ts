/**
 * No false success (issue 11, item 2): end, revoke and renew never answer 2xx for a grant record
 * they could not read or change. A record that exists but does not decode (written by an older
 * broker, or by someone else with access to Redis) is a server error, 500, logged with the grant
 * id, and is left as it is; a grant with no record at all is "unknown grant" to end and renew,
 * and RFC 7009's 200 to revocation (nothing exists, so nothing changed). Over HTTP, on the
 * harness's real redis-server.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { grantKeys, workloadTag } from '../../src/grants/ids.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl } from '../helpers/redis.js';

const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const RS_CREDENTIAL = 'rs-false-success-credential-9a41';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'no false success' };

let issuer: OidcIssuer;
let broker: Awaited<ReturnType<typeof startTestBroker>>;
let redis: Redis;
/** The broker's log lines (JSON), at every level. */
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  broker = await startTestBroker(
    issuer,
    { resource_servers: [{ name: 'rs-payments', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL) }], log: { level: 'info' } },
    { destination: sink },
  );
  redis = new Redis(redisUrl());
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  redis?.disconnect();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
async function startTask(): Promise<{ grant: string; token: string }> {
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}
const renew = async (grant: string, token: string) => postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, bearer(token));
async function end(grant: string, token: string) {
  const res = await fetch(`${broker.url}/v1/tasks/${grant}/end`, { method: 'POST', headers: bearer(token) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
async function form(path: string, params: Record<string, string>, auth?: string) {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(auth ? bearer(auth) : {}) },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}
const introspect = (token: string) => form('/oauth2/introspect', { token }, RS_CREDENTIAL);
/** Revocation by the resource server, or (with `holder`) by the token's holder (the token is its credential). */
const revoke = (token: string, holder = false) => form('/oauth2/revoke', { token }, holder ? undefined : RS_CREDENTIAL);
const grantKey = (id: string) => grantKeys(broker.prefix, workloadTag(WORKLOAD)).grant(id);

/**
 * Rewrites the record as a broker before issue 11 wrote a lone surrogate: JSON.stringify escapes
 * it as `\udc00`, which Redis's cjson refuses to decode. Everything else stays valid.
 */
async function makeUndecodable(id: string): Promise<string> {
  const key = grantKey(id);
  const record = (await redis.get(key)) ?? '';
  const broken = record.replace('"no false success"', '"no false \\udc00success"');
  expect(broken).not.toBe(record);
  await redis.set(key, broken, 'KEEPTTL');
  return broken;
}
const logged = (grant: string) => lines.filter((l) => l.grant === grant && (l.level === 'error' || l.level === 'fatal'));

describe('a grant record that exists but does not decode', () => {
  it('end, revoke and renew answer 500 and change nothing; the error is logged with the grant id; introspection is inactive', async () => {
    const { grant, token } = await startTask();
    const broken = await makeUndecodable(grant);

    const ended = await end(grant, token);
    expect(ended.status, JSON.stringify(ended.json)).toBe(500);
    expect(ended.json).toEqual({ error: 'server_error', error_description: 'the grant record could not be read' });

    const revoked = await revoke(token);
    expect(revoked.status, JSON.stringify(revoked.json)).toBe(500);
    expect(revoked.json.error).toBe('server_error');
    const byHolder = await revoke(token, true);
    expect(byHolder.status, JSON.stringify(byHolder.json)).toBe(500);

    const renewed = await renew(grant, token);
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(500);
    expect(renewed.json.error).toBe('server_error');

    // Fail closed: the token is not active, and the record is exactly as it was.
    expect((await introspect(token)).json).toEqual({ active: false });
    expect(await redis.get(grantKey(grant))).toBe(broken);
    expect(logged(grant).length).toBeGreaterThan(0);
  });

  it('listings skip it, logging the grant id', async () => {
    const { grant } = await startTask();
    await makeUndecodable(grant);
    const before = logged(grant).length;
    expect((await broker.store.listWorkloadGrants(WORKLOAD, { now: Date.now(), limit: 1000 })).map((g) => g.id)).not.toContain(grant);
    expect(logged(grant).length).toBeGreaterThan(before);
  });
});

describe('a grant with no record', () => {
  it('end answers 400 invalid_grant "unknown grant", never 200 "expired"', async () => {
    const { grant, token } = await startTask();
    await redis.del(grantKey(grant));
    const res = await end(grant, token);
    expect(res.status, JSON.stringify(res.json)).toBe(400);
    expect(res.json).toEqual({ error: 'invalid_grant', error_description: 'unknown grant' });
  });

  it('renew answers 400 invalid_grant "unknown grant"', async () => {
    const { grant, token } = await startTask();
    await redis.del(grantKey(grant));
    const res = await renew(grant, token);
    expect(res.status, JSON.stringify(res.json)).toBe(400);
    expect(res.json).toEqual({ error: 'invalid_grant', error_description: 'unknown grant' });
  });

  it('revocation answers 200 (RFC 7009 §2.2: nothing exists, nothing changed) and writes nothing', async () => {
    const { grant, token } = await startTask();
    await redis.del(grantKey(grant));
    expect((await revoke(token)).status).toBe(200);
    expect((await revoke(token, true)).status).toBe(200);
    expect(await redis.exists(grantKey(grant))).toBe(0);
  });
});

describe('end reports what happened', () => {
  it('"ended" for a live grant it ended, "expired" only for a grant past its end', async () => {
    const live = await startTask();
    const res = await end(live.grant, live.token);
    expect(res.json).toMatchObject({ grant: live.grant, status: 'ended' });
    expect((await introspect(live.token)).json).toEqual({ active: false });

    // Past its end (moved in the record, as time passing would): expired, not ended.
    const old = await startTask();
    const key = grantKey(old.grant);
    const fields = ((await redis.get(key)) ?? '').split('\n');
    fields[1] = String(Date.now() - 1000);
    await redis.set(key, fields.join('\n'), 'KEEPTTL');
    const late = await end(old.grant, old.token);
    expect(late.status, JSON.stringify(late.json)).toBe(200);
    expect(late.json).toMatchObject({ grant: old.grant, status: 'expired' });
  });
});
