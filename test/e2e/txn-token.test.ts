import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { requireTxnToken, type TxnVariables } from '../../src/hono/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { BrokerRuntime } from '../../src/server.js';
import { createNodeTxnVerifier, createVerifier, sendChallenge, txnTokenHeader, type TaskTokenError, type Verifier, type VerifierOptions } from '../../src/verify/index.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { grantState } from '../helpers/grant-state.js';
import { redisUrl } from '../helpers/redis.js';

/**
 * Transaction Tokens (draft-ietf-oauth-transaction-tokens) over real HTTP, a real Redis and the
 * real local OIDC issuer: requested at the token endpoint, recorded as grants, introspected and
 * revoked, and verified from the `Txn-Token` header by the resource-server verifier.
 */
const ISSUER = 'https://broker.test';
const TRUST_DOMAIN = 'payments.example.org';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const TXN_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:txn_token';
const RS_CREDENTIAL = 'rs-txn-credential-0123456789abcdef';
const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

const policies: ConfigInput['policies'] = [
  { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
  { name: 'payments-txn', workloads: ['k8s://test/ns/payments/sa/*'], audiences: [TRUST_DOMAIN], actions: ['read', 'refund'], resources: ['db://payments/**'] },
];
const resource_servers = [{ name: 'rs', audiences: ['db.payments', TRUST_DOMAIN], credential_sha256: sha256(RS_CREDENTIAL) }];

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let plain: BrokerRuntime & { prefix: string };
let redis: Redis;
const verifiers: Verifier[] = [];

type Params = Record<string, string | string[]>;

async function post(path: string, params: Params, headers: Record<string, string> = {}, url = broker.url) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const one of [v].flat()) body.append(k, one);
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: body.toString() });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, any> };
}

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

const detail = (over: Record<string, unknown> = {}) => JSON.stringify([{ type: 'jit_task', actions: ['read'], resources: ['db://payments/orders/42'], identifier: 'refund-42', ...over }]);

/** A Txn-Token request (the draft's "Txn-Token Request"): audience the trust domain, scope the purpose. */
async function requestTxn(extra: Params = {}, headers: Record<string, string> = {}, url = broker.url) {
  return post(
    '/oauth2/token',
    {
      grant_type: EXCHANGE,
      subject_token: await saToken(),
      subject_token_type: JWT_TYPE,
      requested_token_type: TXN_TOKEN_TYPE,
      audience: TRUST_DOMAIN,
      scope: 'refund order 42',
      authorization_details: detail(),
      ...extra,
    },
    headers,
    url,
  );
}

async function txnToken(extra: Params = {}): Promise<string> {
  const res = await requestTxn(extra);
  expect(res.status, JSON.stringify(res.json)).toBe(200);
  return res.json.access_token as string;
}

const asRs = { authorization: `Bearer ${RS_CREDENTIAL}` };
const introspect = async (token: string) => (await post('/oauth2/introspect', { token }, asRs)).json;

function verifier(over: Partial<VerifierOptions> = {}): Verifier {
  const v = createVerifier({ issuer: ISSUER, audience: 'db.payments', jwksUri: `${broker.url}/.well-known/jwks.json`, trustDomain: TRUST_DOMAIN, ...over });
  verifiers.push(v);
  return v;
}

async function rejection(p: Promise<unknown>): Promise<TaskTokenError> {
  try {
    await p;
  } catch (e) {
    return e as TaskTokenError;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, { issuer: ISSUER, policies, resource_servers, txn_tokens: { trust_domain: TRUST_DOMAIN, ttl: '1m' } });
  plain = await startTestBroker(issuer, { issuer: ISSUER, policies, resource_servers });
  redis = new Redis(redisUrl());
}, 30_000);

afterAll(async () => {
  for (const v of verifiers) v.close();
  await broker?.close();
  await plain?.close();
  await issuer?.close();
  redis?.disconnect();
});

describe('Txn-Token request (token exchange, requested_token_type txn_token)', () => {
  it('returns a txntoken+jwt with exactly the draft claims, token_type N_A', async () => {
    const res = await requestTxn();
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    // RFC 8693 §2.2.1: not an access token, so N_A; never a refresh token; the scope (purpose) is as asked.
    expect(res.json).toEqual({ access_token: expect.any(String), issued_token_type: TXN_TOKEN_TYPE, token_type: 'N_A', expires_in: 60 });
    const token = res.json.access_token as string;
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', kid: expect.any(String), typ: 'txntoken+jwt' });
    const claims = decodeJwt(token);
    expect(claims).toEqual({
      iss: ISSUER,
      iat: expect.any(Number),
      exp: (claims.iat as number) + 60,
      aud: TRUST_DOMAIN,
      txn: 'refund-42',
      sub: WORKLOAD,
      scope: 'refund order 42',
      req_wl: WORKLOAD,
      tctx: { actions: ['read'], resources: ['db://payments/orders/42'] },
      rctx: { req_ip: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$/), authn: 'oidc' },
      jti: expect.any(String),
      grant: expect.any(String),
    });
  });

  it('is recorded as a grant: introspects active from its record, and inactive once revoked (RFC 7009)', async () => {
    const token = await txnToken();
    const { grant, jti, exp } = decodeJwt(token) as { grant: string; jti: string; exp: number };
    expect(await introspect(token)).toEqual({
      active: true,
      iss: ISSUER,
      sub: WORKLOAD,
      aud: TRUST_DOMAIN,
      scope: 'refund order 42',
      token_type: 'N_A',
      iat: expect.any(Number),
      exp,
      jti,
      grant,
      txn: 'refund-42',
      req_wl: WORKLOAD,
      tctx: { actions: ['read'], resources: ['db://payments/orders/42'] },
      expires_in: expect.any(Number),
      // The grant lives as long as its one token.
      grant_exp: exp,
      rule: 'payments-txn',
    });
    const revoked = await post('/oauth2/revoke', { token }, asRs);
    expect(revoked.status).toBe(200);
    expect(await introspect(token)).toEqual({ active: false });
  });

  it('is refused when Transaction Tokens are not configured', async () => {
    const res = await requestTxn({}, {}, plain.url);
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ error: 'invalid_request', error_description: `requested_token_type "${TXN_TOKEN_TYPE}" is not enabled on this broker` });
  });

  it.each([
    ['another audience', { audience: 'db.payments' }, 'invalid_target', /trust domain "payments\.example\.org"/],
    ['no audience', { audience: [] }, 'invalid_request', /audience is required/],
    ['no scope (the purpose)', { scope: [] }, 'invalid_request', /scope is required/],
    ['no actions', { authorization_details: detail({ actions: undefined }) }, 'invalid_authorization_details', /name the actions/],
    ['a purpose in authorization_details', { authorization_details: detail({ purpose: 'x' }) }, 'invalid_authorization_details', /scope parameter/],
    ['an action the policy does not grant', { authorization_details: detail({ actions: ['delete'] }) }, 'invalid_scope', /delete/],
  ] as const)('refuses %s, writing nothing', async (_name, extra, error, description) => {
    const before = await grantState(redis, broker.prefix);
    const res = await requestTxn(extra as Params);
    expect(res.status, JSON.stringify(res.json)).toBe(400);
    expect(res.json.error).toBe(error);
    expect(res.json.error_description).toMatch(description);
    expect(await grantState(redis, broker.prefix)).toEqual(before);
  });

  it('refuses an actor_token: the requester is the subject', async () => {
    const res = await requestTxn({ actor_token: await saToken(), actor_token_type: JWT_TYPE });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/actor_token/) });
  });

  it('refuses a DPoP proof (a Txn-Token is never bound) and client_credentials', async () => {
    const dpop = await requestTxn({}, { dpop: 'x.y.z' });
    expect(dpop.status).toBe(400);
    expect(dpop.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/never bound/) });
    const cc = await post('/oauth2/token', { grant_type: 'client_credentials', requested_token_type: TXN_TOKEN_TYPE, audience: TRUST_DOMAIN, scope: 'x' });
    expect(cc.status).toBe(400);
    expect(cc.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/token exchange/) });
  });

  it('is no task token: renewing or ending its grant with it is refused', async () => {
    const token = await txnToken();
    const { grant } = decodeJwt(token) as { grant: string };
    for (const op of ['renew', 'end']) {
      const res = await fetch(`${broker.url}/v1/tasks/${grant}/${op}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ attestation: { kind: 'oidc', token: await saToken() } }) });
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ error: 'invalid_token', error_description: expect.stringMatching(/typ must be at\+jwt/) });
    }
    expect(await introspect(token)).toMatchObject({ active: true });
  });

  it('config: a ttl beyond minutes is refused at load', () => {
    expect(() => parseConfig({ issuer: ISSUER, store: { kind: 'memory' }, txn_tokens: { trust_domain: TRUST_DOMAIN, ttl: '10m' } })).toThrow(/txn_tokens\.ttl/);
  });
});

describe('verifier: Txn-Tokens in the Txn-Token header', () => {
  it('accepts a valid Txn-Token, with its grant live by introspection', async () => {
    const token = await txnToken();
    const v = verifier({ introspection: { url: `${broker.url}/oauth2/introspect`, credential: RS_CREDENTIAL } });
    const txn = await v.verifyTxnToken(token);
    expect(txn).toMatchObject({
      workload: WORKLOAD,
      requester: WORKLOAD,
      transaction: 'refund-42',
      purpose: 'refund order 42',
      context: { actions: ['read'], resources: ['db://payments/orders/42'] },
      requestContext: { authn: 'oidc' },
      introspected: true,
    });
    await post('/oauth2/revoke', { token }, asRs);
    expect((await rejection(verifier({ introspection: { url: `${broker.url}/oauth2/introspect`, credential: RS_CREDENTIAL } }).verifyTxnToken(token))).code).toBe('grant_inactive');
  });

  it('refuses another trust domain, an expired Txn-Token, and an access token passed as a Txn-Token', async () => {
    const token = await txnToken();
    expect((await rejection(verifier({ trustDomain: 'other.example.org' }).verifyTxnToken(token))).code).toBe('wrong_audience');
    expect((await rejection(verifier({ clock: () => Date.now() + 10 * 60_000 }).verifyTxnToken(token))).code).toBe('token_expired');
    const access = await post('/oauth2/token', { grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', scope: 'read', resource: 'db://payments/orders/42' });
    expect(access.status, JSON.stringify(access.json)).toBe(200);
    const wrongType = await rejection(verifier().verifyTxnToken(access.json.access_token as string));
    expect([wrongType.code, wrongType.message]).toEqual(['wrong_type', 'the token is not a Txn-Token (typ must be txntoken+jwt)']);
  });

  it('the task-token verifier refuses a Txn-Token passed as an access token', async () => {
    const token = await txnToken();
    const err = await rejection(verifier({ audience: TRUST_DOMAIN }).verify(token));
    expect([err.code, err.message]).toEqual(['wrong_type', 'the token is not a task token (typ must be at+jwt)']);
  });

  it('without trustDomain, verifyTxnToken refuses to run', async () => {
    const token = await txnToken();
    await expect(verifier({ trustDomain: undefined }).verifyTxnToken(token)).rejects.toThrow(/trustDomain/);
  });

  it('hono requireTxnToken reads exactly one Txn-Token header', async () => {
    const v = verifier();
    const app = new Hono<{ Variables: TxnVariables }>();
    app.get('/refund', requireTxnToken({ verifier: v }), (c) => c.json({ txn: c.get('txn').transaction, purpose: c.get('txn').purpose }));
    const token = await txnToken();
    const ok = await app.request('/refund', { headers: { 'txn-token': token } });
    expect([ok.status, await ok.json()]).toEqual([200, { txn: 'refund-42', purpose: 'refund order 42' }]);
    const missing = await app.request('/refund', { headers: { authorization: `Bearer ${token}` } });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: 'invalid_request', error_description: 'a Transaction Token is required (Txn-Token header)' });
    expect(() => txnTokenHeader(`${token}, ${token}`)).toThrow(/more than one Txn-Token header/);
    expect(() => txnTokenHeader([token, token])).toThrow(/more than one Txn-Token header/);
  });

  it('createNodeTxnVerifier serves node:http over real HTTP', async () => {
    const check = createNodeTxnVerifier(verifier());
    const server = createServer((req, res) => {
      check(req).then(
        (txn) => res.end(JSON.stringify({ txn: txn.transaction, workload: txn.workload })),
        (err: unknown) => sendChallenge(res, err),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/refund`;
      const token = await txnToken();
      const ok = await fetch(url, { headers: { 'Txn-Token': token } });
      expect([ok.status, await ok.json()]).toEqual([200, { txn: 'refund-42', workload: WORKLOAD }]);
      const missing = await fetch(url);
      expect(missing.status).toBe(401);
      const task = await fetch(url, { headers: { 'Txn-Token': 'a.b.c' } });
      expect([task.status, ((await task.json()) as { error: string }).error]).toEqual([401, 'invalid_token']);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
