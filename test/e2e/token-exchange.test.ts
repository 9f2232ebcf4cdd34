import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import { calculateJwkThumbprint, CompactSign, decodeJwt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { UNSTATED_PURPOSE } from '../../src/oauth/token-endpoint.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { grantState } from '../helpers/grant-state.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';
import { redisUrl } from '../helpers/redis.js';

/**
 * POST /oauth2/token over real HTTP, a real Redis and the real local OIDC issuer: RFC 8693 token
 * exchange with a platform token as the subject token, and client credentials over real mTLS.
 * The broker's issuer is https://broker.test while it listens on 127.0.0.1 (DPoP `htu` names the issuer).
 */
const ISSUER = 'https://broker.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const RS_CREDENTIAL = 'rs-exchange-credential-0123456789abcdef';
const ORDERS = 'https://orders.example/api';
const SPIFFE_ID = 'spiffe://example.org/ns/payments/sa/api';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

const policies: ConfigInput['policies'] = [
  { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*', 'spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
  { name: 'orders', workloads: ['k8s://test/ns/payments/sa/*'], audiences: [ORDERS], actions: ['read'], resources: [ORDERS, `${ORDERS}/**`] },
  { name: 'ledger-dpop', workloads: ['k8s://test/ns/ledger/sa/*'], audiences: ['db.ledger'], actions: ['read'], require_binding: 'dpop' },
];

let issuer: OidcIssuer;
let stranger: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let tlsBroker: BrokerRuntime & { prefix: string };
let pki: TestPki;
let files: ReturnType<typeof scratchDir>;
let redis: Redis;

const saToken = (namespace = 'payments') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

type Params = Record<string, string | string[]>;

function form(params: Params): string {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const one of [v].flat()) body.append(k, one);
  return body.toString();
}

async function token(params: Params, headers: Record<string, string> = {}, url = broker.url) {
  const res = await fetch(`${url}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: form(params) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, any> };
}

async function exchange(extra: Params, headers: Record<string, string> = {}) {
  return token({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...extra }, headers);
}

async function introspect(accessToken: string, url = broker.url) {
  const res = await fetch(`${url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token: accessToken }).toString(),
  });
  return (await res.json()) as Record<string, any>;
}

const detail = (over: Record<string, unknown> = {}) =>
  JSON.stringify([{ type: 'jit_task', locations: ['db.payments'], actions: ['read'], resources: ['db://payments/orders'], purpose: 'nightly reconciliation', identifier: 'recon-7', ...over }]);

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  stranger = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  files = scratchDir();
  const resource_servers = [{ name: 'rs', audiences: ['db.payments', ORDERS, 'db.ledger'], credential_sha256: sha256(RS_CREDENTIAL) }];
  broker = await startTestBroker(issuer, { issuer: ISSUER, policies, resource_servers });
  tlsBroker = await startTestBroker(issuer, {
    issuer: ISSUER,
    policies,
    resource_servers,
    tls: { cert: files.write('server.pem', pki.server.chainPem), key: files.write('server-key.pem', pki.server.keyPem), client_ca_bundles: { 'example.org': files.write('example.org.pem', pki.example.certPem) } },
    attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] }, x509: {} },
  });
  redis = new Redis(redisUrl());
}, 30_000);

afterAll(async () => {
  await broker?.close();
  await tlsBroker?.close();
  await issuer?.close();
  await stranger?.close();
  files?.cleanup();
  redis?.disconnect();
});

describe('token exchange (RFC 8693)', () => {
  it('exchanges a platform token for a task token that introspects active with the granted intent', async () => {
    const res = await exchange({ audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.json).toEqual({ access_token: expect.any(String), issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: 300 });
    const claims = decodeJwt(res.json.access_token as string);
    expect(claims).toMatchObject({ iss: ISSUER, sub: 'k8s://test/ns/payments/sa/api', aud: 'db.payments', scope: 'read' });
    expect(await introspect(res.json.access_token as string)).toMatchObject({
      active: true,
      aud: 'db.payments',
      scope: 'read',
      token_type: 'Bearer',
      rule: 'payments',
      authorization_details: [{ type: 'jit_task', locations: ['db.payments'], actions: ['read'], resources: ['db://payments/orders'], purpose: UNSTATED_PURPOSE }],
    });
  });

  it('reads audience, actions, resources, purpose and task id from authorization_details (RFC 9396)', async () => {
    const res = await exchange({ authorization_details: detail(), subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', requested_token_type: ACCESS_TOKEN_TYPE });
    expect(res.status).toBe(200);
    // No scope parameter was sent: the granted scope is named (RFC 6749 §5.1).
    expect(res.json.scope).toBe('read');
    const active = await introspect(res.json.access_token as string);
    expect(active).toMatchObject({ active: true, aud: 'db.payments', txn: 'recon-7' });
    expect(active.authorization_details).toEqual([
      { type: 'jit_task', locations: ['db.payments'], actions: ['read'], resources: ['db://payments/orders'], purpose: 'nightly reconciliation', identifier: 'recon-7' },
    ]);
  });

  it('merges scope with the detail\'s actions and names the granted scope when it differs', async () => {
    const res = await exchange({ scope: 'write', authorization_details: detail() });
    expect(res.status).toBe(200);
    expect(res.json.scope).toBe('write read');
  });

  it('maps a resource without audience to the audience and the resource list (RFC 8707)', async () => {
    const res = await exchange({ resource: ORDERS, scope: 'read' });
    expect(res.status).toBe(200);
    expect(await introspect(res.json.access_token as string)).toMatchObject({ active: true, aud: ORDERS, authorization_details: [{ resources: [ORDERS] }] });
  });

  it('takes several resources under one audience parameter', async () => {
    const resource = [`${ORDERS}/orders/1`, `${ORDERS}/orders/2`];
    const res = await exchange({ audience: ORDERS, resource, scope: 'read' });
    expect(res.status).toBe(200);
    expect(await introspect(res.json.access_token as string)).toMatchObject({ active: true, aud: ORDERS, authorization_details: [{ resources: resource }] });
  });

  it('binds the token to the key of a DPoP proof (RFC 9449), htu = issuer + /oauth2/token', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const proof = (htu: string) =>
      new CompactSign(new TextEncoder().encode(JSON.stringify({ jti: `p-${Math.random()}`, htm: 'POST', htu, iat: Math.floor(Date.now() / 1000) })))
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey);
    const params = { subject_token: await saToken('ledger'), audience: 'db.ledger', scope: 'read' };
    const res = await exchange(params, { dpop: await proof(`${ISSUER}/oauth2/token`) });
    expect(res.status).toBe(200);
    expect(res.json.token_type).toBe('DPoP');
    const jkt = await calculateJwkThumbprint(jwk, 'sha256');
    expect(decodeJwt(res.json.access_token as string).cnf).toEqual({ jkt });
    expect(await introspect(res.json.access_token as string)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt } });

    const elsewhere = await exchange(params, { dpop: await proof(`${ISSUER}/v1/tasks`) });
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.json.error).toBe('invalid_dpop_proof');
    // The rule requires DPoP: without a proof the subject is unacceptable by policy.
    const unbound = await exchange(params);
    expect(unbound.status).toBe(400);
    expect(unbound.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/dpop/i) });
  });
});

describe('client credentials with tls_client_auth (RFC 8705)', () => {
  const request = (params: Params, cred?: { chainPem: string; keyPem: string }) =>
    httpsJson(`${tlsBroker.url}/oauth2/token`, {
      ca: pki.example.certPem,
      ...(cred ? { cert: cred.chainPem, key: cred.keyPem } : {}),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form(params),
    });

  it('issues a certificate-bound task token on the client certificate of the handshake', async () => {
    const cred = await issueCertificate(pki.example, { uris: [SPIFFE_ID] });
    const res = await request({ grant_type: 'client_credentials', client_id: SPIFFE_ID, audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' }, cred);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ token_type: 'Bearer', issued_token_type: ACCESS_TOKEN_TYPE });
    expect(res.json.refresh_token).toBeUndefined();
    const x5t = createHash('sha256').update(cred.der).digest('base64url');
    expect(decodeJwt(res.json.access_token as string)).toMatchObject({ sub: SPIFFE_ID, client_id: SPIFFE_ID, cnf: { 'x5t#S256': x5t } });
  });

  it('refuses without a certificate, and a client_id that is not the certificate\'s workload (401 invalid_client)', async () => {
    const before = await grantState(redis, tlsBroker.prefix);
    const bare = await request({ grant_type: 'client_credentials', audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' });
    expect(bare.status).toBe(401);
    expect(bare.json).toMatchObject({ error: 'invalid_client', error_description: expect.stringMatching(/tls_client_auth/) });
    const cred = await issueCertificate(pki.example, { uris: [SPIFFE_ID] });
    const other = await request({ grant_type: 'client_credentials', client_id: 'spiffe://example.org/ns/other', audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' }, cred);
    expect(other.status).toBe(401);
    expect(other.json).toMatchObject({ error: 'invalid_client', error_description: expect.stringMatching(/client_id/) });
    expect(await grantState(redis, tlsBroker.prefix)).toEqual(before);
  });
});

describe('refusals: RFC 8693 §2.2.2 / RFC 6749 §5.2 codes, and nothing written', () => {
  let before: Record<string, unknown>;
  beforeAll(async () => {
    expect((await exchange({ audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' })).status).toBe(200);
  });
  beforeEach(async () => {
    before = await grantState(redis, broker.prefix);
    expect(Object.keys(before).some((k) => k.includes(':grant:'))).toBe(true); // the snapshot sees grants
  });

  const base = { audience: 'db.payments', scope: 'read', resource: 'db://payments/orders' };
  const cases: Array<[string, () => Promise<Params>, number, string, RegExp]> = [
    ['no grant_type', async () => ({ subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /grant_type is required/],
    ['unknown grant_type', async () => ({ grant_type: 'password', subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base }), 400, 'unsupported_grant_type', /grant_type must be/],
    ['no subject_token', async () => ({ grant_type: EXCHANGE, subject_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /subject_token is required/],
    ['no subject_token_type', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), ...base }), 400, 'invalid_request', /subject_token_type is required/],
    ['wrong subject_token_type', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: ACCESS_TOKEN_TYPE, ...base }), 400, 'invalid_request', /subject_token_type must be one of/],
    ['subject token that does not verify', async () => ({ grant_type: EXCHANGE, subject_token: await issuer.mintWithForeignKey({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }), subject_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /subject_token: .*signature/],
    ['subject token of an unknown issuer', async () => ({ grant_type: EXCHANGE, subject_token: await stranger.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE }), subject_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /subject_token: .*not trusted/],
    ['requested_token_type not issued', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token', ...base }), 400, 'invalid_request', /requested_token_type .* is not supported/],
    ['actor_token', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, actor_token: 'x', actor_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /actor_token is not supported/],
    ['audience the policy does not grant', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, audience: 'db.hr' }), 400, 'invalid_target', /audience "db.hr"/],
    ['resource the policy does not grant', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, resource: 'db://hr/salaries' }), 400, 'invalid_target', /resource "db:\/\/hr\/salaries"/],
    ['resource that is not an absolute URI (RFC 8707 §2)', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, resource: 'payments/orders' }), 400, 'invalid_target', /resource must be an absolute URI/],
    ['two audiences', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, audience: ['db.payments', ORDERS] }), 400, 'invalid_target', /exactly one audience/],
    ['malformed resource', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, resource: 'db://payments/../hr' }), 400, 'invalid_target', /resource\[0\]: must not contain "\." or "\.\."/],
    ['no target', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, scope: 'read' }), 400, 'invalid_request', /name the target/],
    ['action the policy does not grant', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, scope: 'read drop' }), 400, 'invalid_scope', /action "drop" not allowed/],
    ['no scope', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', resource: 'db://payments/orders' }), 400, 'invalid_scope', /name the actions/],
    ['workload no rule names', async () => ({ grant_type: EXCHANGE, subject_token: await saToken('hr'), subject_token_type: JWT_TYPE, ...base }), 400, 'invalid_request', /no policy rule allows workload/],
    ['authorization_details not JSON', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, authorization_details: '[{"type":' }), 400, 'invalid_authorization_details', /not valid JSON/],
    ['authorization_details of an unknown type', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, authorization_details: '[{"type":"payment_initiation"}]' }), 400, 'invalid_authorization_details', /type/],
    ['authorization_details with an unknown member', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, ...base, authorization_details: detail({ admin: true }) }), 400, 'invalid_authorization_details', /admin/],
    ['a repeated parameter', async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: [JWT_TYPE, JWT_TYPE], ...base }), 400, 'invalid_request', /"subject_token_type" is repeated/],
  ];

  it.each(cases)('%s', async (_name, makeParams, status, error, description) => {
    const res = await token(await makeParams());
    expect(res.status).toBe(status);
    expect(res.json.error).toBe(error);
    expect(res.json.error_description).toMatch(description);
    expect(JSON.stringify(res.json)).not.toMatch(/eyJ/); // never echoes a token
    expect(await grantState(redis, broker.prefix)).toEqual(before);
  });

  it('refuses a JSON body', async () => {
    const res = await fetch(`${broker.url}/oauth2/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: EXCHANGE }) });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/x-www-form-urlencoded/) });
    expect(await grantState(redis, broker.prefix)).toEqual(before);
  });
});
