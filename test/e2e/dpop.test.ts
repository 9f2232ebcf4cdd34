import { createHash, createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { Redis } from 'ioredis';
import { calculateJwkThumbprint, CompactSign, decodeJwt, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { grantState } from '../helpers/grant-state.js';
import { redisUrl } from '../helpers/redis.js';

/**
 * DPoP (RFC 9449) on the task routes, over real HTTP against a real Redis (and the memory store
 * for jti tracking): proofs are made with jose as a client would. The broker's issuer is
 * https://broker.test while it listens on 127.0.0.1: `htu` is the issuer's URL, as behind a proxy.
 */
const ISSUER = 'https://broker.test';
const RS_CREDENTIAL = 'rs-dpop-credential-0123456789abcdef';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'dpop test' };
const rules = [
  { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
  { name: 'ledger-dpop', workloads: ['k8s://test/ns/ledger/sa/*'], audiences: ['db.ledger'], actions: ['read'], require_binding: 'dpop' as const },
  { name: 'audit-legacy', workloads: ['k8s://test/ns/audit/sa/*'], audiences: ['db.audit'], actions: ['read'], require_binding: true },
];
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let memoryBroker: BrokerRuntime & { prefix: string };
let nonceBroker: BrokerRuntime & { prefix: string };
let redis: Redis;
/** How far the nonce broker's clock runs ahead of the wall clock. */
let skew = 0;

interface Holder {
  privateKey: CryptoKey;
  jwk: JWK;
  jkt: string;
}

async function newHolder(alg = 'ES256'): Promise<Holder> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
}

interface ProofOptions {
  htm?: string;
  htu?: string;
  iat?: number;
  jti?: string;
  ath?: string;
  nonce?: string;
  header?: Record<string, unknown>;
}

let jtiCounter = 0;
function claimsOf(path: string, o: ProofOptions) {
  return {
    jti: o.jti ?? `proof-${process.pid}-${++jtiCounter}-${Math.random().toString(36).slice(2)}`,
    htm: o.htm ?? 'POST',
    htu: o.htu ?? `${ISSUER}${path}`,
    iat: o.iat ?? Math.floor(Date.now() / 1000),
    ...(o.ath !== undefined ? { ath: o.ath } : {}),
    ...(o.nonce !== undefined ? { nonce: o.nonce } : {}),
  };
}

function proof(holder: Holder, path: string, o: ProofOptions = {}, alg = 'ES256'): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claimsOf(path, o))))
    .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk: holder.jwk, ...o.header })
    .sign(holder.privateKey);
}

/** A proof by a 1024-bit RSA key (jose refuses to make one). */
function rsa1024(claims: object): string {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const input = `${b64({ alg: 'RS256', typ: 'dpop+jwt', jwk: publicKey.export({ format: 'jwk' }) })}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

/** A proof whose header says ES256 but whose key (and signature) is P-384. */
function p384AsEs256(claims: object): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const input = `${b64({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicKey.export({ format: 'jwk' }) })}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

const ath = (token: string) => createHash('sha256').update(token).digest('base64url');

const saToken = (namespace = 'payments') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

async function start(b: { url: string }, dpop: string | undefined, opts: { namespace?: string; intent?: object } = {}) {
  return postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken(opts.namespace) }, intent: opts.intent ?? intent }, dpop ? { dpop } : {});
}

async function renew(b: { url: string }, grant: string, token: string, dpop: string | undefined, scheme = 'DPoP') {
  return postJson(`${b.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `${scheme} ${token}`, ...(dpop ? { dpop } : {}) });
}

async function introspect(token: string) {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return (await res.json()) as Record<string, unknown>;
}

/** The broker's grant state (records, indexes, lifecycle events): a refused proof must leave it as it was. */
const state = (prefix: string) => grantState(redis, prefix);

function expectProofError(res: { status: number; json: Record<string, unknown> }, description: string | RegExp) {
  expect(res.status).toBe(400);
  expect(res.json.error).toBe('invalid_dpop_proof');
  expect(res.json.error_description).toMatch(description);
}

const NONCE_SECRET = 'dpop-nonce-secret-0123456789abcdef0123';

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  const common = {
    issuer: ISSUER,
    policies: rules,
    resource_servers: [{ name: 'rs-payments', audiences: ['db.payments', 'db.ledger'], credential_sha256: sha256(RS_CREDENTIAL) }],
  };
  broker = await startTestBroker(issuer, common);
  memoryBroker = await startTestBroker(issuer, { ...common, store: { kind: 'memory' } });
  nonceBroker = await startTestBroker(issuer, { ...common, dpop: { nonce_secret: NONCE_SECRET, nonce_rotation: '1m' } }, { clock: () => Date.now() + skew });
  redis = new Redis(redisUrl());
});

afterAll(async () => {
  await broker?.close();
  await memoryBroker?.close();
  await nonceBroker?.close();
  await issuer?.close();
  redis?.disconnect();
});

describe('a DPoP proof binds the task token', () => {
  it('answers token_type DPoP with cnf.jkt in the token and in introspection, and renews with a proof by the same key', async () => {
    const holder = await newHolder();
    const res = await start(broker, await proof(holder, '/v1/tasks'));
    expect(res.status).toBe(201);
    expect(res.json.token_type).toBe('DPoP');
    const token = res.json.access_token as string;
    expect(decodeJwt(token).cnf).toEqual({ jkt: holder.jkt });
    expect(await introspect(token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: holder.jkt } });

    const grant = res.json.grant as string;
    const renewed = await renew(broker, grant, token, await proof(holder, `/v1/tasks/${grant}/renew`, { ath: ath(token) }));
    expect(renewed.status).toBe(200);
    expect(renewed.json.token_type).toBe('DPoP');
    const next = renewed.json.access_token as string;
    expect(decodeJwt(next).cnf).toEqual({ jkt: holder.jkt });

    // The holder ends the grant with a proof too (Authorization: DPoP, ath of the token).
    const ended = await postJson(`${broker.url}/v1/tasks/${grant}/end`, {}, { authorization: `DPoP ${next}`, dpop: await proof(holder, `/v1/tasks/${grant}/end`, { ath: ath(next) }) });
    expect(ended.status).toBe(200);
    expect(ended.json.status).toBe('ended');
  });

  it('binds with EdDSA and RSA keys as well', async () => {
    for (const alg of ['EdDSA', 'Ed25519', 'ES384', 'ES512', 'RS256', 'PS256', 'PS512']) {
      const holder = await newHolder(alg);
      const res = await start(broker, await proof(holder, '/v1/tasks', {}, alg));
      expect(res.status, alg).toBe(201);
      expect(decodeJwt(res.json.access_token as string).cnf).toEqual({ jkt: holder.jkt });
    }
  });

  it('leaves tokens without a proof Bearer and unbound', async () => {
    const res = await start(broker, undefined);
    expect(res.status).toBe(201);
    expect(res.json.token_type).toBe('Bearer');
    expect(decodeJwt(res.json.access_token as string).cnf).toBeUndefined();
  });
});

describe('a bad proof is refused with invalid_dpop_proof and changes nothing', () => {
  it('refuses each way a proof can be wrong', async () => {
    const holder = await newHolder();
    const now = Math.floor(Date.now() / 1000);
    const privateJwk = await exportJWK(holder.privateKey);
    const hs = (claims: object, alg: string) => {
      const input = `${b64({ alg, typ: 'dpop+jwt', jwk: holder.jwk })}.${b64(claims)}`;
      return alg === 'none' ? `${input}.` : `${input}.${createHmac('sha256', 'secret').update(input).digest('base64url')}`;
    };
    const before = await state(broker.prefix);
    const cases: [string, string, RegExp][] = [
      ['wrong htm', await proof(holder, '/v1/tasks', { htm: 'GET' }), /htm must be the request's method, POST/],
      ['htu of another route', await proof(holder, '/v1/tasks', { htu: `${ISSUER}/v1/tasks/x/renew` }), /htu must be this request's URI/],
      // The broker is reached at 127.0.0.1, but clients know it by its issuer URL: the Host is never trusted.
      ['htu from the Host header', await proof(holder, '/v1/tasks', { htu: `${broker.url}/v1/tasks` }), /htu must be this request's URI, https:\/\/broker\.test\/v1\/tasks/],
      ['stale iat', await proof(holder, '/v1/tasks', { iat: now - 120 }), /iat is more than 60s from/],
      ['iat in the future', await proof(holder, '/v1/tasks', { iat: now + 120 }), /iat is more than 60s from/],
      ['typ wrong', await proof(holder, '/v1/tasks', { header: { typ: 'JWT' } }), /typ "dpop\+jwt"/],
      ['a symmetric alg', hs(claimsOf('/v1/tasks', {}), 'HS256'), /alg must be an asymmetric one/],
      ['alg none', hs(claimsOf('/v1/tasks', {}), 'none'), /alg must be an asymmetric one/],
      ['a private key in jwk', await proof(holder, '/v1/tasks', { header: { jwk: privateJwk } }), /jwk must be a public key/],
      ['no jwk', await proof(holder, '/v1/tasks', { header: { jwk: undefined } }), /public key as "jwk"/],
      ['a jwk that did not sign', await proof(holder, '/v1/tasks', { header: { jwk: (await newHolder()).jwk } }), /signature does not verify/],
      ['no jti', await proof(holder, '/v1/tasks', { jti: '' }), /jti/],
      ['not a JWT', 'not-a-jwt', /not a well-formed JWT/],
      ['an RSA key under 2048 bits', rsa1024(claimsOf('/v1/tasks', {})), /at least 2048 bits/],
      ['a key of another algorithm', p384AsEs256(claimsOf('/v1/tasks', {})), /not a ES256 key/],
    ];
    for (const [name, dpop, description] of cases) {
      const res = await start(broker, dpop);
      expect(res.json.error_description, name).toMatch(description);
      expectProofError(res, description);
    }
    expect(await state(broker.prefix)).toEqual(before);
  });

  it('accepts an htu that differs only by normalisation, query or fragment', async () => {
    const holder = await newHolder();
    for (const htu of ['HTTPS://Broker.TEST:443/v1/%74asks', 'https://broker.test/v1/tasks?x=1#f'])
      expect((await start(broker, await proof(holder, '/v1/tasks', { htu }))).status, htu).toBe(201);
  });

  it('refuses a second use of a proof (its jti), on Redis and on the memory store', async () => {
    for (const b of [broker, memoryBroker]) {
      const dpop = await proof(await newHolder(), '/v1/tasks');
      expect((await start(b, dpop)).status).toBe(201);
      const before = b === broker ? await state(broker.prefix) : undefined;
      expectProofError(await start(b, dpop), /already used/);
      if (before) expect(await state(broker.prefix)).toEqual(before);
    }
  });

  it('keeps a used jti in the workload slot for as long as the proof is acceptable', async () => {
    const holder = await newHolder();
    const iat = Math.floor(Date.now() / 1000);
    expect((await start(broker, await proof(holder, '/v1/tasks', { iat }))).status).toBe(201);
    const keys = await redis.keys(`${broker.prefix}{w:*}:dpop:*`);
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(120_000);
    }
  });

  it('refuses two DPoP headers', async () => {
    const holder = await newHolder();
    const headers = new Headers({ 'content-type': 'application/json' });
    headers.append('dpop', await proof(holder, '/v1/tasks'));
    headers.append('dpop', await proof(holder, '/v1/tasks'));
    const res = await fetch(`${broker.url}/v1/tasks`, { method: 'POST', headers, body: JSON.stringify({ attestation: { kind: 'oidc', token: await saToken() }, intent }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error_description: string }).error_description).toMatch(/exactly one DPoP header/);
  });
});

describe('renewing a DPoP-bound grant', () => {
  async function bound() {
    const holder = await newHolder();
    const res = await start(broker, await proof(holder, '/v1/tasks'));
    expect(res.status).toBe(201);
    return { holder, grant: res.json.grant as string, token: res.json.access_token as string };
  }

  it('needs a proof by the same key, with the ath of the presented token', async () => {
    const { holder, grant, token } = await bound();
    const path = `/v1/tasks/${grant}/renew`;
    const before = await state(broker.prefix);
    expectProofError(await renew(broker, grant, token, undefined), /bound to a DPoP key: send a DPoP proof/);
    expectProofError(await renew(broker, grant, token, await proof(await newHolder(), path, { ath: ath(token) })), /another key/);
    expectProofError(await renew(broker, grant, token, await proof(holder, path, { ath: ath('another token') })), /ath must be/);
    expectProofError(await renew(broker, grant, token, await proof(holder, path)), /ath must be/);
    expectProofError(await renew(broker, grant, token, await proof(holder, '/v1/tasks', { ath: ath(token) })), /htu must be/);
    expect(await state(broker.prefix)).toEqual(before);
    // The token may also travel as Bearer: the proof is what counts.
    expect((await renew(broker, grant, token, await proof(holder, path, { ath: ath(token) }), 'Bearer')).status).toBe(200);
  });

  it('refuses a proof with a grant that is not DPoP-bound (the binding never changes)', async () => {
    const res = await start(broker, undefined);
    const grant = res.json.grant as string;
    const token = res.json.access_token as string;
    expectProofError(await renew(broker, grant, token, await proof(await newHolder(), `/v1/tasks/${grant}/renew`, { ath: ath(token) }), 'Bearer'), /not bound to a DPoP key/);
  });
});

describe('policy require_binding', () => {
  it('dpop: denies an unbound request with the binding reason, allows a DPoP-bound one', async () => {
    const ledger = { audience: 'db.ledger', actions: ['read'], purpose: 'ledger' };
    const denied = await start(broker, undefined, { namespace: 'ledger', intent: ledger });
    expect(denied.status).toBe(403);
    expect(denied.json.error).toBe('access_denied');
    expect(denied.json.error_description).toMatch(/a bound token is required \(send a DPoP proof\)/);
    const allowed = await start(broker, await proof(await newHolder(), '/v1/tasks'), { namespace: 'ledger', intent: ledger });
    expect(allowed.status).toBe(201);
    expect(allowed.json.rule).toBe('ledger-dpop');
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    expect(metrics).toMatch(/reason="policy_binding"/);
  });

  it('true keeps meaning mtls: a DPoP proof does not meet it', async () => {
    const res = await start(broker, await proof(await newHolder(), '/v1/tasks'), { namespace: 'audit', intent: { audience: 'db.audit', actions: ['read'], purpose: 'audit' } });
    expect(res.status).toBe(403);
    expect(res.json.error_description).toMatch(/present a client certificate/);
  });
});

describe('server nonces', () => {
  it('asks for a nonce with use_dpop_nonce and DPoP-Nonce, accepts the one it sent, refuses an old one', async () => {
    const holder = await newHolder();
    const missing = await start(nonceBroker, await proof(holder, '/v1/tasks'));
    expect(missing.status).toBe(400);
    expect(missing.json.error).toBe('use_dpop_nonce');
    const nonce = missing.headers.get('dpop-nonce');
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{16,}$/);

    const ok = await start(nonceBroker, await proof(holder, '/v1/tasks', { nonce: nonce! }));
    expect(ok.status).toBe(201);
    expect(ok.headers.get('dpop-nonce')).toBe(nonce);

    // Two rotations later the nonce is no longer accepted; the answer carries the current one.
    skew += 120_000;
    const iat = Math.floor((Date.now() + skew) / 1000);
    const old = await start(nonceBroker, await proof(holder, '/v1/tasks', { nonce: nonce!, iat }));
    expect(old.status).toBe(400);
    expect(old.json.error).toBe('use_dpop_nonce');
    const fresh = old.headers.get('dpop-nonce');
    expect(fresh).not.toBe(nonce);
    expect((await start(nonceBroker, await proof(holder, '/v1/tasks', { nonce: fresh!, iat }))).status).toBe(201);
    expect((await start(nonceBroker, await proof(holder, '/v1/tasks', { nonce: 'made-up-nonce-value', iat }))).json.error).toBe('use_dpop_nonce');
  });

  it('sends no DPoP-Nonce when nonces are not configured', async () => {
    const res = await start(broker, await proof(await newHolder(), '/v1/tasks'));
    expect(res.headers.get('dpop-nonce')).toBeNull();
  });
});
