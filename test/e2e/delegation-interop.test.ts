import { createHash } from 'node:crypto';
import * as client from 'openid-client';
import { calculateJwkThumbprint, decodeJwt, exportJWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';

/**
 * Delegation driven by openid-client 6, an independent OAuth client, against a running broker and
 * Redis: a token exchange with an actor token (RFC 8693 §2.1), plain and with openid-client's own
 * DPoP (the agent's DPoP-bound task token as the actor token, its proof by the same key).
 */
const ISSUER = 'https://broker.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const RS_CREDENTIAL = 'rs-delegation-interop-credential-0123456789';
const SUBJECT = 'k8s://test/ns/payments/sa/api';
const AGENT = 'k8s://test/ns/agents/sa/api';

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let config: client.Configuration;

const saToken = (namespace: string) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });
const target = { audience: 'db.payments', resource: 'db://payments/orders', scope: 'read' };

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    issuer: ISSUER,
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'], actors: ['k8s://test/ns/agents/sa/*'] },
      { name: 'agents', workloads: ['k8s://test/ns/agents/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    ],
    resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
  });
  config = new client.Configuration({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }, AGENT, undefined, client.None());
  config[client.customFetch] = (url, options) => fetch(url.replace(ISSUER, broker.url), options as RequestInit);
}, 30_000);

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

async function introspect(token: string) {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return (await res.json()) as Record<string, unknown>;
}

describe('openid-client 6: token exchange with an actor token', () => {
  it('an agent acting for a workload with its platform token', async () => {
    const res = await client.genericGrantRequest(config, EXCHANGE, {
      subject_token: await saToken('payments'),
      subject_token_type: JWT_TYPE,
      actor_token: await saToken('agents'),
      actor_token_type: JWT_TYPE,
      ...target,
    });
    expect(res.token_type).toBe('bearer');
    expect(decodeJwt(res.access_token)).toMatchObject({ sub: SUBJECT, act: { sub: AGENT } });
    expect(await introspect(res.access_token)).toMatchObject({ active: true, sub: SUBJECT, act: { sub: AGENT } });
  });

  it("an agent's DPoP-bound task token as the actor token, with openid-client's proofs by the same key", async () => {
    const keyPair = await client.randomDPoPKeyPair('ES256');
    const DPoP = client.getDPoPHandle(config, keyPair);
    const own = await client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken('agents'), subject_token_type: JWT_TYPE, ...target }, { DPoP });
    expect(own.token_type).toBe('dpop');
    const res = await client.genericGrantRequest(
      config,
      EXCHANGE,
      { subject_token: await saToken('payments'), subject_token_type: JWT_TYPE, actor_token: own.access_token, actor_token_type: ACCESS_TOKEN_TYPE, ...target },
      { DPoP },
    );
    const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey), 'sha256');
    expect(decodeJwt(res.access_token)).toMatchObject({ sub: SUBJECT, act: { sub: AGENT }, cnf: { jkt } });
    // Without openid-client's DPoP the bound actor token is refused (RFC 8693 §2.2.2 invalid_request).
    await expect(
      client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken('payments'), subject_token_type: JWT_TYPE, actor_token: own.access_token, actor_token_type: ACCESS_TOKEN_TYPE, ...target }),
    ).rejects.toMatchObject({ error: 'invalid_request' });
  });
});
