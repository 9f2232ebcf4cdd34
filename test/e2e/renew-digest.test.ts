/**
 * A renewal does not verify the broker's own signature again when the grant record vouches for
 * the token: the record keeps a keyed digest of its latest token (Grant.token_digest), and a token
 * that is byte for byte that one skips only the signature check (tokens/verify.ts). Everything
 * else refuses as before, through the real HTTP API with the harness's real Redis:
 * - the latest token's payload under an altered or foreign signature is refused;
 * - the latest token once its signing key is revoked, and once it has expired, is refused with
 *   today's errors;
 * - a record planted with an unkeyed SHA-256 digest of a forged token does not let it renew;
 * - a record without the digest (as an older broker wrote it) renews by its signature;
 * - a chain of renewals keeps the digest on the latest token, and a superseded token is a replay.
 */
import { createHash, generateKeyPairSync, sign as nodeSign } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { grantKeys, tagOfGrantId } from '../../src/grants/ids.js';
import type { BrokerRuntime } from '../../src/server.js';
import { TokenDigests } from '../../src/tokens/token-digest.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET } from '../helpers/redis.js';

const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'renew digest test' };
const admin = newCredential();
const digests = new TokenDigests(TEST_KEY_PUBLICATION_SECRET);

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let redis: Redis;
/** The broker's clock runs this far ahead of the wall clock (moved by the expiry test). */
let skew = 0;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  redis = new Redis(redisUrl());
  broker = await startTestBroker(issuer, { operators: [{ name: 'root', role: 'admin', credential_sha256: admin.sha256 }] }, { clock: () => Date.now() + skew });
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  redis?.disconnect();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });

async function startTask(ttl?: string) {
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent, ...(ttl ? { ttl } : {}) });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}
const renew = async (grant: string, token: string) =>
  postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` });

const recordKey = (grant: string) => grantKeys(broker.prefix, tagOfGrantId(grant)!).grant(grant);
const recordLines = async (grant: string) => (await redis.get(recordKey(grant)))!.split('\n');
/** What Redis write access alone can do: rewrite the record's digest line (the last). */
async function plantDigest(grant: string, digest: string) {
  const lines = await recordLines(grant);
  expect(lines).toHaveLength(12);
  lines[11] = digest;
  await redis.set(recordKey(grant), lines.join('\n'), 'KEEPTTL');
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const parts = (token: string) => token.split('.') as [string, string, string];
const header = (token: string) => JSON.parse(Buffer.from(parts(token)[0], 'base64url').toString()) as Record<string, unknown>;
/** The token's header and payload (or `payload`) signed by a key the broker never had. */
function foreignSigned(token: string, payload?: Record<string, unknown>): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const input = `${b64(header(token))}.${payload ? b64(payload) : parts(token)[1]}`;
  return `${input}.${nodeSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

describe('renewal vouched for by the grant record', () => {
  it('records a keyed digest of the latest token, not a plain hash of it, and moves it with each renewal', async () => {
    const { grant, token } = await startTask();
    const digest = (await broker.store.getGrant(grant))!.token_digest;
    expect(digest).toBe(digests.of(token));
    expect(digest).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(digest).not.toBe(createHash('sha256').update(token).digest().subarray(0, 16).toString('base64url'));
    expect(digest).not.toBe(new TokenDigests('another-secret-of-at-least-32-characters!').of(token));
    const renewed = await renew(grant, token);
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(renewed.json.access_token as string));
  });

  it('refuses the latest token with an altered signature, or its payload signed by a foreign key', async () => {
    const { grant, token } = await startTask();
    const [h, p, s] = parts(token);
    const altered = `${h}.${p}.${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
    for (const forged of [altered, foreignSigned(token), foreignSigned(token, { ...JSON.parse(Buffer.from(p, 'base64url').toString()), scope: 'db.payments:write' })]) {
      const res = await renew(grant, forged);
      expect(res.status).toBe(401);
      expect(res.json).toMatchObject({ error: 'invalid_token', error_description: 'the token signature does not verify' });
    }
    // A foreign key under a kid of its own is unknown, as ever.
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const input = `${b64({ ...header(token), kid: 'foreign' })}.${p}`;
    const unknown = `${input}.${nodeSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
    expect((await renew(grant, unknown)).json).toMatchObject({ error: 'invalid_token', error_description: 'the token was not signed by this broker (unknown key)' });
    // The grant is untouched: its own token still renews.
    expect((await renew(grant, token)).status).toBe(200);
  });

  it('does not let a record planted with an unkeyed SHA-256 digest of a forged token renew it', async () => {
    const { grant, token } = await startTask();
    const forged = foreignSigned(token);
    await plantDigest(grant, createHash('sha256').update(forged).digest().subarray(0, 16).toString('base64url'));
    const res = await renew(grant, forged);
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ error: 'invalid_token', error_description: 'the token signature does not verify' });
    // Nor a digest keyed by anything but the brokers' secret.
    await plantDigest(grant, new TokenDigests(undefined).of(forged));
    expect((await renew(grant, forged)).json).toMatchObject({ error: 'invalid_token', error_description: 'the token signature does not verify' });
  });

  it('refuses the latest token once its signing key is revoked, as before', async () => {
    const { grant, token } = await startTask();
    expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(token));
    const kid = header(token).kid as string;
    const revoked = await postJson(`${broker.url}/v1/grants/revoke`, { selector: { key_id: kid }, reason: 'key compromised' }, { authorization: `Bearer ${admin.credential}` });
    expect(revoked.status, JSON.stringify(revoked.json)).toBe(200);
    // The record still vouches for the bytes; the key does not.
    expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(token));
    const res = await renew(grant, token);
    expect(res.status).toBe(401);
    expect(res.json).toMatchObject({ error: 'invalid_token', error_description: 'the token was not signed by this broker (unknown key)' });
  });

  it('refuses the latest token once it has expired, with the same message', async () => {
    const { grant, token } = await startTask('30s');
    expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(token));
    skew = 30_000 + 30_000 + 1_000; // past exp and the 30 s leeway
    try {
      const res = await renew(grant, token);
      expect(res.status).toBe(401);
      expect(res.json).toMatchObject({ error: 'invalid_token', error_description: 'the token has expired' });
    } finally {
      skew = 0;
    }
  });

  it('renews by the signature a record without the digest, as an older broker wrote it', async () => {
    const { grant, token } = await startTask();
    const lines = await recordLines(grant);
    expect(lines.slice(9)).toEqual(['', '', digests.of(token)]);
    await redis.set(recordKey(grant), lines.slice(0, 9).join('\n'), 'KEEPTTL');
    expect((await broker.store.getGrant(grant))!.token_digest).toBeUndefined();
    const res = await renew(grant, token);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(res.json.access_token as string));
    // A forged token is refused there too.
    await redis.set(recordKey(grant), (await recordLines(grant)).slice(0, 11).join('\n'), 'KEEPTTL');
    expect((await renew(grant, foreignSigned(res.json.access_token as string))).json).toMatchObject({ error: 'invalid_token' });
  });

  it('answers a bad token with its own error before any grant error (unknown grant, unreadable record), as before', async () => {
    const { grant, token } = await startTask();
    const forged = foreignSigned(token);
    const unknownGrant = `${grant.slice(0, -22)}${'A'.repeat(22)}`;
    expect((await renew(unknownGrant, forged)).json).toMatchObject({ error: 'invalid_token', error_description: 'the token signature does not verify' });
    expect((await renew(unknownGrant, token)).json).toMatchObject({ error: 'invalid_grant', error_description: 'the token was not issued for this grant' });
    // A record that does not decode: the token's error first; a good token then gets the record's (500).
    const record = (await redis.get(recordKey(grant)))!;
    await redis.set(recordKey(grant), record.replace('\n[', '\n[not json'), 'KEEPTTL');
    expect((await renew(grant, forged)).json).toMatchObject({ error: 'invalid_token', error_description: 'the token signature does not verify' });
    expect((await renew(grant, token)).status).toBe(500);
    await redis.set(recordKey(grant), record, 'KEEPTTL');
    expect((await renew(grant, token)).status).toBe(200);
  });

  it('renews a chain of tokens, each vouched for in turn, and revokes the grant on a superseded one', async () => {
    const { grant, token: first } = await startTask();
    let token = first;
    for (let i = 0; i < 12; i++) {
      const res = await renew(grant, token);
      expect(res.status, JSON.stringify(res.json)).toBe(200);
      expect(res.json.generation).toBe(i + 2);
      token = res.json.access_token as string;
      expect((await broker.store.getGrant(grant))!.token_digest).toBe(digests.of(token));
    }
    const replay = await renew(grant, first);
    expect(replay.status).toBe(400);
    expect(replay.json).toMatchObject({ error: 'invalid_grant', error_reason: 'replay_detected' });
    expect((await broker.store.getGrant(grant))!.status).toBe('revoked');
    expect((await renew(grant, token)).json).toMatchObject({ error: 'invalid_grant', error_description: 'the grant has been revoked' });
  });
});
