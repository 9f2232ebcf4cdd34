/**
 * Interop with openid-client 6 (the certified Node OAuth client, independent of this project)
 * acting as a resource server against a running broker: real TLS with the dev CA, real Redis,
 * the real local OIDC issuer. The broker's issuer has a path (https://127.0.0.1:PORT/tenant), so
 * every request here also checks that the routes are served where the metadata says they are.
 */
import 'reflect-metadata';
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, issuerEntry, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';
import { httpsFetch } from './https-fetch.js';
import { BrokerClient, platformToken } from '../../src/sdk/index.js';

const RS = 'rs-db';
const RS_SECRET = 'rs-db-secret-0123456789abcdefghijklmnop';
const RS_SPIFFE = 'spiffe://example.org/rs/db';
const WORKLOAD = 'k8s://test/ns/payments/sa/api';
/** An agent the payments rule lets act for its workloads (RFC 8693 delegation). */
const AGENT = 'k8s://test/ns/agents/sa/api';
const TRUST_DOMAIN = 'payments.example.org';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders/*'], purpose: 'interop', task: 'interop-1' };

/**
 * The IANA "OAuth Token Endpoint Authentication Methods" registry, as it lists them
 * (https://www.iana.org/assignments/oauth-parameters/), and the "OAuth Access Token Types" the
 * introspection list may also name (RFC 8414 §2): written here, not taken from the broker.
 */
const IANA_AUTH_METHODS = ['none', 'client_secret_post', 'client_secret_basic', 'client_secret_jwt', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth'];
const IANA_ACCESS_TOKEN_TYPES = ['Bearer', 'N_A', 'PoP', 'DPoP'];
/** JWS `alg` values of the IANA "JSON Web Signature and Encryption Algorithms" registry that jose signs with. */
const IANA_JWS_ALGS = ['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'none', 'EdDSA', 'Ed25519'];
/** Grant types: RFC 6749's and the IANA "OAuth URI" registry's grant-type URNs (and CIBA's). */
const IANA_GRANT_TYPES = [
  'authorization_code',
  'implicit',
  'password',
  'client_credentials',
  'refresh_token',
  'urn:ietf:params:oauth:grant-type:jwt-bearer',
  'urn:ietf:params:oauth:grant-type:saml2-bearer',
  'urn:ietf:params:oauth:grant-type:device_code',
  'urn:ietf:params:oauth:grant-type:token-exchange',
  'urn:openid:params:grant-type:ciba',
];

let oidc: OidcIssuer;
let pki: TestPki;
let rsCert: Credential;
let otherCert: Credential;
let selfSigned: Credential;
let rsKey: CryptoKey;
let strangerKey: CryptoKey;
/** One key per key type, registered without `alg` for resource server rs-algs: which algs it may use is the broker's to say. */
const algKeys = new Map<string, KeyObject>();
const keyFor = (alg: string) => (alg.startsWith('RS') || alg.startsWith('PS') ? 'rsa' : alg.startsWith('ES') ? `p${alg.slice(2)}` : 'okp');
let broker: BrokerRuntime;
let ISSUER: string;
let ORIGIN: string;
const files = scratchDir('jit-interop-');

beforeAll(async () => {
  oidc = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  rsCert = await issueCertificate(pki.example, { uris: [RS_SPIFFE] });
  otherCert = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ns/payments/sa/batch'] });
  // A self-signed certificate naming the resource server (self_signed_tls_client_auth).
  selfSigned = await createCA({ trustDomain: 'example.org', commonName: 'rs-db self-signed' });
  const rsPair = await generateKeyPair('ES256');
  rsKey = rsPair.privateKey;
  strangerKey = (await generateKeyPair('ES256')).privateKey;
  const jwksFile = files.write('rs-db.jwks.json', JSON.stringify({ keys: [{ ...(await exportJWK(rsPair.publicKey)), kid: 'rs-db-1', alg: 'ES256', use: 'sig' }] }));

  // node:crypto KeyObjects (a WebCrypto key is bound to one alg; these serve every alg of their type).
  const algJwks: { kty: 'EC' | 'RSA' | 'OKP'; kid: string }[] = [];
  for (const [kid, pair] of [
    ['rsa', generateKeyPairSync('rsa', { modulusLength: 2048 })],
    ['p256', generateKeyPairSync('ec', { namedCurve: 'P-256' })],
    ['p384', generateKeyPairSync('ec', { namedCurve: 'P-384' })],
    ['p512', generateKeyPairSync('ec', { namedCurve: 'P-521' })],
    ['okp', generateKeyPairSync('ed25519')],
  ] as const) {
    algKeys.set(kid, pair.privateKey);
    const jwk = pair.publicKey.export({ format: 'jwk' });
    algJwks.push({ ...jwk, kty: jwk.kty as 'EC' | 'RSA' | 'OKP', kid });
  }

  const port = await freePort();
  ORIGIN = `https://127.0.0.1:${port}`;
  ISSUER = `${ORIGIN}/tenant`;
  broker = await startTestBroker(oidc, {
    issuer: ISSUER,
    listen: { host: '127.0.0.1', port },
    tls: {
      cert: files.write('server.pem', pki.server.chainPem),
      key: files.write('server-key.pem', pki.server.keyPem),
      client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) },
    },
    attestation: { oidc: { issuers: [issuerEntry(oidc)] }, x509: {} },
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], actors: [AGENT] },
      { name: 'payments-txn', workloads: ['k8s://test/ns/payments/sa/*'], audiences: [TRUST_DOMAIN], actions: ['read'], resources: ['db://payments/**'] },
      { name: 'agents', workloads: [AGENT], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
      { name: 'payments-svid', workloads: ['spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], require_binding: true },
    ],
    txn_tokens: { trust_domain: TRUST_DOMAIN, ttl: '1m' },
    // The probes start a task per registered value, all for one workload: more than the default cap of live grants.
    grants: { max_active_per_workload: 1000 },
    resource_servers: [
      { name: RS, audiences: ['db.payments'], credential_sha256: sha256(RS_SECRET), workload: RS_SPIFFE, jwks_file: jwksFile },
      { name: 'rs-algs', audiences: ['db.payments'], jwks: { keys: algJwks } },
    ],
  });
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await oidc?.close();
  files.cleanup();
});

const tls = (cert?: Credential) => ({ ca: pki.example.certPem, ...(cert ? { cert: cert.chainPem, key: cert.keyPem } : {}) });

/** openid-client configured by discovery (RFC 8414, `algorithm: 'oauth2'`) for `clientId` with `auth`. */
async function discover(auth: client.ClientAuth, opts: { clientId?: string; cert?: Credential } = {}): Promise<client.Configuration> {
  const fetch = httpsFetch(tls(opts.cert));
  const config = await client.discovery(new URL(ISSUER), opts.clientId ?? RS, undefined, auth, { algorithm: 'oauth2', [client.customFetch]: fetch });
  config[client.customFetch] = fetch;
  return config;
}

/** A bearer credential as a ClientAuth (openid-client has none built in: it is no token-endpoint method). */
const bearerAuth =
  (credential: string): client.ClientAuth =>
  (_as, _client, _body, headers) => {
    headers.set('authorization', `Bearer ${credential}`);
  };

/** A fixed client assertion, to replay one or send a hand-made one. */
const assertionAuth =
  (assertion: string): client.ClientAuth =>
  (_as, _client, body) => {
    body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    body.set('client_assertion', assertion);
  };

const assertion = (key: CryptoKey | Uint8Array, over: { alg?: string; aud?: string; exp?: number; kid?: string } = {}) =>
  new SignJWT({})
    .setProtectedHeader({ alg: over.alg ?? 'ES256', ...(over.kid !== undefined ? { kid: over.kid } : {}) })
    .setIssuer(RS)
    .setSubject(RS)
    .setAudience(over.aud ?? ISSUER)
    .setJti(crypto.randomUUID())
    .setIssuedAt()
    .setExpirationTime(over.exp ?? Math.floor(Date.now() / 1000) + 60)
    .sign(key);

/** A task token: on a platform token (unbound), or on a client certificate (bound to it, cnf.x5t#S256). */
async function startTask(cert?: Credential): Promise<string> {
  const evidence = cert ? {} : { attestation: { kind: 'oidc', token: await oidc.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 }) } };
  const res = await httpsJson(`${ISSUER}/v1/tasks`, { ...tls(cert), body: { ...evidence, intent } });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.access_token as string;
}

/** Whether the token is active, asked with client_secret_basic. */
async function active(token: string): Promise<boolean> {
  return (await client.tokenIntrospection(await discover(client.ClientSecretBasic(RS_SECRET)), token)).active;
}

/** How openid-client saw a refusal: status, OAuth error code and challenge scheme. */
async function refusal(p: Promise<unknown>): Promise<{ status: number; error?: string; scheme?: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (e instanceof client.WWWAuthenticateChallengeError) {
    const body = (await e.response.json()) as { error?: string };
    return { status: e.status, error: body.error, scheme: e.cause[0]?.scheme };
  }
  if (e instanceof client.ResponseBodyError) return { status: e.status, error: e.error };
  throw new Error(`expected a refusal, got ${e instanceof Error ? `${e.name}: ${e.message}` : 'success'}`);
}

/** Every way a resource server authenticates, as openid-client sends it. */
const methods: Record<string, () => Promise<client.Configuration>> = {
  client_secret_basic: () => discover(client.ClientSecretBasic(RS_SECRET)),
  client_secret_post: () => discover(client.ClientSecretPost(RS_SECRET)),
  private_key_jwt: () => discover(client.PrivateKeyJwt({ key: rsKey, kid: 'rs-db-1' })),
  tls_client_auth: () => discover(client.TlsClientAuth(), { cert: rsCert }),
  bearer: () => discover(bearerAuth(RS_SECRET)),
};

/** The same methods with wrong credentials, and the challenge scheme each refusal carries. */
const wrong: Record<string, { config: () => Promise<client.Configuration>; scheme: string }> = {
  client_secret_basic: { config: () => discover(client.ClientSecretBasic('not-the-secret')), scheme: 'basic' },
  client_secret_basic_unknown_client: { config: () => discover(client.ClientSecretBasic(RS_SECRET), { clientId: 'rs-nobody' }), scheme: 'basic' },
  client_secret_post: { config: () => discover(client.ClientSecretPost('not-the-secret')), scheme: 'bearer' },
  private_key_jwt: { config: () => discover(client.PrivateKeyJwt(strangerKey)), scheme: 'bearer' },
  tls_client_auth: { config: () => discover(client.TlsClientAuth(), { cert: otherCert }), scheme: 'bearer' },
  bearer: { config: () => discover(bearerAuth('not-a-credential')), scheme: 'bearer' },
};

describe('openid-client interop', () => {
  it('discovers the broker from its issuer with a path (RFC 8414 §3.1) and reads metadata without empty arrays', async () => {
    const config = await discover(client.ClientSecretBasic(RS_SECRET));
    const md = config.serverMetadata();
    expect(md.issuer).toBe(ISSUER);
    expect(md.introspection_endpoint).toBe(`${ISSUER}/oauth2/introspect`);
    expect(md.revocation_endpoint).toBe(`${ISSUER}/oauth2/revoke`);
    expect(md.jwks_uri).toBe(`${ISSUER}/.well-known/jwks.json`);
    expect(md.introspection_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth', 'Bearer']);
    expect(md.revocation_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth', 'none']);
    expect(md.introspection_endpoint_auth_signing_alg_values_supported).toContain('ES256');
    expect(md.tls_client_certificate_bound_access_tokens).toBe(true);
    for (const [name, value] of Object.entries(md)) if (Array.isArray(value)) expect(value.length, name).toBeGreaterThan(0);
    // No authorization endpoint, so neither it nor response types are advertised (and no empty list in their place).
    for (const name of ['response_types_supported', 'authorization_endpoint']) expect(md, name).not.toHaveProperty(name);
    expect(md.token_endpoint).toBe(`${ISSUER}/oauth2/token`);
  });

  for (const [method, config] of Object.entries(methods)) {
    it(`introspects and revokes with ${method}`, async () => {
      const token = await startTask();
      const answer = await client.tokenIntrospection(await config(), token);
      expect(answer).toMatchObject({ active: true, sub: WORKLOAD, aud: 'db.payments', client_id: WORKLOAD });
      await client.tokenRevocation(await config(), token);
      expect(await active(token)).toBe(false);
    });
  }

  for (const [method, { config, scheme }] of Object.entries(wrong)) {
    it(`refuses wrong ${method} credentials with 401 invalid_client, at introspection and at revocation (never the holder path)`, async () => {
      const token = await startTask(); // unbound: its holder could revoke it with the token alone
      expect(await refusal(client.tokenIntrospection(await config(), token))).toEqual({ status: 401, error: 'invalid_client', scheme });
      expect(await refusal(client.tokenRevocation(await config(), token))).toEqual({ status: 401, error: 'invalid_client', scheme });
      expect(await active(token)).toBe(true);
    });
  }

  it('refuses a client assertion used twice, one for another audience, one valid too long, and an HMAC one', async () => {
    const token = await startTask();
    const once = await assertion(rsKey, { kid: 'rs-db-1' });
    const config = await discover(assertionAuth(once));
    expect((await client.tokenIntrospection(config, token)).active).toBe(true);
    expect(await refusal(client.tokenIntrospection(config, token))).toMatchObject({ status: 401, error: 'invalid_client' });
    // The endpoint's own URL is an accepted audience; another one is not.
    const endpointAud = await assertion(rsKey, { kid: 'rs-db-1', aud: `${ISSUER}/oauth2/introspect` });
    expect((await client.tokenIntrospection(await discover(assertionAuth(endpointAud)), token)).active).toBe(true);
    const otherAud = await assertion(rsKey, { kid: 'rs-db-1', aud: 'https://elsewhere.example' });
    expect(await refusal(client.tokenIntrospection(await discover(assertionAuth(otherAud)), token))).toMatchObject({ status: 401, error: 'invalid_client' });
    const long = await assertion(rsKey, { kid: 'rs-db-1', exp: Math.floor(Date.now() / 1000) + 3600 });
    expect(await refusal(client.tokenIntrospection(await discover(assertionAuth(long)), token))).toMatchObject({ status: 401, error: 'invalid_client' });
    const hmac = await assertion(new TextEncoder().encode(RS_SECRET), { alg: 'HS256' });
    expect(await refusal(client.tokenIntrospection(await discover(assertionAuth(hmac)), token))).toMatchObject({ status: 401, error: 'invalid_client' });
  });

  it("lets a token's holder revoke it as a public client (none) with its client_id, and not with another's", async () => {
    const token = await startTask();
    await client.tokenRevocation(await discover(client.None(), { clientId: 'k8s://test/ns/payments/sa/batch' }), token).catch(() => undefined);
    expect(await active(token)).toBe(true);
    await client.tokenRevocation(await discover(client.None(), { clientId: WORKLOAD }), token);
    expect(await active(token)).toBe(false);
  });

  it("lets a bound token's holder revoke it as a public client with its certificate, and not without it", async () => {
    const svid = 'spiffe://example.org/ns/payments/sa/batch';
    const token = await startTask(otherCert);
    expect(await refusal(client.tokenRevocation(await discover(client.None(), { clientId: svid }), token))).toMatchObject({ status: 401, error: 'invalid_client' });
    expect(await active(token)).toBe(true);
    await client.tokenRevocation(await discover(client.None(), { clientId: svid, cert: otherCert }), token);
    expect(await active(token)).toBe(false);
  });
});

describe('metadata lists exactly what is accepted', () => {
  /** A form request with the credentials of `method` for the resource server (valid ones, where the method has any). */
  async function attempt(endpoint: 'introspect' | 'revoke', method: string, token: string): Promise<number> {
    const form = new URLSearchParams({ token });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    let cert: Credential | undefined;
    const jwt = (key: CryptoKey | Uint8Array, alg: string) => assertion(key, { alg, ...(alg === 'ES256' ? { kid: 'rs-db-1' } : {}) });
    switch (method) {
      case 'none':
        break;
      case 'client_secret_basic':
        headers.authorization = `Basic ${Buffer.from(`${RS}:${RS_SECRET}`).toString('base64')}`;
        break;
      case 'client_secret_post':
        form.set('client_id', RS);
        form.set('client_secret', RS_SECRET);
        break;
      case 'client_secret_jwt':
      case 'private_key_jwt':
        form.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
        form.set('client_assertion', await (method === 'private_key_jwt' ? jwt(rsKey, 'ES256') : jwt(new TextEncoder().encode(RS_SECRET), 'HS256')));
        break;
      case 'tls_client_auth':
        form.set('client_id', RS);
        cert = rsCert;
        break;
      case 'self_signed_tls_client_auth':
        form.set('client_id', RS);
        cert = selfSigned;
        break;
      default:
        // An access-token type (RFC 6750 and kin): the credential in that scheme.
        headers.authorization = `${method} ${RS_SECRET}`;
    }
    const res = await httpsJson(`${ISSUER}/oauth2/${endpoint}`, { ...tls(cert), method: 'POST', body: form.toString(), headers });
    return res.status;
  }

  it('accepts every listed auth method and lists every accepted registered one, per endpoint', async () => {
    const md = (await httpsJson(`${ORIGIN}/.well-known/oauth-authorization-server/tenant`, { ca: pki.example.certPem })).json;
    for (const [endpoint, listed, candidates] of [
      ['introspect', md.introspection_endpoint_auth_methods_supported as string[], [...IANA_AUTH_METHODS, ...IANA_ACCESS_TOKEN_TYPES]],
      ['revoke', md.revocation_endpoint_auth_methods_supported as string[], IANA_AUTH_METHODS],
    ] as const) {
      for (const method of candidates) {
        const token = await startTask();
        const status = await attempt(endpoint, method, token);
        // Accepted: 200, and the token's grant really was revoked by a revocation.
        const accepted = status === 200 && (endpoint === 'introspect' || !(await active(token)));
        expect({ endpoint, method, accepted }).toEqual({ endpoint, method, accepted: listed.includes(method) });
      }
    }
  });
});

describe('metadata lists exactly what is accepted: algorithms, grant types, bound tokens', () => {
  it('accepts a client assertion in every listed alg and in no other registered one', async () => {
    const md = (await httpsJson(`${ORIGIN}/.well-known/oauth-authorization-server/tenant`, { ca: pki.example.certPem })).json;
    const listed = md.introspection_endpoint_auth_signing_alg_values_supported as string[];
    expect(md.revocation_endpoint_auth_signing_alg_values_supported).toEqual(listed);
    const token = await startTask();
    for (const alg of IANA_JWS_ALGS) {
      const claims = { iss: 'rs-algs', sub: 'rs-algs', aud: ISSUER, jti: crypto.randomUUID(), exp: Math.floor(Date.now() / 1000) + 60 };
      let signed: string;
      if (alg === 'none') signed = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
      else if (alg.startsWith('HS')) signed = await new SignJWT(claims).setProtectedHeader({ alg }).sign(new TextEncoder().encode(RS_SECRET.repeat(2)));
      else signed = await new SignJWT(claims).setProtectedHeader({ alg, kid: keyFor(alg) }).sign(algKeys.get(keyFor(alg))!);
      const form = new URLSearchParams({ token, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: signed });
      const res = await httpsJson(`${ISSUER}/oauth2/introspect`, { ca: pki.example.certPem, method: 'POST', body: form.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      expect({ alg, accepted: res.status === 200 && res.json.active === true }).toEqual({ alg, accepted: listed.includes(alg) });
    }
  });

  it('accepts exactly the grant types it lists at its token endpoint (any other is unsupported_grant_type)', async () => {
    const md = (await httpsJson(`${ORIGIN}/.well-known/oauth-authorization-server/tenant`, { ca: pki.example.certPem })).json;
    const listed = (md.grant_types_supported as string[] | undefined) ?? [];
    expect(listed).toEqual(['urn:ietf:params:oauth:grant-type:token-exchange', 'client_credentials']);
    const endpoint = (md.token_endpoint as string | undefined) ?? `${ISSUER}/oauth2/token`;
    for (const grantType of IANA_GRANT_TYPES) {
      const form = new URLSearchParams({ grant_type: grantType });
      const res = await httpsJson(endpoint, { ...tls(rsCert), method: 'POST', body: form.toString(), headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${RS}:${RS_SECRET}`).toString('base64')}` } });
      // A listed grant type without its parameters is refused for them; an unlisted one as unsupported (RFC 6749 §5.2).
      const accepted = res.json.error !== 'unsupported_grant_type';
      expect({ grantType, accepted }).toEqual({ grantType, accepted: listed.includes(grantType) });
    }
  });

  it('binds tokens issued on a client certificate, as tls_client_certificate_bound_access_tokens says', async () => {
    const md = (await httpsJson(`${ORIGIN}/.well-known/oauth-authorization-server/tenant`, { ca: pki.example.certPem })).json;
    expect(md.tls_client_certificate_bound_access_tokens).toBe(true);
    const token = await startTask(otherCert);
    const answer = await client.tokenIntrospection(await discover(client.ClientSecretBasic(RS_SECRET)), token);
    expect(answer.cnf?.['x5t#S256']).toBe(createHash('sha256').update(otherCert.der).digest('base64url'));
  });
});

describe('routes under the issuer path', () => {
  it('serves every route under /tenant, the metadata at both well-known places, and health at the root too', async () => {
    const get = (path: string) => httpsJson(`${ORIGIN}${path}`, { ca: pki.example.certPem });
    expect((await get('/tenant/.well-known/jwks.json')).json.keys.length).toBeGreaterThan(0);
    expect((await get('/.well-known/oauth-authorization-server/tenant')).json.issuer).toBe(ISSUER);
    expect((await get('/tenant/.well-known/oauth-authorization-server')).json.issuer).toBe(ISSUER);
    expect((await get('/tenant/healthz')).status).toBe(200);
    expect((await get('/healthz')).status).toBe(200);
    // The root is not the issuer: nothing OAuth is served there.
    expect((await get('/.well-known/jwks.json')).status).toBe(404);
    const form = { ca: pki.example.certPem, method: 'POST', body: 'token=x', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_SECRET}` } };
    expect((await httpsJson(`${ORIGIN}/oauth2/introspect`, form)).status).toBe(404);
    expect((await httpsJson(`${ORIGIN}/tenant/oauth2/introspect`, form)).json).toEqual({ active: false });
  });

  it("lets the SDK start and end a task with the issuer's URL (with its path) as its broker URL", async () => {
    const sdk = new BrokerClient({
      url: ISSUER,
      ca: pki.example.certPem,
      attestation: platformToken(() => oidc.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 })),
    });
    const task = await sdk.startTask(intent);
    const token = await task.token();
    expect(await active(token)).toBe(true);
    await task.end();
    expect(await active(token)).toBe(false);
  });
});

describe('metadata lists exactly what is accepted: the token endpoint', () => {
  const metadata = async () => (await httpsJson(`${ORIGIN}/.well-known/oauth-authorization-server/tenant`, { ca: pki.example.certPem })).json;
  const saToken = (namespace = 'payments') => oidc.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
  const target = { audience: 'db.payments', resource: 'db://payments/orders', scope: 'read' };

  /** POST /oauth2/token with `params` as the form; `cert` is presented in the TLS handshake. */
  async function tokenRequest(params: Record<string, string>, opts: { cert?: Credential; headers?: Record<string, string> } = {}) {
    const res = await httpsJson(`${ISSUER}/oauth2/token`, {
      ...tls(opts.cert),
      method: 'POST',
      body: new URLSearchParams(params).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...opts.headers },
    });
    return { status: res.status, json: res.json as Record<string, unknown>, challenge: res.headers['www-authenticate'] };
  }

  /** A token exchange of the workload's platform token for a task token. */
  const exchange = async (): Promise<Record<string, string>> => ({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: await saToken(),
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    ...target,
  });

  it('accepts every listed token endpoint auth method and refuses every other registered one', async () => {
    const md = await metadata();
    const listed = md.token_endpoint_auth_methods_supported as string[];
    const svid = 'spiffe://example.org/ns/payments/sa/batch';
    const accepted: string[] = [];
    for (const method of IANA_AUTH_METHODS) {
      // Each the grant it fits: the exchange for the credential-less and secret/assertion methods (the
      // workload's platform token is its evidence), client credentials for the certificate ones.
      let res: Awaited<ReturnType<typeof tokenRequest>>;
      switch (method) {
        case 'none':
          res = await tokenRequest(await exchange());
          break;
        case 'client_secret_basic':
          res = await tokenRequest(await exchange(), { headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(WORKLOAD)}:a-secret`).toString('base64')}` } });
          break;
        case 'client_secret_post':
          res = await tokenRequest({ ...(await exchange()), client_id: WORKLOAD, client_secret: 'a-secret' });
          break;
        case 'client_secret_jwt':
        case 'private_key_jwt': {
          const key = method === 'private_key_jwt' ? rsKey : new TextEncoder().encode(RS_SECRET);
          const jwt = await new SignJWT({})
            .setProtectedHeader({ alg: method === 'private_key_jwt' ? 'ES256' : 'HS256' })
            .setIssuer(WORKLOAD)
            .setSubject(WORKLOAD)
            .setAudience(ISSUER)
            .setJti(crypto.randomUUID())
            .setIssuedAt()
            .setExpirationTime('1m')
            .sign(key);
          res = await tokenRequest({ ...(await exchange()), client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: jwt });
          break;
        }
        case 'tls_client_auth':
          res = await tokenRequest({ grant_type: 'client_credentials', client_id: svid, ...target }, { cert: otherCert });
          break;
        case 'self_signed_tls_client_auth':
          res = await tokenRequest({ grant_type: 'client_credentials', client_id: RS, ...target }, { cert: selfSigned });
          break;
        default:
          throw new Error(`no probe for ${method}`);
      }
      // Credentials the server cannot check must not be ignored: that would accept any secret.
      if (res.status === 200) accepted.push(method);
      else {
        expect({ method, status: res.status, error: res.json.error }).toEqual({ method, status: 401, error: 'invalid_client' });
        expect(res.json.error_description, method).toEqual(expect.any(String));
        // RFC 6749 §5.2: a client that tried Basic is answered with a Basic challenge.
        if (method === 'client_secret_basic') expect(res.challenge).toMatch(/^Basic /);
      }
    }
    expect(accepted.sort()).toEqual([...listed].sort());
  });

  /**
   * The IANA "OAuth URI" registry's token-type URNs, and the Transaction Token one of
   * draft-ietf-oauth-transaction-tokens. RFC 8414 defines no metadata member for the token types
   * a token exchange accepts (RFC 8693 registers none either), so the set accepted is checked
   * against docs/http-api.md, "Token exchange" and "Delegation", written out here.
   */
  const TOKEN_TYPES = ['access_token', 'refresh_token', 'id_token', 'saml1', 'saml2', 'jwt', 'txn_token'].map((t) => `urn:ietf:params:oauth:token-type:${t}`);
  const DOCUMENTED = {
    subject_token_type: ['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token'],
    requested_token_type: ['urn:ietf:params:oauth:token-type:access_token', 'urn:ietf:params:oauth:token-type:txn_token'],
    actor_token_type: ['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:access_token'],
  };

  it('accepts as subject_token_type, requested_token_type and actor_token_type exactly the registered token types it documents', async () => {
    const accepted: Record<keyof typeof DOCUMENTED, string[]> = { subject_token_type: [], requested_token_type: [], actor_token_type: [] };
    for (const type of TOKEN_TYPES) {
      // The subject is always the workload's platform token: only its declared type changes.
      if ((await tokenRequest({ ...(await exchange()), subject_token_type: type })).status === 200) accepted.subject_token_type.push(type);

      // A token type is requested with a request right for a task token, or for a Transaction
      // Token (audience the trust domain, scope its purpose, actions in a jit_task detail).
      const asTask = await tokenRequest({ ...(await exchange()), requested_token_type: type });
      const asTxn = await tokenRequest({
        ...(await exchange()),
        requested_token_type: type,
        audience: TRUST_DOMAIN,
        scope: 'reconcile orders',
        authorization_details: JSON.stringify([{ type: 'jit_task', actions: ['read'] }]),
      });
      const issued = [asTask, asTxn].find((r) => r.status === 200);
      if (issued) {
        expect(issued.json.issued_token_type, type).toBe(type);
        accepted.requested_token_type.push(type);
      }

      // The actor token as the agent's platform token, and as one of its own task tokens.
      const agentTask = await tokenRequest({ ...(await exchange()), subject_token: await saToken('agents') });
      expect(agentTask.status, JSON.stringify(agentTask.json)).toBe(200);
      for (const actorToken of [await saToken('agents'), agentTask.json.access_token as string]) {
        const res = await tokenRequest({ ...(await exchange()), actor_token: actorToken, actor_token_type: type });
        if (res.status === 200) {
          expect(decodeJwt(res.json.access_token as string).act, type).toEqual({ sub: AGENT });
          accepted.actor_token_type.push(type);
          break;
        }
        expect(res.json.error, type).toBe('invalid_request');
      }
    }
    for (const list of Object.values(accepted)) list.sort();
    expect(accepted).toEqual({
      subject_token_type: [...DOCUMENTED.subject_token_type].sort(),
      requested_token_type: [...DOCUMENTED.requested_token_type].sort(),
      actor_token_type: [...DOCUMENTED.actor_token_type].sort(),
    });
  });

  it('accepts a DPoP proof in every listed alg and in no other registered one, at the token endpoint and at task start', async () => {
    const md = await metadata();
    const listed = md.dpop_signing_alg_values_supported as string[];
    /** Each route's request carrying the proof: the token endpoint's exchange, and a task start. */
    const routes = {
      '/oauth2/token': async (dpop: string) => tokenRequest(await exchange(), { headers: { dpop } }),
      '/v1/tasks': async (dpop: string) =>
        httpsJson(`${ISSUER}/v1/tasks`, { ...tls(), headers: { dpop }, body: { attestation: { kind: 'oidc', token: await saToken() }, intent } }),
    };
    for (const [route, send] of Object.entries(routes)) {
      const htu = `${ISSUER}${route}`;
      const accepted: string[] = [];
      for (const alg of IANA_JWS_ALGS) {
        const claims = { htm: 'POST', htu, jti: crypto.randomUUID(), iat: Math.floor(Date.now() / 1000) };
        let proof: string;
        if (alg === 'none') {
          proof = `${Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
        } else if (alg.startsWith('HS')) {
          const secret = new TextEncoder().encode(RS_SECRET.repeat(2));
          proof = await new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg, jwk: { kty: 'oct', k: Buffer.from(secret).toString('base64url') } as JWK }).sign(secret);
        } else {
          const key = algKeys.get(keyFor(alg))!;
          const jwk = createPublicKey(key).export({ format: 'jwk' });
          proof = await new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg, jwk }).sign(key);
        }
        const res = await send(proof);
        if (res.status === 200 || res.status === 201) {
          expect(res.json.token_type, `${route} ${alg}`).toBe('DPoP');
          accepted.push(alg);
        } else expect(res.json.error, `${route} ${alg}`).toBe('invalid_dpop_proof');
      }
      expect({ route, accepted: accepted.sort() }).toEqual({ route, accepted: [...listed].sort() });
    }
  });

  it('accepts the authorization_details type it lists and refuses another', async () => {
    const md = await metadata();
    expect(md.authorization_details_types_supported).toEqual(['jit_task']);
    const detail = (type: string) => JSON.stringify([{ type, actions: ['read'], locations: ['db.payments'], resources: ['db://payments/orders'] }]);
    const { audience: _a, scope: _s, ...rest } = await exchange();
    const listed = await tokenRequest({ ...rest, authorization_details: detail('jit_task') });
    expect(listed.status, JSON.stringify(listed.json)).toBe(200);
    // RFC 9396's own example type: registered by nobody here, so refused.
    const other = await tokenRequest({ ...rest, authorization_details: detail('payment_initiation') });
    expect(other).toMatchObject({ status: 400, json: { error: 'invalid_authorization_details' } });
  });
});
