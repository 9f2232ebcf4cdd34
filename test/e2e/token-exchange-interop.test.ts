import { createHash } from 'node:crypto';
import * as client from 'openid-client';
import { calculateJwkThumbprint, decodeJwt, exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';

/**
 * RFC 8693 token exchange driven by openid-client 6, an independent certified OAuth client,
 * against a running broker and Redis: `genericGrantRequest` with the token-exchange grant, as a
 * public client (client authentication `none`: the subject token is the workload's credential).
 * The broker's issuer is https://broker.test while it listens on 127.0.0.1: the client's fetch
 * is pointed at the listener, so every URL it builds (and every DPoP `htu`) names the issuer.
 */
const ISSUER = 'https://broker.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const RS_CREDENTIAL = 'rs-interop-credential-0123456789abcdef';

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let config: client.Configuration;

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

async function introspect(token: string) {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return (await res.json()) as Record<string, unknown>;
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    issuer: ISSUER,
    resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
  });
  config = new client.Configuration({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }, 'k8s://test/ns/payments/sa/api', undefined, client.None());
  config[client.customFetch] = (url, options) => fetch(url.replace(ISSUER, broker.url), options as RequestInit);
}, 30_000);

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

describe('openid-client 6: token exchange', () => {
  it('plain: subject token, audience, resource and scope', async () => {
    const res = await client.genericGrantRequest(config, EXCHANGE, {
      subject_token: await saToken(),
      subject_token_type: JWT_TYPE,
      audience: 'db.payments',
      resource: 'db://payments/orders',
      scope: 'read',
    });
    expect(res.token_type).toBe('bearer'); // openid-client lower-cases it
    expect(res.issued_token_type).toBe('urn:ietf:params:oauth:token-type:access_token');
    expect(res.refresh_token).toBeUndefined();
    expect(await introspect(res.access_token)).toMatchObject({ active: true, aud: 'db.payments', scope: 'read' });
  });

  it('with authorization_details (RFC 9396)', async () => {
    const res = await client.genericGrantRequest(config, EXCHANGE, {
      subject_token: await saToken(),
      subject_token_type: JWT_TYPE,
      authorization_details: JSON.stringify([
        { type: 'jit_task', locations: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/orders'], purpose: 'reconcile orders', identifier: 'recon-1' },
      ]),
    });
    expect(res.scope).toBe('read write');
    expect(await introspect(res.access_token)).toMatchObject({
      active: true,
      txn: 'recon-1',
      authorization_details: [{ type: 'jit_task', actions: ['read', 'write'], purpose: 'reconcile orders', identifier: 'recon-1' }],
    });
  });

  it("DPoP-bound with openid-client's own DPoP support", async () => {
    const keyPair = await client.randomDPoPKeyPair('ES256');
    const res = await client.genericGrantRequest(
      config,
      EXCHANGE,
      { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', resource: 'db://payments/orders', scope: 'read' },
      { DPoP: client.getDPoPHandle(config, keyPair) },
    );
    expect(res.token_type).toBe('dpop');
    const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey), 'sha256');
    expect(decodeJwt(res.access_token).cnf).toEqual({ jkt });
    expect(await introspect(res.access_token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt } });
  });

  it('retries with the server nonce when the broker requires one (RFC 9449 §8)', async () => {
    const nonceBroker = await startTestBroker(issuer, {
      issuer: ISSUER,
      dpop: { nonce_secret: 'interop-nonce-secret-0123456789abcdef0123' },
      resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
    });
    try {
      const viaNonceBroker = new client.Configuration(config.serverMetadata(), config.clientMetadata().client_id, undefined, client.None());
      viaNonceBroker[client.customFetch] = (url, options) => fetch(url.replace(ISSUER, nonceBroker.url), options as RequestInit);
      const res = await client.genericGrantRequest(
        viaNonceBroker,
        EXCHANGE,
        { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', resource: 'db://payments/orders', scope: 'read' },
        { DPoP: client.getDPoPHandle(viaNonceBroker, await client.randomDPoPKeyPair('ES256')) },
      );
      expect(res.token_type).toBe('dpop');
    } finally {
      await nonceBroker.close();
    }
  });

  it('surfaces the RFC 8693 error of a refused exchange', async () => {
    const refused = client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.hr', scope: 'read' });
    await expect(refused).rejects.toMatchObject({ error: 'invalid_target', status: 400 });
  });
});
