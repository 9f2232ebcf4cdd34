/**
 * The resource-server verifier with DPoP-bound task tokens (RFC 9449 §7): a real broker (real
 * Redis) issues them, the verifier fetches its JWKS over HTTP, and proofs are made with jose as
 * a client would. Over node:http (createNodeVerifier) and hono (requireTask) too.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Hono } from 'hono';
import { calculateJwkThumbprint, CompactSign, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { requireTask, type TaskVariables } from '../../src/hono/index.js';
import type { BrokerRuntime } from '../../src/server.js';
import { challenge, createNodeVerifier, createVerifier, InvalidDpopProof, InvalidTaskToken, sendChallenge, TaskTokenError, type Verifier } from '../../src/verify/index.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

const ISSUER = 'https://broker.test';
const API = 'https://api.test';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'dpop verify test' };

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let verifier: Verifier;
let server: Server | undefined;

interface Holder {
  privateKey: CryptoKey;
  jwk: JWK;
  jkt: string;
}

async function newHolder(): Promise<Holder> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { privateKey, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
}

let n = 0;
function proof(holder: Holder, htm: string, htu: string, token: string | undefined): Promise<string> {
  const claims = {
    jti: `verify-${process.pid}-${++n}-${Math.random().toString(36).slice(2)}`,
    htm,
    htu,
    iat: Math.floor(Date.now() / 1000),
    ...(token !== undefined ? { ath: createHash('sha256').update(token).digest('base64url') } : {}),
  };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: holder.jwk }).sign(holder.privateKey);
}

async function startTask(holder: Holder | undefined): Promise<string> {
  const sa = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });
  const headers: Record<string, string> = holder ? { dpop: await proof(holder, 'POST', `${ISSUER}/v1/tasks`, undefined) } : {};
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: sa }, intent }, headers);
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.access_token as string;
}

async function rejection(p: Promise<unknown>): Promise<TaskTokenError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TaskTokenError);
  return err as TaskTokenError;
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, { issuer: ISSUER });
  verifier = createVerifier({ issuer: ISSUER, audience: 'db.payments', jwksUri: `${broker.url}/.well-known/jwks.json` });
});

afterAll(async () => {
  verifier?.close();
  if (server) await new Promise((done) => server!.close(done));
  await broker?.close();
  await issuer?.close();
});

describe('verify: DPoP-bound task tokens', () => {
  it('accepts one sent as DPoP with a proof by its key for this request, once', async () => {
    const holder = await newHolder();
    const token = await startTask(holder);
    const dpop = { proof: await proof(holder, 'GET', `${API}/orders`, token), method: 'GET', url: `${API}/orders?page=2` };
    const task = await verifier.verify(token, { scheme: 'DPoP', dpop, action: 'read' });
    expect(task.confirmation).toEqual({ jkt: holder.jkt });
    // The same proof again is a replay.
    const replay = await rejection(verifier.verify(token, { scheme: 'DPoP', dpop }));
    expect(replay).toBeInstanceOf(InvalidDpopProof);
    expect(replay.message).toMatch(/already used/);
  });

  it('refuses it as Bearer, without a proof, with a proof by another key, for another request or token', async () => {
    const holder = await newHolder();
    const token = await startTask(holder);
    const url = `${API}/orders`;
    const asBearer = await rejection(verifier.verify(token, { dpop: { proof: await proof(holder, 'GET', url, token), method: 'GET', url } }));
    expect(asBearer).toMatchObject({ code: 'binding_mismatch', scheme: 'DPoP' });
    const cases: [string, string | undefined, RegExp][] = [
      ['no proof', undefined, /send a DPoP proof/],
      ['another key', await proof(await newHolder(), 'GET', url, token), /another key/],
      ['another method', await proof(holder, 'POST', url, token), /htm/],
      ['another URL', await proof(holder, 'GET', `${API}/admin`, token), /htu/],
      ['the broker\'s URL', await proof(holder, 'GET', `${ISSUER}/orders`, token), /htu/],
      ['another token', await proof(holder, 'GET', url, 'another-token'), /ath/],
    ];
    for (const [name, p, message] of cases) {
      const err = await rejection(verifier.verify(token, { scheme: 'DPoP', dpop: { proof: p, method: 'GET', url } }));
      expect(err, name).toBeInstanceOf(InvalidDpopProof);
      expect(err.message, name).toMatch(message);
    }
    // RFC 9449 §7.1: the challenge uses the DPoP scheme and names the algorithms.
    const c = challenge(new InvalidDpopProof('the DPoP proof is bad'));
    expect(c.status).toBe(401);
    expect(c.headers['www-authenticate']).toMatch(/^DPoP error="invalid_dpop_proof", error_description="the DPoP proof is bad", algs="ES256 /);
  });

  it('refuses an unbound token sent as DPoP', async () => {
    const token = await startTask(undefined);
    const err = await rejection(verifier.verify(token, { scheme: 'DPoP' }));
    expect(err).toBeInstanceOf(InvalidTaskToken);
    expect(err.message).toMatch(/not DPoP-bound/);
    await expect(verifier.verify(token)).resolves.toMatchObject({ intent: { audience: 'db.payments' } });
  });
});

describe('DPoP over node:http and hono', () => {
  it('createNodeVerifier takes the htu from publicOrigin and the path, never the Host header', async () => {
    const verify = createNodeVerifier(verifier, { publicOrigin: API });
    server = createServer((req, res) => {
      verify(req).then(
        (task) => res.end(JSON.stringify({ workload: task.workload })),
        (err: unknown) => sendChallenge(res, err),
      );
    });
    server.listen(0, '127.0.0.1');
    await new Promise((done) => server!.once('listening', done));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const holder = await newHolder();
    const token = await startTask(holder);
    const call = async (path: string, htu: string) =>
      fetch(`${base}${path}`, { headers: { authorization: `DPoP ${token}`, dpop: await proof(holder, 'GET', htu, token) } });

    expect((await call('/orders/1', `${API}/orders/1`)).status).toBe(200);
    const byHost = await call('/orders/1', `${base}/orders/1`);
    expect(byHost.status).toBe(401);
    expect(byHost.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_dpop_proof"/);
    // A path that would resolve to another host is taken as a path of this one.
    expect((await call('//evil.test/orders', 'https://evil.test/orders')).status).toBe(401);
  });

  it('requireTask reads Authorization: DPoP and the DPoP header', async () => {
    const app = new Hono<{ Variables: TaskVariables }>();
    app.get('/orders/:id', requireTask({ verifier, action: 'read', publicOrigin: API }), (c) => c.json({ jkt: (c.get('task').confirmation as { jkt: string }).jkt }));
    const holder = await newHolder();
    const token = await startTask(holder);
    const ok = await app.request('http://internal:8080/orders/7', { headers: { authorization: `DPoP ${token}`, dpop: await proof(holder, 'GET', `${API}/orders/7`, token) } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ jkt: holder.jkt });
    const bearer = await app.request('http://internal:8080/orders/7', { headers: { authorization: `Bearer ${token}`, dpop: await proof(holder, 'GET', `${API}/orders/7`, token) } });
    expect(bearer.status).toBe(401);
    expect(bearer.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_token"/);
  });
});
