/**
 * Issue 11, item 5: the grant record is the authority, and Redis write access alone mints nothing.
 * Through the real HTTP API, with the harness's real redis-server:
 * - a public key written straight into the published key set (as someone with Redis write access
 *   would) is not served in the JWKS and verifies nothing, so a token it signs, reusing a live
 *   grant's jti with a forged scope, is inactive and can neither end nor revoke the grant;
 * - a token signed by the broker's own key whose intent claims differ from its grant's record is
 *   inactive at introspection, refused at renew and end, and changes nothing at revocation;
 * - keys published under the previous publication secret are trusted while it is configured as
 *   accepted, and not once only the new secret is.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { decodeJwt, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { TaskTokenClaims } from '../../src/protocol/claims.js';
import type { BrokerRuntime } from '../../src/server.js';
import { signTaskToken } from '../../src/tokens/mint.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { silentLogger } from '../../src/log.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl, uniquePrefix } from '../helpers/redis.js';

const RS_CREDENTIAL = 'rs-authority-credential-0123456789';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'record authority test', task: 'authority-1' };
/** A resource server of both audiences, so a token whose `aud` moved to the other is still its own. */
const resourceServers = [{ name: 'rs', audiences: ['db.payments', 'db.other'], credential_sha256: sha256(RS_CREDENTIAL) }];
const policies = [
  { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments', 'db.other'], actions: ['read', 'write'], resources: ['db://payments/**'], max_ttl: '10m', max_lifetime: '1h' },
];

let issuer: OidcIssuer;
let redis: Redis;
const started: BrokerRuntime[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  redis = new Redis(redisUrl());
});
afterAll(async () => {
  for (const b of started) await b.close();
  await issuer?.close();
  redis?.disconnect();
});

async function start(overrides: Parameters<typeof startTestBroker>[1] = {}, destination?: NodeJS.WritableStream) {
  const b = await startTestBroker(issuer, { resource_servers: resourceServers, policies, ...overrides }, destination ? { destination } : {});
  started.push(b);
  return b;
}

const saToken = () =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

async function startTask(b: BrokerRuntime): Promise<{ token: string; grant: string; claims: TaskTokenClaims }> {
  const res = await postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent });
  expect(res.status).toBe(201);
  const token = res.json.access_token as string;
  return { token, grant: res.json.grant as string, claims: decodeJwt(token) as unknown as TaskTokenClaims };
}

async function form(b: BrokerRuntime, path: string, token: string) {
  const res = await fetch(`${b.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}
const introspect = (b: BrokerRuntime, token: string) => form(b, '/oauth2/introspect', token);
const revoke = (b: BrokerRuntime, token: string) => form(b, '/oauth2/revoke', token);
const end = (b: BrokerRuntime, grant: string, token: string) => postJson(`${b.url}/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${token}` });
const renew = async (b: BrokerRuntime, grant: string, token: string) =>
  postJson(`${b.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` });
const jwksKids = async (b: BrokerRuntime) => ((await (await fetch(`${b.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);

/** The claims of `base` with its granted intent widened: both actions, every payments resource. */
function widened(base: TaskTokenClaims): TaskTokenClaims {
  const [detail] = base.authorization_details;
  return { ...base, scope: 'read write', authorization_details: [{ ...detail!, actions: ['read', 'write'], resources: ['db://payments/**'] }] };
}

describe('a verification key written into Redis by someone with write access', () => {
  it('is not served or trusted: a token it signs with a live grant’s jti is inactive and cannot end or revoke that grant', async () => {
    // The attacker's key pair; its public half goes into the published key set directly.
    const prefix = uniquePrefix('authority-forged');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const kid = 'attacker-key';
    const now = Date.now();
    const jwk = { ...(publicKey.export({ format: 'jwk' }) as Record<string, unknown>), kid, alg: 'ES256', use: 'sig' };
    await redis.hset(`${prefix}keys`, kid, JSON.stringify({ kid, jwk, created_at: now, retire_at: now + 3_600_000, expires_at: now + 7_200_000 }));

    const b = await start({ prefix });
    const victim = await startTask(b);
    const forged = await new SignJWT(widened(victim.claims) as unknown as Record<string, unknown>)
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
      .sign(privateKey);

    expect.soft(await jwksKids(b)).not.toContain(kid);
    expect.soft((await introspect(b, forged)).json).toEqual({ active: false });
    expect.soft((await revoke(b, forged)).status).toBe(200);
    const ended = await end(b, victim.grant, forged);
    expect.soft(ended.status).toBeGreaterThanOrEqual(400);
    expect.soft(ended.status).toBeLessThan(500);
    // The victim's grant is untouched: still active, its own token still introspects.
    expect.soft(await b.store.getGrant(victim.grant)).toMatchObject({ status: 'active', token_jti: victim.claims.jti });
    expect.soft((await introspect(b, victim.token)).json).toMatchObject({ active: true, jti: victim.claims.jti, scope: 'read' });
  });
});

describe('a token whose intent claims differ from its grant’s record', () => {
  let b: BrokerRuntime;
  beforeAll(async () => {
    b = await start();
  });

  /** A token the broker's own key signs with `claims` (a minting bug, or a leaked signing key). */
  const signed = (claims: TaskTokenClaims) => signTaskToken(claims, b.keyring.signingKey());

  const variants: [string, (c: TaskTokenClaims) => TaskTokenClaims][] = [
    ['scope and actions widened', widened],
    ['resources widened', (c) => ({ ...c, authorization_details: [{ ...c.authorization_details[0]!, resources: ['db://payments/**'] }] })],
    ['purpose changed', (c) => ({ ...c, authorization_details: [{ ...c.authorization_details[0]!, purpose: 'something else' }] })],
    ['another audience', (c) => ({ ...c, aud: 'db.other', authorization_details: [{ ...c.authorization_details[0]!, locations: ['db.other'] }] })],
    ['another task (txn)', (c) => ({ ...c, txn: 'authority-2', authorization_details: [{ ...c.authorization_details[0]!, identifier: 'authority-2' }] })],
    ['another client_id', (c) => ({ ...c, client_id: 'k8s://test/ns/payments/sa/other' })],
    ['a binding the grant does not have', (c) => ({ ...c, cnf: { 'x5t#S256': 'A'.repeat(43) } })],
    ['a later exp than the record’s', (c) => ({ ...c, exp: c.exp + 60 })],
    ['a second authorization detail', (c) => ({ ...c, authorization_details: [...c.authorization_details, { ...c.authorization_details[0]!, resources: ['db://payments/secrets'] }] })],
  ];

  it.each(variants)('is inactive at introspection: %s', async (_name, change) => {
    const victim = await startTask(b);
    expect((await introspect(b, victim.token)).json).toMatchObject({ active: true });
    expect((await introspect(b, signed(change(victim.claims)))).json).toEqual({ active: false });
  });

  it('is refused at renew and end, and revocation with it answers 200 but changes nothing', async () => {
    const victim = await startTask(b);
    const forged = signed(widened(victim.claims));
    const revoked = await revoke(b, forged);
    expect.soft(revoked.status).toBe(200);
    expect.soft(await b.store.getGrant(victim.grant)).toMatchObject({ status: 'active' });
    const ended = await end(b, victim.grant, forged);
    expect.soft(ended).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
    expect.soft(await b.store.getGrant(victim.grant)).toMatchObject({ status: 'active' });
    const renewed = await renew(b, victim.grant, forged);
    expect.soft(renewed).toMatchObject({ status: 400, json: { error: 'invalid_grant' } });
    expect.soft(await b.store.getGrant(victim.grant)).toMatchObject({ status: 'active', generation: 1, token_jti: victim.claims.jti });
    // The genuine token still works.
    expect.soft((await introspect(b, victim.token)).json).toMatchObject({ active: true, scope: 'read' });
    expect.soft((await end(b, victim.grant, victim.token)).json).toMatchObject({ status: 'ended' });
  });

  it('introspection answers the record’s intent and rule', async () => {
    const victim = await startTask(b);
    const answer = (await introspect(b, victim.token)).json;
    expect(answer).toMatchObject({
      active: true,
      aud: intent.audience,
      scope: 'read',
      txn: intent.task,
      rule: 'payments',
      authorization_details: [{ locations: [intent.audience], actions: intent.actions, resources: intent.resources, purpose: intent.purpose, identifier: intent.task }],
    });
  });
});

describe('key publication secret rotation', () => {
  const OLD = 'old-publication-secret-0123456789abcdef';
  const NEW = 'new-publication-secret-0123456789abcdef';

  it('keys published under the old secret are trusted while it is accepted, and not once only the new one is', async () => {
    const prefix = uniquePrefix('authority-rotation');
    const a = await start({ prefix, tokens: { key_publication_secret: OLD } });
    const fromA = await startTask(a);
    const kidOfA = JSON.parse(Buffer.from(fromA.token.split('.')[0]!, 'base64url').toString()) as { kid: string };

    // Mid-rotation: signs with the new secret, still accepts the old one.
    const b = await start({ prefix, tokens: { key_publication_secret: NEW, key_publication_secret_accepted: OLD } });
    expect(await jwksKids(b)).toContain(kidOfA.kid);
    expect((await introspect(b, fromA.token)).json).toMatchObject({ active: true, jti: fromA.claims.jti });

    // After the rotation: only the new secret. A's keys are ignored, and logged as such.
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const c = await start({ prefix, tokens: { key_publication_secret: NEW }, log: { level: 'warn' } }, sink);
    expect(await jwksKids(c)).not.toContain(kidOfA.kid);
    expect((await introspect(c, fromA.token)).json).toEqual({ active: false });
    // B's keys (new secret) are trusted by C.
    const fromB = await startTask(b);
    expect((await introspect(c, fromB.token)).json).toMatchObject({ active: true });
    const ignored = lines.filter((l) => l.includes('not authenticated'));
    expect(ignored.length).toBeGreaterThan(0);
    expect(ignored.some((l) => l.includes(kidOfA.kid))).toBe(true);
    for (const l of lines) for (const s of [OLD, NEW]) expect(l).not.toContain(s);
  });
});

describe('the Redis store without a key publication secret', () => {
  it('refuses to start (config load names tokens.key_publication_secret: test/unit/config.test.ts)', () => {
    for (const keyPublicationSecrets of [[], [''], ['short']]) {
      expect(() => createRedisGrantStore({ url: redisUrl(), keyPrefix: uniquePrefix('authority-nosecret'), keyPublicationSecrets, log: silentLogger })).toThrow(
        /needs a key publication secret/,
      );
    }
  });
});
