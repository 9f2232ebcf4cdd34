/**
 * DPoP-bound tasks through the workload client (RFC 9449): a real broker on a real port (real
 * Redis), the local OIDC issuer, and a real resource server using jit-broker/verify's node adapter.
 * The proofs the client sends are read back as the servers receive them, and checked with jose
 * (an independent implementation) where the test needs the key's thumbprint.
 */
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { BrokerClient, BrokerResponseError, DpopKey, ManualClock, platformToken } from '../../src/sdk/index.js';
import { createNodeVerifier, createVerifier, sendChallenge, type Verifier } from '../../src/verify/index.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';

/** The nonce broker's issuer: the client reaches it on 127.0.0.1 and names this URL in its proofs. */
const PUBLIC_ISSUER = 'https://broker.test';
const RS_CREDENTIAL = 'rs-sdk-dpop-credential-0123456789abcdef';
const NONCE_SECRET = 'sdk-dpop-nonce-secret-0123456789abcdef';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'sdk dpop test' };
const ledgerIntent = { audience: 'db.ledger', actions: ['read'], resources: ['db://ledger/books'], purpose: 'sdk dpop test' };
const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex');
const ath = (token: string) => createHash('sha256').update(token).digest('base64url');

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let nonceBroker: BrokerRuntime & { prefix: string };
let verifier: Verifier;
let nonceVerifier: Verifier;
const servers: Server[] = [];

/** A free loopback port, so the broker's issuer can be the very URL the client reaches it by. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((done) => s.listen(0, '127.0.0.1', done));
  const { port } = s.address() as AddressInfo;
  await new Promise((done) => s.close(done));
  return port;
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  const port = await freePort();
  const common = {
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], max_ttl: '30s', max_lifetime: '1h' },
      { name: 'ledger-dpop', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.ledger'], actions: ['read'], resources: ['db://ledger/**'], require_binding: 'dpop' as const },
    ],
    resource_servers: [{ name: 'rs-payments', audiences: ['db.payments', 'db.ledger'], credential_sha256: sha256hex(RS_CREDENTIAL) }],
  };
  broker = await startTestBroker(issuer, { ...common, issuer: `http://127.0.0.1:${port}`, listen: { host: '127.0.0.1', port } });
  nonceBroker = await startTestBroker(issuer, { ...common, issuer: PUBLIC_ISSUER, dpop: { nonce_secret: NONCE_SECRET, nonce_rotation: '1m' } });
  verifier = createVerifier({ issuer: broker.url, audience: 'db.payments', jwksUri: `${broker.url}/.well-known/jwks.json` });
  nonceVerifier = createVerifier({ issuer: PUBLIC_ISSUER, audience: 'db.payments', jwksUri: `${nonceBroker.url}/.well-known/jwks.json` });
});

afterAll(async () => {
  verifier?.close();
  nonceVerifier?.close();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((done) => s.close(done));
  }
  await broker?.close();
  await nonceBroker?.close();
  await issuer?.close();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });

function client(opts: { dpop?: boolean; nonces?: boolean; url?: string; clock?: ManualClock } = {}) {
  return new BrokerClient({
    url: opts.url ?? (opts.nonces ? nonceBroker : broker).url,
    ...(opts.nonces ? { issuer: PUBLIC_ISSUER } : {}),
    attestation: platformToken(saToken),
    ...(opts.dpop === false ? {} : { dpop: true }),
    clock: opts.clock ?? new ManualClock(),
  });
}

async function introspect(b: BrokerRuntime, token: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${b.url}/oauth2/introspect`, {
    method: 'POST',
    body: new URLSearchParams({ token }),
    headers: { authorization: `Bearer ${RS_CREDENTIAL}` },
  });
  return (await res.json()) as Record<string, unknown>;
}

/** What the resource server received: each request's Authorization and DPoP headers. */
interface Seen {
  authorization: string | undefined;
  dpop: string | undefined;
  url: string;
}

/**
 * A resource server on a real port: jit-broker/verify's node adapter with `publicOrigin` (the
 * origin the client addresses). `nonce`: it first demands this DPoP nonce (RFC 9449 §9).
 */
async function startResourceServer(v: Verifier, opts: { nonce?: string } = {}): Promise<{ origin: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  let origin = '';
  let verify: (req: IncomingMessage) => Promise<{ workload: string; confirmation?: unknown }> = async () => {
    throw new Error('not started');
  };
  const server = createServer((req, res) => {
    seen.push({ authorization: req.headers.authorization, dpop: req.headers.dpop as string | undefined, url: req.url ?? '' });
    const proof = req.headers.dpop;
    if (opts.nonce !== undefined && (typeof proof !== 'string' || decodeJwt(proof).nonce !== opts.nonce)) {
      res.writeHead(401, { 'www-authenticate': 'DPoP error="use_dpop_nonce", error_description="send the nonce"', 'dpop-nonce': opts.nonce });
      res.end();
      return;
    }
    verify(req).then(
      (task) => res.end(JSON.stringify({ workload: task.workload, cnf: task.confirmation })),
      (err: unknown) => sendChallenge(res, err),
    );
  });
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  verify = createNodeVerifier(v, { publicOrigin: origin, action: 'read' });
  return { origin, seen };
}

/** One exchange through the recording proxy: the route, the proof's nonce, the answer's status and DPoP-Nonce. */
interface Exchange {
  path: string;
  nonce: unknown;
  status: number;
  issued: unknown;
}

/**
 * A plain HTTP proxy in front of `target` that records each exchange, so a test sees every
 * attempt. `dropProof`: it does not pass the DPoP header on, as a proxy unaware of DPoP might.
 */
async function startRecordingProxy(target: string, opts: { dropProof?: boolean } = {}): Promise<{ url: string; log: Exchange[] }> {
  const log: Exchange[] = [];
  const server = createServer((req, res) => {
    const { dpop: proof, ...rest } = req.headers;
    const headers = opts.dropProof ? rest : req.headers;
    const upstream = request(new URL(req.url ?? '/', target), { method: req.method, headers }, (up) => {
      log.push({ path: req.url ?? '', nonce: typeof proof === 'string' ? decodeJwt(proof).nonce : undefined, status: up.statusCode ?? 0, issued: up.headers['dpop-nonce'] });
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    req.pipe(upstream);
  });
  servers.push(server);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, log };
}

/** The RFC 7638 thumbprint of a proof's key, computed by jose. */
const proofThumbprint = (proof: string) => calculateJwkThumbprint(decodeProtectedHeader(proof).jwk as JWK, 'sha256');

describe('BrokerClient: DPoP-bound tasks', () => {
  it('starts a task bound to its key, renews with the same key, and ends it', async () => {
    const clock = new ManualClock();
    const task = await client({ clock }).startTask(intent, { ttl: '30s' });
    const first = await task.token();
    expect(task.dpopThumbprint).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(decodeJwt(first).cnf).toEqual({ jkt: task.dpopThumbprint });
    expect(await introspect(broker, first)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: task.dpopThumbprint } });

    clock.advance(25_000); // the renewal timer fires; renewal needs a proof by the same key
    const second = await task.token();
    expect(task.generation).toBe(2);
    expect((await broker.store.getGrant(task.grant))!.generation).toBe(2);
    expect(second).not.toBe(first);
    expect(decodeJwt(second).cnf).toEqual({ jkt: task.dpopThumbprint });

    await task.end();
    expect(await introspect(broker, second)).toMatchObject({ active: false });
    expect(clock.pending).toBe(0);
  });

  it('each task has its own key, and ES384 and EdDSA keys work too', async () => {
    const a = await client().startTask(intent);
    const b = await client().startTask(intent);
    expect(a.dpopThumbprint).not.toBe(b.dpopThumbprint);
    for (const algorithm of ['ES384', 'EdDSA'] as const) {
      const c = new BrokerClient({ url: broker.url, attestation: platformToken(saToken), dpop: { algorithm }, clock: new ManualClock() });
      const task = await c.startTask(intent);
      expect(decodeJwt(await task.token()).cnf).toEqual({ jkt: task.dpopThumbprint });
      await task.end();
    }
    await a.end();
    await b.end();
  });

  it('task.fetch sends Authorization: DPoP and a proof for that request, which a resource server accepts once', async () => {
    const rs = await startResourceServer(verifier);
    await client().withTask(intent, async (task) => {
      const token = await task.token();
      const res = await task.fetch(`${rs.origin}/orders/7?page=2#top`);
      expect(res.status, await res.clone().text()).toBe(200);
      expect(await res.json()).toEqual({ workload: 'k8s://test/ns/payments/sa/api', cnf: { jkt: task.dpopThumbprint } });

      const sent = rs.seen.at(-1)!;
      expect(sent.authorization).toBe(`DPoP ${token}`);
      const proof = sent.dpop!;
      expect(decodeProtectedHeader(proof)).toMatchObject({ typ: 'dpop+jwt', alg: 'ES256' });
      expect(decodeProtectedHeader(proof).jwk).not.toHaveProperty('d');
      expect(decodeJwt(proof)).toMatchObject({ htm: 'GET', htu: `${rs.origin}/orders/7`, ath: ath(token) });
      expect(await proofThumbprint(proof)).toBe(task.dpopThumbprint);

      // Each request has its own proof; a POST names its method.
      expect((await task.fetch(`${rs.origin}/orders`, { method: 'post', body: '{}' })).status).toBe(200);
      expect(decodeJwt(rs.seen.at(-1)!.dpop!)).toMatchObject({ htm: 'POST', htu: `${rs.origin}/orders` });
      expect(decodeJwt(rs.seen.at(-1)!.dpop!).jti).not.toBe(decodeJwt(proof).jti);

      // The captured request sent again: its proof's jti is used already.
      const replay = await fetch(`${rs.origin}/orders/7?page=2`, { headers: { authorization: `DPoP ${token}`, dpop: proof } });
      expect(replay.status).toBe(401);
      expect(replay.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_dpop_proof"/);
      // The token without a proof (as a bearer token) is refused too.
      const bearer = await fetch(`${rs.origin}/orders/7`, { headers: { authorization: `Bearer ${token}` } });
      expect(bearer.status).toBe(401);
    });
  });

  it("answers a resource server's use_dpop_nonce once, and keeps its nonce for the next request", async () => {
    const rs = await startResourceServer(verifier, { nonce: 'rs-nonce-0123456789' });
    await client().withTask(intent, async (task) => {
      const res = await task.fetch(`${rs.origin}/orders/1`);
      expect(res.status, await res.clone().text()).toBe(200);
      expect(rs.seen).toHaveLength(2);
      expect(decodeJwt(rs.seen[0]!.dpop!).nonce).toBeUndefined();
      expect(decodeJwt(rs.seen[1]!.dpop!).nonce).toBe('rs-nonce-0123456789');
      expect((await task.fetch(`${rs.origin}/orders/2`)).status).toBe(200);
      expect(rs.seen).toHaveLength(3);
    });
  });

  it('with broker nonces (dpop.nonce_secret): retries with the DPoP-Nonce it is sent, then renews and ends', async () => {
    const clock = new ManualClock();
    const proxy = await startRecordingProxy(nonceBroker.url);
    const c = client({ nonces: true, url: proxy.url, clock });
    const task = await c.startTask(intent, { ttl: '30s' });
    const token = await task.token();
    expect(decodeJwt(token).cnf).toEqual({ jkt: task.dpopThumbprint });
    clock.advance(25_000);
    const renewed = await task.token();
    expect(task.generation).toBe(2);
    // The resource server behind the same broker accepts the renewed token with its proof.
    const rs = await startResourceServer(nonceVerifier);
    expect((await task.fetch(`${rs.origin}/orders/3`)).status).toBe(200);
    await task.end();
    expect(await introspect(nonceBroker, renewed)).toMatchObject({ active: false });
    // A second task of the same client starts with the nonce it remembers: no refusal first.
    const again = await c.startTask(intent);
    await again.end();
    // Refused once without a nonce, then sent again at once with the one the answer carried; every
    // later proof carries the nonce of the answer before it.
    expect(proxy.log.map((e) => [e.path, e.status])).toEqual([
      ['/v1/tasks', 400],
      ['/v1/tasks', 201],
      [`/v1/tasks/${task.grant}/renew`, 200],
      [`/v1/tasks/${task.grant}/end`, 200],
      ['/v1/tasks', 201],
      [`/v1/tasks/${again.grant}/end`, 200],
    ]);
    expect(proxy.log[0]!.nonce).toBeUndefined();
    for (let i = 1; i < proxy.log.length; i++) {
      expect(proxy.log[i]!.nonce).toEqual(expect.any(String));
      expect(proxy.log[i]!.nonce).toBe(proxy.log[i - 1]!.issued);
    }
  });

  it('a rule with require_binding: dpop grants through a DPoP client and refuses one without DPoP', async () => {
    const task = await client().startTask(ledgerIntent);
    expect(decodeJwt(await task.token())).toMatchObject({ aud: 'db.ledger', cnf: { jkt: task.dpopThumbprint } });
    await task.end();
    const refused = await client({ dpop: false }).startTask(ledgerIntent).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BrokerResponseError);
    expect(refused).toMatchObject({ status: 403, code: 'access_denied' });
    expect((refused as BrokerResponseError).description).toMatch(/DPoP/);
  });

  it('fails closed when the broker answers a token not bound to the key (the proof was lost on the way)', async () => {
    const proxy = await startRecordingProxy(broker.url, { dropProof: true });
    const refused = await client({ url: proxy.url }).startTask(intent).catch((e: unknown) => e);
    expect(proxy.log.map((e) => e.status)).toEqual([201]);
    expect(refused).toBeInstanceOf(BrokerResponseError);
    expect(refused).toMatchObject({ code: 'unexpected_response', message: expect.stringMatching(/not bound to the DPoP key/) });
  });

  it('the key never shows its private half, in inspect or JSON', async () => {
    const key = await DpopKey.generate();
    expect(inspect(key)).not.toMatch(/"d"|privateKey/);
    expect(JSON.parse(JSON.stringify(key))).toEqual({ algorithm: 'ES256', thumbprint: key.thumbprint });
    await expect(DpopKey.generate('HS256' as never)).rejects.toThrow(/dpop.algorithm/);
  });
});
