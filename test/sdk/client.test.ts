/**
 * The workload client (jit-broker/sdk) against a real broker over real TLS, a real OIDC issuer
 * and the harness's Redis. Faults come from a real HTTPS proxy in front of the broker that loses
 * an answer or answers 503 once; the client's clock is a ManualClock, so nothing waits on time.
 */
import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import {
  AbortedError,
  AttestationSourceError,
  BrokerClient,
  githubActions,
  BrokerResponseError,
  CertificateExpiredError,
  ManualClock,
  mtls,
  platformToken,
  ReplayDetectedError,
  type Task,
} from '../../src/sdk/index.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';

const SVID = 'spiffe://example.org/ns/payments/sa/api';
const RS_CREDENTIAL = 'rs-sdk-credential-0123456789abcdef';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'sdk test' };
const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex');

let issuer: OidcIssuer;
let pki: TestPki;
let broker: BrokerRuntime & { prefix: string };
let proxy: FaultProxy;
const files = scratchDir('jit-sdk-');

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  broker = await startTestBroker(issuer, {
    tls: {
      cert: files.write('server.pem', pki.server.chainPem),
      key: files.write('server-key.pem', pki.server.keyPem),
      client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) },
    },
    attestation: {
      oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256' as const], mapping: { preset: 'kubernetes' as const, cluster: 'test' } }] },
      x509: {},
    },
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], max_ttl: '30s', max_lifetime: '1h' },
      { name: 'payments-svid', workloads: ['spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], max_ttl: '30s', require_binding: true },
    ],
    resource_servers: [{ name: 'rs-payments', audiences: ['db.payments'], credential_sha256: sha256hex(RS_CREDENTIAL) }],
  });
  proxy = await startFaultProxy(broker.url, pki);
});
afterAll(async () => {
  await proxy?.close();
  await broker?.close();
  await issuer?.close();
  files.cleanup();
});

const saToken = (serviceAccount = 'api') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount, audience: AUDIENCE, ttlSeconds: 600 });
const k8s = (sa = 'api') => `k8s://test/ns/payments/sa/${sa}`;
const introspect = async (token: string) =>
  (
    await httpsJson(`${broker.url}/oauth2/introspect`, {
      ca: pki.example.certPem,
      method: 'POST',
      body: new URLSearchParams({ token }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    })
  ).json;
const generation = async (grant: string) => (await broker.store.getGrant(grant))!.generation;

/** A platform-token client through the proxy (or straight to the broker), on a ManualClock. */
function oidcClient(opts: { sa?: string; direct?: boolean; clock?: ManualClock } = {}) {
  const clock = opts.clock ?? new ManualClock();
  const client = new BrokerClient({
    url: opts.direct ? broker.url : proxy.url,
    ca: pki.example.certPem,
    attestation: platformToken(() => saToken(opts.sa)),
    clock,
  });
  return { client, clock };
}

describe('BrokerClient: tokens', () => {
  it('renews ahead of expiry across several renewals (30 s TTL policy, client clock moved)', async () => {
    const { client, clock } = oidcClient({ sa: 'renewer' });
    const task = await client.startTask(intent, { ttl: '30s' });
    expect(task.intent).toMatchObject(intent);
    expect(task.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(30_000);
    const seen = new Set([decodeJwt(await task.token()).jti]);
    for (let i = 2; i <= 4; i++) {
      clock.advance(25_000); // the renewal timer fires on the way; 4 s left joins it
      const token = await task.token();
      seen.add(decodeJwt(token).jti);
      expect(task.generation).toBe(i);
      expect(await generation(task.grant)).toBe(i);
      expect(await introspect(token)).toMatchObject({ active: true, grant: task.grant });
    }
    expect(seen.size).toBe(4);
    await task.end();
    expect(clock.pending).toBe(0);
  });

  it("after the grant's lifetime, token() rejects with TaskEndedError (task_expired)", async () => {
    const { client, clock } = oidcClient({ sa: 'short' });
    const task = await client.startTask(intent, { ttl: '30s', lifetime: '30s' });
    expect(task.grantExpiresAt.getTime() - task.expiresAt.getTime()).toBeLessThan(1000); // exp is whole seconds
    expect(clock.pending).toBe(0); // nothing to renew: the token already ends with the grant
    clock.advance(20_000);
    expect(await task.token()).toBeTruthy();
    clock.advance(10_000);
    await expect(task.token()).rejects.toMatchObject({ name: 'TaskEndedError', code: 'task_expired' });
    expect(await generation(task.grant)).toBe(1);
    await task.end();
  });

  it('a grant revoked meanwhile: the renewal is refused (invalid_grant) and the task ends with that error', async () => {
    const { client, clock } = oidcClient({ sa: 'revoked' });
    const task = await client.startTask(intent, { ttl: '30s' });
    const revoked = await httpsJson(`${broker.url}/oauth2/revoke`, {
      ca: pki.example.certPem,
      method: 'POST',
      body: new URLSearchParams({ token: await task.token() }).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    });
    expect(revoked.status).toBe(200);
    clock.advance(25_000);
    await expect(task.token()).rejects.toMatchObject({ name: 'BrokerResponseError', code: 'invalid_grant', status: 400 });
    await expect(task.token()).rejects.toMatchObject({ code: 'invalid_grant' });
    expect(clock.pending).toBe(0);
    await task.end();
  });

  it('100 concurrent token() calls near expiry: exactly one renewal', async () => {
    const { client, clock } = oidcClient({ sa: 'flight' });
    const task = await client.startTask(intent, { ttl: '30s' });
    clock.advance(25_000);
    const tokens = await Promise.all(Array.from({ length: 100 }, () => task.token()));
    expect(new Set(tokens).size).toBe(1);
    expect(await generation(task.grant)).toBe(2);
    expect(task.generation).toBe(2);
    await Promise.all(Array.from({ length: 100 }, () => task.token()));
    expect(await generation(task.grant)).toBe(2);
    await task.end();
  });

  it('a renewal whose answer is lost is retried: the grant stays live, same jti as the broker recorded', async () => {
    const { client, clock } = oidcClient({ sa: 'lossy' });
    const task = await client.startTask(intent, { ttl: '30s' });
    const first = await task.token();
    proxy.faults.push({ path: /\/renew$/, kind: 'lose-answer' });
    const before = proxy.requests;
    clock.advance(25_000);
    // The lost attempt backs off on the client's clock: move it along until the retry lands.
    const token = await settleWith(task.token(), clock);
    const recorded = (await broker.store.getGrant(task.grant))!;
    expect(recorded).toMatchObject({ status: 'active', generation: 2 });
    expect(decodeJwt(token).jti).toBe(recorded.token_jti);
    expect(token).not.toBe(first);
    expect(proxy.requests - before).toBe(2); // the lost renewal and its retry
    expect(await introspect(token)).toMatchObject({ active: true });
    await task.end();
  });

  it('a true replay revokes the grant, ends the task with ReplayDetectedError and is never retried', async () => {
    const { client, clock } = oidcClient({ sa: 'replayed' });
    const task = await client.startTask(intent, { ttl: '30s' });
    const mine = await task.token();
    // Another holder of the same token renews twice: the task's token is now two behind.
    const renewDirect = async (token: string) =>
      (
        await httpsJson(`${broker.url}/v1/tasks/${task.grant}/renew`, {
          ca: pki.example.certPem,
          method: 'POST',
          headers: { authorization: `Bearer ${token}` },
          body: { attestation: { kind: 'oidc', token: await saToken('replayed') } },
        })
      ).json.access_token as string;
    await renewDirect(await renewDirect(mine));
    const before = proxy.requests;
    clock.advance(25_000);
    const err = await task.token().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplayDetectedError);
    expect(err).toMatchObject({ code: 'invalid_grant', status: 400, reason: 'replay_detected' });
    expect(proxy.requests - before).toBe(1);
    expect(await broker.store.getGrant(task.grant)).toMatchObject({ status: 'revoked', closed_by: 'replay_detected' });
    await expect(task.token()).rejects.toBeInstanceOf(ReplayDetectedError);
    await task.end();
    expect(proxy.requests - before).toBe(1);
    expect(clock.pending).toBe(0);
  });
});

describe('BrokerClient: attestation sources', () => {
  it('mtls(): a running task keeps its certificate (renewals and fetch); new tasks use the rotated one; an expired one ends the task', async () => {
    const a = await issueCertificate(pki.example, { uris: [SVID] });
    const b = await issueCertificate(pki.example, { uris: [SVID] });
    const certFile = files.write('svid.pem', a.chainPem);
    const keyFile = files.write('svid-key.pem', a.keyPem);
    const caFile = files.write('ca.pem', pki.example.certPem);
    const clock = new ManualClock();
    const client = new BrokerClient({ url: broker.url, attestation: mtls({ cert: certFile, key: keyFile, ca: caFile }), clock });
    const rs = await startEchoServer(pki);
    try {
      const one = await client.startTask(intent, { ttl: '30s' });
      expect(decodeJwt(await one.token()).cnf).toEqual({ 'x5t#S256': thumbprint(a) });
      // Rotate (a new inode and size, as SPIFFE helpers write).
      files.write('svid.pem', b.chainPem);
      files.write('svid-key.pem', b.keyPem);
      const two = await client.startTask(intent, { ttl: '30s' });
      expect(decodeJwt(await two.token()).cnf).toEqual({ 'x5t#S256': thumbprint(b) });
      // The first task renews with its own certificate, and fetches with it.
      clock.advance(25_000);
      const renewed = await one.token();
      expect(one.generation).toBe(2);
      expect(decodeJwt(renewed).cnf).toEqual({ 'x5t#S256': thumbprint(a) });
      const res = await one.fetch(`${rs.url}/echo`);
      expect(await res.json()).toEqual({ peer: thumbprint(a), authorization: `Bearer ${renewed}` });
      await two.token();
      await two.end();
      // The first certificate expires before the task ends: a typed error, start a new task.
      const notAfter = Date.parse(new X509Certificate(a.certPem).validTo);
      clock.advance(notAfter - clock.now() + 1);
      await expect(one.token()).rejects.toBeInstanceOf(CertificateExpiredError);
      await one.end();
    } finally {
      await rs.close();
    }
  });

  it('platformToken({ file }) is re-read on every attestation', async () => {
    const file = files.write('sa-token', await saToken('first'));
    const client = new BrokerClient({ url: broker.url, ca: pki.example.certPem, attestation: platformToken({ file }), clock: new ManualClock() });
    const one = await client.startTask(intent);
    expect(one.workload).toBe(k8s('first'));
    files.write('sa-token', await saToken('second'));
    const two = await client.startTask(intent);
    expect(two.workload).toBe(k8s('second'));
    await Promise.all([one.end(), two.end()]);
  });
});

describe('BrokerClient: githubActions()', () => {
  it('fetches the token from ACTIONS_ID_TOKEN_REQUEST_URL with its bearer and &audience=', async () => {
    const seen: { url?: string; authorization?: string }[] = [];
    const endpoint = createHttpServer((req, res) => {
      seen.push({ url: req.url ?? '', authorization: req.headers.authorization ?? '' });
      const ok = req.headers.authorization === 'Bearer request-token' && new URL(req.url ?? '', 'http://x').searchParams.get('audience') === AUDIENCE;
      if (!ok) {
        res.writeHead(401).end();
        return;
      }
      void saToken('actions').then((value) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1, value })));
    });
    await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
    try {
      const env = {
        ACTIONS_ID_TOKEN_REQUEST_URL: `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}/_apis/token?api-version=2.0`,
        ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-token',
      };
      const client = new BrokerClient({ url: broker.url, ca: pki.example.certPem, attestation: githubActions({ audience: AUDIENCE, env }), clock: new ManualClock() });
      const task = await client.startTask(intent);
      expect(task.workload).toBe(k8s('actions'));
      expect(seen).toEqual([{ url: `/_apis/token?api-version=2.0&audience=${AUDIENCE}`, authorization: 'Bearer request-token' }]);
      await task.end();
      const unset = new BrokerClient({ url: broker.url, ca: pki.example.certPem, attestation: githubActions({ audience: AUDIENCE, env: {} }) });
      await expect(unset.startTask(intent)).rejects.toBeInstanceOf(AttestationSourceError);
    } finally {
      await new Promise((r) => endpoint.close(r));
    }
  });
});

describe('BrokerClient: withTask', () => {
  it('ends the grant when fn resolves and when it throws: introspection turns inactive', async () => {
    const { client } = oidcClient({ sa: 'scoped', direct: true });
    let kept: { task: Task; token: string } | undefined;
    const out = await client.withTask(intent, async (task) => {
      kept = { task, token: await task.token() };
      expect(await introspect(kept.token)).toMatchObject({ active: true });
      return 42;
    });
    expect(out).toBe(42);
    expect(await introspect(kept!.token)).toEqual({ active: false });
    expect(await broker.store.getGrant(kept!.task.grant)).toMatchObject({ status: 'ended' });

    const boom = new Error('boom');
    await expect(
      client.withTask(intent, async (task) => {
        kept = { task, token: await task.token() };
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(await introspect(kept!.token)).toEqual({ active: false });
    expect(await broker.store.getGrant(kept!.task.grant)).toMatchObject({ status: 'ended' });
  });
});

describe('BrokerClient: retries', () => {
  it('503 with Retry-After: waits exactly that long on its clock, then retries', async () => {
    const { client, clock } = oidcClient({ sa: 'patient' });
    proxy.faults.push({ path: /\/v1\/tasks$/, kind: '503', retryAfter: 2 });
    const before = proxy.requests;
    const started = client.startTask(intent);
    await vi.waitFor(() => expect(clock.pending).toBe(1));
    expect(proxy.requests - before).toBe(1);
    clock.advance(1_999);
    expect(clock.pending).toBe(1);
    expect(proxy.requests - before).toBe(1);
    clock.advance(1);
    const task = await started;
    expect(proxy.requests - before).toBe(2);
    await task.end();
  });

  it('400 is not retried: a typed error with the broker code, description and status', async () => {
    const { client } = oidcClient({ sa: 'bad' });
    const before = proxy.requests;
    const err = await client.startTask({ ...intent, actions: [] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BrokerResponseError);
    expect(err).toMatchObject({ code: 'invalid_request', status: 400, description: expect.any(String) });
    expect(proxy.requests - before).toBe(1);
  });

  it('abort stops a pending retry', async () => {
    const { client, clock } = oidcClient({ sa: 'aborted' });
    proxy.faults.push({ path: /\/v1\/tasks$/, kind: '503', retryAfter: 5 });
    const before = proxy.requests;
    const controller = new AbortController();
    const started = client.startTask(intent, { signal: controller.signal });
    await vi.waitFor(() => expect(clock.pending).toBe(1));
    controller.abort();
    await expect(started).rejects.toBeInstanceOf(AbortedError);
    expect(clock.pending).toBe(0);
    clock.advance(10_000);
    expect(proxy.requests - before).toBe(1);
  });
});

describe('BrokerClient: process lifetime', () => {
  it('after end() the process exits by itself, with no open handles', async () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const script = join(here, 'fixtures', 'exit-after-end.ts');
    const tokenFile = files.write('exit-token', await saToken('exiter'));
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: resolve(here, '../..'),
      env: { ...process.env, BROKER_URL: broker.url, BROKER_CA: files.write('exit-ca.pem', pki.example.certPem), TOKEN_FILE: tokenFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(err).toBe('');
    expect(code).toBe(0);
    const report = JSON.parse(out.trim().split('\n').at(-1)!) as { ended: boolean; handles: string[]; timersWhileLive: number; timers: number };
    expect(report).toEqual({ ended: true, handles: [], timersWhileLive: 1, timers: 0 });
  });
});

describe('jit-broker/sdk imports', () => {
  it('imports only src/protocol/ and its own modules (and node: builtins, zod through protocol)', () => {
    const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]/g)) {
        const spec = m[1]!;
        if (spec.startsWith('node:')) continue;
        if (!spec.startsWith('.')) {
          expect(relative(root, file).startsWith('protocol/') && spec === 'zod', `${relative(root, file)} imports ${spec}`).toBe(true);
          continue;
        }
        const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
        const rel = relative(root, target);
        expect(rel.startsWith('sdk/') || rel.startsWith('protocol/'), `${relative(root, file)} imports ${rel}`).toBe(true);
        visit(target);
      }
    };
    visit(join(root, 'sdk/index.ts'));
    expect([...seen].some((f) => f.includes('/protocol/'))).toBe(true);
  });
});

// ── helpers: real servers ──

function thumbprint(c: Credential): string {
  return createHash('sha256').update(new X509Certificate(c.certPem).raw).digest('base64url');
}

/** Resolves `p`, moving the client's clock a second at a time while it waits on a backoff. */
async function settleWith<T>(p: Promise<T>, clock: ManualClock): Promise<T> {
  let done = false;
  const out = p.finally(() => (done = true));
  for (let i = 0; i < 200 && !done; i++) {
    await new Promise((r) => setTimeout(r, 20));
    if (clock.pending > 0 && !done) clock.advance(500);
  }
  return out;
}

type Fault = { path: RegExp; kind: 'lose-answer' } | { path: RegExp; kind: '503'; retryAfter: number };
interface FaultProxy {
  url: string;
  faults: Fault[];
  requests: number;
  close(): Promise<void>;
}

/**
 * An HTTPS reverse proxy in front of the broker. Each queued fault applies once, to the next
 * request whose path matches: `503` answers it without forwarding; `lose-answer` forwards it,
 * waits for the broker's answer, and drops the client's connection instead of relaying it.
 */
async function startFaultProxy(target: string, pki: TestPki): Promise<FaultProxy> {
  const state: FaultProxy = { url: '', faults: [], requests: 0, close: async () => undefined };
  const server: Server = createServer({ cert: pki.server.chainPem, key: pki.server.keyPem }, (req, res) => {
    state.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const i = state.faults.findIndex((f) => f.path.test(req.url ?? ''));
      const fault = i >= 0 ? state.faults.splice(i, 1)[0] : undefined;
      if (fault?.kind === '503') {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': String(fault.retryAfter) });
        res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'try later' }));
        return;
      }
      const headers = { ...req.headers };
      delete headers.host;
      const up = httpsRequest(`${target}${req.url}`, { method: req.method, headers, ca: pki.example.certPem, agent: false }, (upRes) => {
        const body: Buffer[] = [];
        upRes.on('data', (d: Buffer) => body.push(d));
        upRes.on('end', () => {
          if (fault?.kind === 'lose-answer') {
            req.socket.destroy();
            return;
          }
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          res.end(Buffer.concat(body));
        });
      });
      up.on('error', () => req.socket.destroy());
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `https://localhost:${(server.address() as AddressInfo).port}`;
  state.close = () => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });
  return state;
}

/** A resource server requiring a client certificate: echoes the peer's thumbprint and the Authorization header. */
async function startEchoServer(pki: TestPki): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer({ cert: pki.server.chainPem, key: pki.server.keyPem, ca: pki.example.certPem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const peer = (req.socket as import('node:tls').TLSSocket).getPeerCertificate();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ peer: createHash('sha256').update(peer.raw).digest('base64url'), authorization: req.headers.authorization }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `https://localhost:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
