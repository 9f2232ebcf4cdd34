/**
 * RS256 task tokens (RFC 9068 §2.1: authorization servers and resource servers MUST support
 * RS256): a broker configured with `tokens.algorithm: RS256` signs with a 2048-bit RSA key,
 * publishes it with `alg: RS256`, and its tokens verify with jose (independently), with the
 * project's own verifier, and at introspection. The issuer has no path: the root routes serve.
 */
import { createHash } from 'node:crypto';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { createVerifier } from '../../src/verify/index.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

const ISSUER = 'https://broker.test';
const RS_SECRET = 'rs-rs256-secret-0123456789abcdefghijklmnop';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders/*'], purpose: 'rs256', task: 'rs256-1' };

let oidc: OidcIssuer;
let broker: BrokerRuntime;

beforeAll(async () => {
  oidc = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(oidc, {
    tokens: { algorithm: 'RS256' },
    resource_servers: [{ name: 'rs-db', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_SECRET).digest('hex') }],
  });
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await oidc?.close();
});

describe('RS256 task tokens', () => {
  it('are signed, published, verified and introspected as RS256', async () => {
    const evidence = await oidc.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
    const started = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: evidence }, intent });
    expect(started.status, JSON.stringify(started.json)).toBe(201);
    const token = started.json.access_token as string;
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'RS256', typ: 'at+jwt' });

    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const key of jwks.keys) expect(key).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });

    // RFC 9068 §4 with jose alone: typ, iss, aud, and an RS256 signature.
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { algorithms: ['RS256'], typ: 'at+jwt', issuer: ISSUER, audience: 'db.payments' });
    expect(payload.sub).toBe('k8s://test/ns/payments/sa/api');

    const verifier = createVerifier({ issuer: ISSUER, audience: 'db.payments', jwksUri: `${broker.url}/.well-known/jwks.json`, algorithms: ['RS256'] });
    try {
      await expect(verifier.verify(token, { action: 'read' })).resolves.toMatchObject({ workload: 'k8s://test/ns/payments/sa/api' });
    } finally {
      verifier.close();
    }

    const introspected = await fetch(`${broker.url}/oauth2/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_SECRET}` },
      body: new URLSearchParams({ token }).toString(),
    });
    expect(await introspected.json()).toMatchObject({ active: true, aud: 'db.payments' });
  });
});
