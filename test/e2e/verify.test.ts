/**
 * The resource-server verifier (jit-broker/verify) and its helpers against a real broker: real
 * Redis, real TLS with the dev CA, the broker's own /.well-known/jwks.json and /oauth2/introspect.
 */
import 'reflect-metadata';
import { createHash, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import { generateKeyPair, SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { requireTask, type TaskVariables } from '../../src/hono/index.js';
import {
  createNodeVerifier,
  createVerifier,
  IntentNotGranted,
  InvalidTaskToken,
  sendChallenge,
  TaskTokenError,
  VerifierUnavailable,
  type Verifier,
  type VerifierOptions,
} from '../../src/verify/index.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';

const ISSUER = 'https://broker.test';
const SVID = 'spiffe://example.org/ns/payments/sa/api';
const RS_SPIFFE = 'spiffe://example.org/rs/db';
const RS_CREDENTIAL = 'rs-verify-credential-0123456789';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders/*'], purpose: 'nightly reconciliation', task: 'recon-7' };

let issuer: OidcIssuer;
let pki: TestPki;
let svid: Credential;
let otherSvid: Credential;
let rsCert: Credential;
let broker: BrokerRuntime & { prefix: string };
const files = scratchDir('jit-verify-');
const verifiers: Verifier[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  svid = await issueCertificate(pki.example, { uris: [SVID] });
  otherSvid = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ns/payments/sa/batch'] });
  rsCert = await issueCertificate(pki.example, { uris: [RS_SPIFFE] });
  broker = await startTestBroker(issuer, {
    issuer: ISSUER,
    tls: {
      cert: files.write('server.pem', pki.server.chainPem),
      key: files.write('server-key.pem', pki.server.keyPem),
      client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) },
    },
    attestation: {
      oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] },
      x509: {},
    },
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
      { name: 'payments-svid', workloads: ['spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], require_binding: true },
    ],
    resource_servers: [
      { name: 'rs-payments', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL) },
      { name: 'rs-gateway', audiences: ['db.payments'], workload: RS_SPIFFE },
    ],
  });
}, 30_000);

afterAll(async () => {
  for (const v of verifiers) v.close();
  await broker?.close();
  await issuer?.close();
  files.cleanup();
});

/** A verifier of the test broker's tokens (its JWKS over real TLS), closed after the run. */
function verifier(over: Partial<VerifierOptions> = {}): Verifier {
  const v = createVerifier({ issuer: ISSUER, audience: 'db.payments', jwksUri: `${broker.url}/.well-known/jwks.json`, tls: { ca: pki.example.certPem }, ...over });
  verifiers.push(v);
  return v;
}

async function startTask(over: { cert?: Credential; intent?: object } = {}): Promise<{ grant: string; token: string }> {
  const attestation = over.cert
    ? {}
    : { attestation: { kind: 'oidc', token: await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 }) } };
  const res = await httpsJson(`${broker.url}/v1/tasks`, {
    ca: pki.example.certPem,
    ...(over.cert ? { cert: over.cert.chainPem, key: over.cert.keyPem } : {}),
    body: { ...attestation, intent: over.intent ?? intent },
  });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}

async function rejection(p: Promise<unknown>): Promise<TaskTokenError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TaskTokenError);
  return err as TaskTokenError;
}

const revoke = (token: string) =>
  httpsJson(`${broker.url}/oauth2/revoke`, {
    ca: pki.example.certPem,
    method: 'POST',
    body: new URLSearchParams({ token }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
  });

describe('verify', () => {
  it('accepts a task token within its grant and returns the workload, task, grant and granted intent', async () => {
    const { grant, token } = await startTask();
    const task = await verifier().verify(token, { action: 'read', resource: 'db://payments/orders/42' });
    expect(task).toMatchObject({
      workload: 'k8s://test/ns/payments/sa/api',
      task: 'recon-7',
      grant,
      intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders/*'], purpose: 'nightly reconciliation' },
      introspected: false,
    });
    expect(task.tokenId).toBe(decodeJwt(token).jti);
    expect(task.expiresAt.getTime()).toBe((decodeJwt(token).exp as number) * 1000);
  });

  it('refuses an action or a resource outside the grant with 403, by the policy matching rules', async () => {
    const { token } = await startTask();
    const v = verifier();
    for (const [opts, code] of [
      [{ action: 'write' }, 'action_not_granted'],
      [{ action: ['read', 'delete'] }, 'action_not_granted'],
      [{ resource: 'db://payments/customers/1' }, 'resource_not_granted'],
      // `*` is one segment: orders/* does not cover a deeper path.
      [{ resource: 'db://payments/orders/42/items' }, 'resource_not_granted'],
      // A path some server would normalise elsewhere is refused, as the broker refuses it at issuance.
      [{ resource: 'db://payments/orders/../../secrets' }, 'resource_not_granted'],
      [{ resource: 'db://payments/orders/%2e%2e' }, 'resource_not_granted'],
      // A literal `*` asked for is only covered by ** or the same pattern.
      [{ resource: 'db://payments/orders/**' }, 'resource_not_granted'],
    ] as const) {
      const err = await rejection(v.verify(token, opts));
      expect(err, JSON.stringify(opts)).toBeInstanceOf(IntentNotGranted);
      expect([err.code, err.status, err.error]).toEqual([code, 403, 'insufficient_scope']);
    }
    await expect(v.verify(token, { action: 'read', resource: ['db://payments/orders/1', 'db://payments/orders/*'] })).resolves.toMatchObject({ task: 'recon-7' });
  });

  it('refuses a wrong audience, a wrong issuer and an expired token', async () => {
    const { token } = await startTask();
    expect((await rejection(verifier({ audience: 'db.other' }).verify(token))).code).toBe('wrong_audience');
    expect((await rejection(verifier({ issuer: 'https://other-broker.test' }).verify(token))).code).toBe('wrong_issuer');
    const exp = (decodeJwt(token).exp as number) * 1000;
    let now = exp + 29_000;
    const v = verifier({ clock: () => now, leeway: '30s' });
    await expect(v.verify(token)).resolves.toBeDefined(); // within the leeway
    now = exp + 30_000;
    const err = await rejection(v.verify(token));
    expect(err).toBeInstanceOf(InvalidTaskToken);
    expect([err.code, err.status]).toEqual(['token_expired', 401]);
    now = (decodeJwt(token).nbf as number) * 1000 - 31_000;
    expect((await rejection(v.verify(token))).code).toBe('token_not_yet_valid');
    expect(() => createVerifier({ issuer: ISSUER, audience: 'x', leeway: 61 })).toThrow(/at most 60 s/);
  });

  it('refuses alg none, a symmetric alg, a token re-signed by an unknown key, and a tampered one', async () => {
    const { token } = await startTask();
    const [h, p, s] = token.split('.') as [string, string, string];
    const header = decodeProtectedHeader(token);
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    let now = Date.now();
    const v = verifier({ clock: () => now });
    expect((await rejection(v.verify(`${b64({ ...header, alg: 'none' })}.${p}.`))).code).toBe('algorithm_not_allowed');
    expect((await rejection(v.verify(`${b64({ ...header, alg: 'HS256' })}.${p}.${s}`))).code).toBe('algorithm_not_allowed');
    expect((await rejection(v.verify(`${b64({ ...header, typ: 'JWT' })}.${p}.${s}`))).code).toBe('wrong_type');
    expect((await rejection(v.verify(`${b64({ ...header, jku: 'https://evil.test/jwks' })}.${p}.${s}`))).code).toBe('token_malformed');
    expect((await rejection(v.verify(`${h}.${b64({ ...decodeJwt(token), scope: 'read write' })}.${s}`))).code).toBe('bad_signature');
    expect((await rejection(v.verify(`${h}.${p}.${s}=`))).code).toBe('token_malformed');

    // The same claims signed by a key the broker does not publish, under a kid of its own.
    const foreign = await generateKeyPair('ES256');
    const forged = await new SignJWT(decodeJwt(token)).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'not-a-broker-key' }).sign(foreign.privateKey);
    await v.verify(token);
    expect(v.stats.jwksFetches).toBe(1);
    const err = await rejection(v.verify(forged));
    expect([err.code, err.status]).toEqual(['unknown_key', 401]);
    expect(v.stats.jwksFetches).toBe(1); // within the cool-down of the first fetch: no refetch
    now += 30_000;
    expect((await rejection(v.verify(forged))).code).toBe('unknown_key');
    expect(v.stats.jwksFetches).toBe(2); // one refetch for the unknown kid
    expect((await rejection(v.verify(forged))).code).toBe('unknown_key');
    expect(v.stats.jwksFetches).toBe(2); // then the cool-down again
    // Under the broker's own kid, the foreign signature does not verify.
    const underKid = await new SignJWT(decodeJwt(token)).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: header.kid! }).sign(foreign.privateKey);
    expect((await rejection(v.verify(underKid))).code).toBe('bad_signature');
  });

  it('checks cnf.x5t#S256 of a bound token against the TLS peer certificate, as DER, PEM or X509Certificate', async () => {
    const { token } = await startTask({ cert: svid });
    expect(decodeJwt(token).cnf).toBeDefined();
    const v = verifier();
    for (const cert of [svid.der, svid.certPem, new X509Certificate(svid.certPem), { raw: svid.der }]) {
      await expect(v.verify(token, { action: 'read', resource: 'db://payments/orders/1', clientCertificate: cert })).resolves.toMatchObject({ workload: SVID, confirmation: decodeJwt(token).cnf });
    }
    for (const cert of [otherSvid.der, undefined]) {
      const err = await rejection(v.verify(token, { clientCertificate: cert }));
      expect([err.code, err.status]).toEqual(['binding_mismatch', 401]);
    }
    const unbound = await startTask();
    expect((await rejection(verifier({ requireBinding: true }).verify(unbound.token))).code).toBe('binding_required');
  });

  it('with introspection on, refuses a revoked grant (bearer credential and mTLS), caching answers at most cacheTtl', async () => {
    const { token } = await startTask();
    let now = Date.now();
    const bearer = verifier({ clock: () => now, introspection: { url: `${broker.url}/oauth2/introspect`, credential: RS_CREDENTIAL, cacheTtl: '5s' } });
    const mtls = verifier({ introspection: { url: `${broker.url}/oauth2/introspect`, mtls: { cert: rsCert.chainPem, key: rsCert.keyPem, ca: pki.example.certPem } } });
    await expect(bearer.verify(token, { action: 'read' })).resolves.toMatchObject({ introspected: true });
    await expect(mtls.verify(token)).resolves.toMatchObject({ introspected: true });
    await bearer.verify(token);
    expect(bearer.stats.introspections).toBe(1); // the cached answer
    expect((await revoke(token)).status).toBe(200);
    now += 5_000; // the cached "active" is no longer used
    const err = await rejection(bearer.verify(token));
    expect([err.code, err.status, err.error]).toEqual(['grant_inactive', 401, 'invalid_token']);
    expect(bearer.stats.introspections).toBe(2);
    expect((await rejection(verifier({ introspection: { url: `${broker.url}/oauth2/introspect`, mtls: { cert: rsCert.chainPem, key: rsCert.keyPem } } }).verify(token))).code).toBe('grant_inactive');
    expect(() => verifier({ introspection: { url: 'https://x.test', credential: 'c', cacheTtl: 31 } })).toThrow(/at most 30 s/);
  });

  it('fails closed when introspection fails, unless told to allow', async () => {
    const { token } = await startTask();
    const url = `${broker.url}/oauth2/introspect`;
    const err = await rejection(verifier({ introspection: { url, credential: 'not-the-credential' } }).verify(token));
    expect(err).toBeInstanceOf(VerifierUnavailable);
    expect([err.code, err.status]).toEqual(['introspection_unavailable', 503]);
    await expect(verifier({ introspection: { url, credential: 'not-the-credential', onError: 'allow' } }).verify(token)).resolves.toMatchObject({ introspected: false });
  });
});

describe('requireTask (hono)', () => {
  it('sets the verified task on the context, and refuses with 401/403 and RFC 6750 WWW-Authenticate', async () => {
    const { token, grant } = await startTask();
    const v = verifier();
    const app = new Hono<{ Variables: TaskVariables }>();
    app.get('/orders/:id', requireTask({ verifier: v, action: 'read', resource: (c) => `db://payments/orders/${c.req.param('id')}`, realm: 'orders' }), (c) =>
      c.json({ workload: c.get('task').workload, grant: c.get('task').grant }),
    );
    app.delete('/orders/:id', requireTask({ verifier: v, action: 'write' }), (c) => c.text('deleted'));
    const auth = { authorization: `Bearer ${token}` };

    const ok = await app.request('/orders/42', { headers: auth });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ workload: 'k8s://test/ns/payments/sa/api', grant });

    const none = await app.request('/orders/42');
    expect([none.status, none.headers.get('www-authenticate')]).toEqual([401, 'Bearer realm="orders"']);

    const bad = await app.request('/orders/42', { headers: { authorization: `Bearer ${token.slice(0, -4)}AAAA` } });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toMatch(/^Bearer realm="orders", error="invalid_token", error_description="[^"]+"$/);
    expect(await bad.json()).toMatchObject({ error: 'invalid_token' });

    const deeper = await app.request('/orders/42%2Fitems', { headers: auth });
    expect(deeper.status).toBe(403);
    const denied = await app.request('/orders/42', { method: 'DELETE', headers: auth });
    expect(denied.status).toBe(403);
    expect(denied.headers.get('www-authenticate')).toMatch(/error="insufficient_scope"/);
    expect(await denied.json()).toEqual({ error: 'insufficient_scope', error_description: 'the task was not granted the action "write"' });
  });
});

describe('requireTask under @hono/node-server over real TLS', () => {
  it('reads the peer certificate from the connection for a bound token', async () => {
    const app = new Hono<{ Variables: TaskVariables }>();
    app.get('/orders/:id', requireTask({ verifier: verifier(), action: 'read', resource: (c) => `db://payments/orders/${c.req.param('id')}` }), (c) =>
      c.json({ workload: c.get('task').workload, cnf: c.get('task').confirmation }),
    );
    const server = createHttpsServer({ cert: pki.server.chainPem, key: pki.server.keyPem, ca: pki.example.certPem, requestCert: true, rejectUnauthorized: false }, getRequestListener(app.fetch));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/orders/3`;
      const { token } = await startTask({ cert: svid });
      const headers = { authorization: `Bearer ${token}` };
      const ok = await httpsJson(url, { ca: pki.example.certPem, cert: svid.chainPem, key: svid.keyPem, headers });
      expect([ok.status, ok.json]).toEqual([200, { workload: SVID, cnf: decodeJwt(token).cnf }]);
      const other = await httpsJson(url, { ca: pki.example.certPem, cert: otherSvid.chainPem, key: otherSvid.keyPem, headers });
      expect([other.status, other.json.error]).toEqual([401, 'invalid_token']);
      expect(other.headers['www-authenticate']).toMatch(/bound to another client certificate/);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('createNodeVerifier (node:https)', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    const check = createNodeVerifier(verifier(), { action: 'read', resource: (req) => `db://payments${req.url ?? '/'}` });
    server = createHttpsServer({ cert: pki.server.chainPem, key: pki.server.keyPem, ca: pki.example.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      check(req).then(
        (task) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ workload: task.workload, bound: task.confirmation !== undefined }));
        },
        (err: unknown) => sendChallenge(res, err),
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server?.closeAllConnections();
    server?.close();
  });

  it('accepts a bound token over mTLS with its certificate, and refuses it with another or none', async () => {
    const { token } = await startTask({ cert: svid });
    const headers = { authorization: `Bearer ${token}` };
    const ok = await httpsJson(`${url}/orders/9`, { ca: pki.example.certPem, cert: svid.chainPem, key: svid.keyPem, headers });
    expect([ok.status, ok.json]).toEqual([200, { workload: SVID, bound: true }]);
    for (const cert of [otherSvid, undefined]) {
      const res = await httpsJson(`${url}/orders/9`, { ca: pki.example.certPem, ...(cert ? { cert: cert.chainPem, key: cert.keyPem } : {}), headers });
      expect(res.status).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer error="invalid_token", error_description="the token is bound to/);
    }
    const outside = await httpsJson(`${url}/customers/1`, { ca: pki.example.certPem, cert: svid.chainPem, key: svid.keyPem, headers });
    expect([outside.status, outside.json.error]).toEqual([403, 'insufficient_scope']);
    const missing = await httpsJson(`${url}/orders/9`, { ca: pki.example.certPem });
    expect([missing.status, missing.headers['www-authenticate']]).toEqual([401, 'Bearer']);
  });
});
