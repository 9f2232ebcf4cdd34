/**
 * The verifier's JWKS cache against a real JWKS over HTTP that the test serves, counts, changes
 * and stops: fetched once and not per call, a next key published ahead picked up on its unknown
 * kid (with a cool-down), served from cache while the JWKS is down for at most jwksMaxStale, then
 * failing closed, and recovering. Time moves only by the test's clock.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createVerifier, TaskTokenError, VerifierUnavailable, type Verifier, type VerifierOptions } from '../../src/verify/index.js';

const ISSUER = 'https://issuer.test';
const MIN = 60_000;

interface JwksServer {
  url: string;
  requests: number;
  keys: JWK[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

function jwksServer(port = 0): JwksServer {
  let server: Server | undefined;
  const s: JwksServer = {
    url: '',
    requests: 0,
    keys: [],
    async start() {
      server = createServer((req, res) => {
        s.requests++;
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
        res.end(JSON.stringify({ keys: s.keys }));
      });
      server.listen(port, '127.0.0.1');
      await once(server, 'listening');
      port = (server.address() as AddressInfo).port;
      s.url = `http://127.0.0.1:${port}/.well-known/jwks.json`;
    },
    async stop() {
      server?.closeAllConnections();
      await new Promise((r) => server?.close(r));
    },
  };
  return s;
}

type Alg = 'ES256' | 'EdDSA' | 'RS256';
async function signingKey(kid: string, alg: Alg = 'ES256') {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { jwk, kid, alg, privateKey };
}
type Key = Awaited<ReturnType<typeof signingKey>>;

/** A token with the broker's task-token claims, signed by `key`, valid for an hour from `nowMs`. */
function taskToken(key: Key, nowMs: number, header: Record<string, unknown> = {}, claims: Record<string, unknown> = {}): Promise<string> {
  const iat = Math.floor(nowMs / 1000);
  return new SignJWT({
    sub: 'spiffe://example.org/api',
    client_id: 'spiffe://example.org/api',
    grant: 'g1',
    txn: 't1',
    jti: `j-${Math.random()}`,
    nbf: iat,
    scope: 'read',
    authorization_details: [{ type: 'jit_task', locations: ['svc'], actions: ['read'], resources: ['svc://x/**'], purpose: 'p', identifier: 't1' }],
    ...claims,
  })
    .setProtectedHeader({ alg: key.alg, typ: 'at+jwt', kid: key.kid, ...header })
    .setIssuer(ISSUER)
    .setAudience('svc')
    .setIssuedAt(iat)
    .setExpirationTime(iat + 3600)
    .sign(key.privateKey);
}

let jwks: JwksServer;
let a: Key;
let b: Key;
let now: number;
const verifiers: Verifier[] = [];
const verifier = (over: Partial<VerifierOptions> = {}) => {
  const v = createVerifier({ issuer: ISSUER, audience: 'svc', jwksUri: jwks.url, clock: () => now, ...over });
  verifiers.push(v);
  return v;
};
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof TaskTokenError ? e.code : String(e)));

beforeAll(async () => {
  a = await signingKey('key-a');
  b = await signingKey('key-b');
});
afterEach(async () => {
  for (const v of verifiers.splice(0)) v.close();
  await jwks.stop();
});
afterAll(() => undefined);

describe('JWKS cache', () => {
  it('fetches once, not per call', async () => {
    jwks = jwksServer();
    await jwks.start();
    jwks.keys = [a.jwk];
    now = Date.now();
    const v = verifier();
    const token = await taskToken(a, now);
    for (let i = 0; i < 50; i++) await v.verify(token, { action: 'read', resource: 'svc://x/y' });
    await Promise.all(Array.from({ length: 50 }, () => v.verify(token)));
    expect(jwks.requests).toBe(1);
  });

  it('picks up the next key, published ahead, on its unknown kid, with a cool-down between fetches', async () => {
    jwks = jwksServer();
    await jwks.start();
    jwks.keys = [a.jwk];
    now = Date.now();
    const v = verifier({ jwksCooldown: '30s' });
    await v.verify(await taskToken(a, now));
    expect(jwks.requests).toBe(1);
    jwks.keys = [a.jwk, b.jwk]; // the broker publishes its next key ahead of use
    now += 30_000;
    const byB = await taskToken(b, now);
    await expect(v.verify(byB)).resolves.toMatchObject({ task: 't1' });
    expect(jwks.requests).toBe(2);

    // Unknown kids: one refetch, then none for a second however many arrive (not the whole
    // jwksCooldown: a replica that has just started signs with a kid no cached set has).
    const stranger = await signingKey('key-unknown');
    const forged = await taskToken(stranger, now);
    now += 1_000;
    const codes = await Promise.all(Array.from({ length: 20 }, () => code(v.verify(forged))));
    expect(new Set(codes)).toEqual(new Set(['unknown_key']));
    expect(jwks.requests).toBe(3);
    for (let i = 0; i < 20; i++) expect(await code(v.verify(forged))).toBe('unknown_key');
    now += 999;
    expect(await code(v.verify(forged))).toBe('unknown_key');
    expect(jwks.requests).toBe(3);
    now += 1;
    expect(await code(v.verify(forged))).toBe('unknown_key');
    expect(jwks.requests).toBe(4);

    // After a failed fetch, unknown kids wait the whole cool-down: an outage cannot make a storm.
    const port = Number(new URL(jwks.url).port);
    await jwks.stop();
    now += 1_000;
    expect(await code(v.verify(forged))).toBe('unknown_key'); // the attempt fails
    now += 30_000 - 1;
    jwks = Object.assign(jwksServer(port), { keys: [a.jwk, b.jwk] });
    await jwks.start();
    expect(await code(v.verify(forged))).toBe('unknown_key');
    expect(jwks.requests).toBe(0);
    now += 1;
    expect(await code(v.verify(forged))).toBe('unknown_key');
    expect(jwks.requests).toBe(1);

    // A key no longer published is no longer trusted once the set is refetched.
    jwks.keys = [b.jwk];
    now += 1_000;
    expect(await code(v.verify(await taskToken(stranger, now)))).toBe('unknown_key'); // triggers the refetch
    expect(await code(v.verify(await taskToken(a, now)))).toBe('unknown_key');
  });

  it('with the JWKS down, serves cached keys for jwksMaxStale after the last good fetch, then fails closed; recovers when it is back', async () => {
    jwks = jwksServer();
    await jwks.start();
    jwks.keys = [a.jwk];
    const start = Date.now();
    now = start;
    const v = verifier({ jwksMaxStale: '10m', jwksRefresh: '5m', jwksCooldown: '30s' });
    const token = await taskToken(a, now);
    await v.verify(token);
    await jwks.stop();

    now = start + 6 * MIN; // past the refresh age: a background refresh fails, the cached key serves
    await expect(v.verify(token)).resolves.toBeDefined();
    now = start + 10 * MIN;
    await expect(v.verify(token)).resolves.toBeDefined(); // the bound itself still serves
    now = start + 10 * MIN + 1;
    const err = await v.verify(token).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerifierUnavailable);
    expect([(err as VerifierUnavailable).code, (err as VerifierUnavailable).status]).toEqual(['jwks_unavailable', 503]);
    now += 60_000;
    expect(await code(v.verify(token))).toBe('jwks_unavailable');

    // Back on the same port: after the cool-down, the next call fetches and verification resumes.
    const port = Number(new URL(jwks.url).port);
    jwks = Object.assign(jwksServer(port), { keys: [a.jwk] });
    await jwks.start();
    now += 30_000;
    await expect(v.verify(token)).resolves.toBeDefined();
    expect(jwks.requests).toBe(1);
  });

  it('fails closed with no key set yet, at most one fetch per cool-down', async () => {
    jwks = jwksServer();
    await jwks.start();
    const url = jwks.url;
    await jwks.stop();
    now = Date.now();
    const v = createVerifier({ issuer: ISSUER, audience: 'svc', jwksUri: url, clock: () => now });
    verifiers.push(v);
    expect(await code(v.verify(await taskToken(a, now)))).toBe('jwks_unavailable');
    expect(await code(v.verify(await taskToken(a, now)))).toBe('jwks_unavailable');
    expect(v.stats.jwksFetches).toBe(1);
    await expect(v.warmUp()).rejects.toThrow();
    jwks = jwksServer();
    await jwks.start();
  });

  it('accepts ES256, EdDSA and RS256 from the allow-list; the key decides the algorithm; typ at+jwt or application/at+jwt; duplicate members refused', async () => {
    jwks = jwksServer();
    await jwks.start();
    const ed = await signingKey('key-ed', 'EdDSA');
    const rs = await signingKey('key-rs', 'RS256');
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }); // jose would not make one
    jwks.keys = [
      a.jwk,
      ed.jwk,
      rs.jwk,
      // Published keys the verifier must ignore: an RSA key labelled ES256, an RSA key under 2048 bits, a symmetric one.
      { ...rs.jwk, kid: 'mislabeled', alg: 'ES256' },
      { ...(small.publicKey.export({ format: 'jwk' }) as JWK), kid: 'small', alg: 'RS256' },
      { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac', alg: 'HS256' },
    ];
    now = Date.now();
    const v = verifier();
    for (const k of [a, ed, rs]) expect(await code(v.verify(await taskToken(k, now)))).toBe('ok');
    expect(await code(v.verify(await taskToken(a, now, { typ: 'application/at+jwt' })))).toBe('ok');
    expect(await code(v.verify(await taskToken(a, now, { typ: 'JWT' })))).toBe('wrong_type');
    expect(await code(verifier({ algorithms: ['ES256'] }).verify(await taskToken(rs, now)))).toBe('algorithm_not_allowed');
    // An EdDSA-signed token naming the ES256 key's kid: the key's alg is not the header's.
    expect(await code(v.verify(await taskToken({ ...ed, kid: 'key-a' }, now)))).toBe('algorithm_not_allowed');
    expect(await code(v.verify(await taskToken({ ...rs, kid: 'mislabeled' }, now)))).toBe('unknown_key');
    const byA = await taskToken(a, now);
    const input = `${Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: 'small' })).toString('base64url')}.${byA.split('.')[1]}`;
    expect(await code(v.verify(`${input}.${sign('sha256', Buffer.from(input), small.privateKey).toString('base64url')}`))).toBe('unknown_key');
    // Claims the broker never mints in this shape.
    expect(await code(v.verify(await taskToken(a, now, {}, { scope: 'read write' })))).toBe('bad_claims');
    const token = await taskToken(a, now);
    const [h, p, s] = token.split('.') as [string, string, string];
    const json = Buffer.from(p, 'base64url').toString();
    const dup = Buffer.from(`${json.slice(0, -1)},"aud":"svc"}`).toString('base64url');
    expect(await code(v.verify(`${h}.${dup}.${s}`))).toBe('token_malformed');
  });

  it('leaves nothing running: a process that verified (JWKS over keep-alive, no close()) exits by itself', async () => {
    jwks = jwksServer();
    await jwks.start();
    jwks.keys = [a.jwk];
    const token = await taskToken(a, Date.now());
    const dir = mkdtempSync(join(tmpdir(), 'jit-verify-exit-'));
    const script = join(dir, 'exit.mts');
    const entry = resolve(import.meta.dirname, '../../src/verify/index.ts');
    writeFileSync(
      script,
      `import { createVerifier } from ${JSON.stringify(entry)};
const v = createVerifier({ issuer: ${JSON.stringify(ISSUER)}, audience: 'svc', jwksUri: ${JSON.stringify(jwks.url)} });
const task = await v.verify(process.env.TOKEN!, { action: 'read' });
console.log(task.workload);
`,
    );
    try {
      const out = await new Promise<string>((res, rej) =>
        execFile(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, TOKEN: token }, timeout: 15_000 }, (err, stdout) => (err ? rej(err) : res(stdout))),
      );
      expect(out.trim()).toBe('spiffe://example.org/api');
      expect(jwks.requests).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
