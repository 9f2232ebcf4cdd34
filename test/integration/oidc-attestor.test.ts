/**
 * Platform-token attestation against a real local OIDC issuer (discovery + JWKS over HTTP on
 * loopback). No fetch mocks; time moves through the injected clock, never through sleeps.
 */
import { Writable } from 'node:stream';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createOidcAttestor, oidcAttestor, oidcConfigSchema, type OidcAttestor } from '../../src/attestation/oidc/index.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { AttestationFailed, BrokerError, ConfigError, Unavailable } from '../../src/errors.js';
import { createLogger, silentLogger, type Logger } from '../../src/log.js';

const AUD = 'jit-broker';
const T0 = Date.UTC(2026, 6, 1, 12, 0, 0); // fixed start of the injected clock
const T0s = T0 / 1000;

/** A clock the test moves by hand. */
function fakeClock(start = T0) {
  const c = { now: start, fn: () => c.now, advance: (ms: number) => void (c.now += ms) };
  return c;
}

const k8sMapping = { preset: 'kubernetes', cluster: 'prod' };

function issuerEntry(issuer: OidcIssuer, extra: Record<string, unknown> = {}) {
  return { issuer: issuer.issuer, audiences: [AUD], algorithms: ['ES256', 'RS256'], mapping: k8sMapping, ...extra };
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

function attestorFor(entries: Record<string, unknown>[], clock = fakeClock(), log: Logger = silentLogger): OidcAttestor {
  const a = createOidcAttestor(oidcConfigSchema.parse({ issuers: entries }), { clock: clock.fn, log });
  cleanups.push(() => a.close?.());
  return a;
}

async function freshIssuer(opts: Parameters<typeof startOidcIssuer>[0] = {}): Promise<OidcIssuer> {
  const i = await startOidcIssuer({ clock: () => T0, ...opts });
  cleanups.push(() => i.close());
  return i;
}

/** The error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<BrokerError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BrokerError) return e;
    throw new Error(`expected a BrokerError, got ${String(e)}`);
  }
  throw new Error('expected the promise to reject, it resolved');
}

async function expectAttestationFailed(p: Promise<unknown>, description: string | RegExp): Promise<BrokerError> {
  const err = await failure(p);
  expect(err).toBeInstanceOf(AttestationFailed);
  expect(err.status).toBe(401);
  expect(err.code).toBe('invalid_client');
  if (typeof description === 'string') expect(err.description).toBe(description);
  else expect(err.description).toMatch(description);
  return err;
}

async function expectUnavailable(p: Promise<unknown>, issuer: OidcIssuer): Promise<BrokerError> {
  const err = await failure(p);
  expect(err).toBeInstanceOf(Unavailable);
  expect(err.status).toBe(503);
  expect(err.code).toBe('temporarily_unavailable');
  expect(err.description).toBe(`signing keys of issuer ${issuer.issuer} are unavailable`);
  return err;
}

const saClaims = (ns = 'payments', sa = 'api') => ({
  aud: AUD,
  sub: `system:serviceaccount:${ns}:${sa}`,
  'kubernetes.io': { namespace: ns, serviceaccount: { name: sa, uid: 'sa-uid-1' } },
});

let issuer: OidcIssuer; // ES256, shared by the tests that do not count requests or break it
let stranger: OidcIssuer;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256', clock: () => T0 });
  stranger = await startOidcIssuer({ alg: 'ES256', clock: () => T0 });
});
afterAll(async () => {
  await issuer?.close();
  await stranger?.close();
});

describe('oidc attestor: mappings', () => {
  it('maps a Kubernetes service-account token to k8s://cluster/ns/NS/sa/SA with its attributes and expiry', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await issuer.mintServiceAccountToken({
      namespace: 'payments',
      serviceAccount: 'api',
      pod: 'api-7d9f',
      node: 'node-1',
      audience: AUD,
      ttlSeconds: 600,
      iat: T0s,
    });
    const k8s = decodeJwt(token)['kubernetes.io'] as { serviceaccount: { uid: string }; pod: { uid: string } };
    expect(await a.attest({ kind: 'oidc', token })).toEqual({
      id: 'k8s://prod/ns/payments/sa/api',
      kind: 'oidc',
      issuer: issuer.issuer,
      attributes: {
        namespace: 'payments',
        service_account: 'api',
        service_account_uid: k8s.serviceaccount.uid,
        pod_name: 'api-7d9f',
        pod_uid: k8s.pod.uid,
        node_name: 'node-1',
      },
      evidenceExpiresAt: (T0s + 600) * 1000,
    });
    expect(a.notReady()).toBeUndefined();
  });

  it('rejects Kubernetes tokens whose kubernetes.io claim is missing or disagrees with sub', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const noClaim = await issuer.mint({ aud: AUD, sub: 'system:serviceaccount:payments:api' });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: noClaim }), 'platform token lacks claim kubernetes.io required by the mapping');
    const mismatch = await issuer.mint({ ...saClaims('payments', 'api'), sub: 'system:serviceaccount:kube-system:api' });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: mismatch }), 'platform token kubernetes.io claim does not match its sub');
    const notSa = await issuer.mint({ ...saClaims(), sub: 'alice' });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: notSa }), 'platform token is not a Kubernetes service-account token');
  });

  it('maps GitHub Actions tokens by ref, environment and pull request', async () => {
    const a = attestorFor([issuerEntry(issuer, { mapping: { preset: 'github' } })]);
    const byRef = await a.attest({ kind: 'oidc', token: await issuer.mintGitHubToken({ repository: 'acme/deploy', audience: AUD, iat: T0s }) });
    expect(byRef.id).toBe('github://acme/deploy/ref/refs/heads/main');
    expect(byRef.evidenceExpiresAt).toBe((T0s + 300) * 1000);
    expect(byRef.attributes).toMatchObject({
      repository: 'acme/deploy',
      repository_owner: 'acme',
      repository_id: '123456789',
      ref: 'refs/heads/main',
      ref_type: 'branch',
      sha: 'a'.repeat(40),
      workflow: 'deploy',
      job_workflow_ref: 'acme/deploy/.github/workflows/deploy.yml@refs/heads/main',
      event_name: 'push',
      run_id: '4242',
      actor: 'octocat',
    });
    expect(byRef.attributes).not.toHaveProperty('environment');

    const byEnv = await a.attest({ kind: 'oidc', token: await issuer.mintGitHubToken({ repository: 'acme/deploy', environment: 'prod', audience: AUD }) });
    expect(byEnv.id).toBe('github://acme/deploy/environment/prod');
    expect(byEnv.attributes.environment).toBe('prod');

    const byPr = await a.attest({ kind: 'oidc', token: await issuer.mintGitHubToken({ repository: 'acme/deploy', pullRequest: true, audience: AUD }) });
    expect(byPr.id).toBe('github://acme/deploy/pull_request');
    expect(byPr.attributes.event_name).toBe('pull_request');

    const numeric = await a.attest({
      kind: 'oidc',
      token: await issuer.mintGitHubToken({ repository: 'acme/deploy', audience: AUD, claims: { run_id: 99, ref_protected: true } }),
    });
    expect(numeric.attributes).toMatchObject({ run_id: '99', ref_protected: 'true' });
  });

  it('rejects GitHub tokens whose sub does not belong to their repository claim', async () => {
    const a = attestorFor([issuerEntry(issuer, { mapping: { preset: 'github' } })]);
    const token = await issuer.mintGitHubToken({ repository: 'acme/deploy', audience: AUD, claims: { sub: 'repo:evil/deploy:ref:refs/heads/main' } });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token sub does not match its repository claim');
    const noRepo = await issuer.mint({ aud: AUD, sub: 'repo:acme/deploy:ref:refs/heads/main' });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: noRepo }), 'platform token lacks claim repository required by the mapping');
  });

  it('maps with a template: claims percent-encoded, iss_host, dotted paths, attributes copied', async () => {
    const a = attestorFor([
      issuerEntry(issuer, { mapping: { template: 'ci://{iss_host}/{sub}/{kubernetes.io.namespace}', attributes: ['sub', 'email', 'kubernetes.io.namespace', 'absent'] } }),
    ]);
    const token = await issuer.mint({ aud: AUD, sub: 'repo:acme/x', email: 'ci@acme.test', 'kubernetes.io': { namespace: 'build' } });
    const w = await a.attest({ kind: 'oidc', token });
    expect(w.id).toBe(`ci://${new URL(issuer.issuer).host}/repo%3Aacme%2Fx/build`);
    expect(w.attributes).toEqual({ sub: 'repo:acme/x', email: 'ci@acme.test', 'kubernetes.io.namespace': 'build' });

    const missing = await issuer.mint({ aud: AUD, sub: 'repo:acme/x' });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: missing }), 'platform token lacks claim kubernetes.io.namespace required by the mapping');
    const empty = await issuer.mint({ aud: AUD, sub: '', 'kubernetes.io': { namespace: 'build' } });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: empty }), 'platform token claim "sub" must be a non-empty string');
  });

  it('rejects attribute values longer than the bound instead of truncating them', async () => {
    const a = attestorFor([issuerEntry(issuer, { mapping: { template: 'ci://x/{sub}', attributes: ['email'] } })]);
    const token = await issuer.mint({ aud: AUD, sub: 'a', email: 'x'.repeat(600) });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token claim email is too long');
  });
});

describe('oidc attestor: token validation', () => {
  it('refuses a token from an issuer that is not configured', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await stranger.mintServiceAccountToken({ namespace: 'payments', serviceAccount: 'api', audience: AUD });
    const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'token issuer is not trusted');
    expect(err.detail).toContain(stranger.issuer);
  });

  it('refuses a bad signature (foreign key under a known kid)', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await issuer.mintWithForeignKey(saClaims());
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token signature is invalid');
  });

  it('refuses alg none', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token: issuer.forgeNone(saClaims()) }), 'platform token algorithm is not allowed');
    expect(err.detail).toContain('"none"');
  });

  it('refuses HS256 keyed with the issuer public key (alg confusion)', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await issuer.forgeHs256WithPublicKey(saClaims());
    const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token algorithm is not allowed');
    expect(err.detail).toContain('"HS256"');
  });

  it('refuses an algorithm outside the issuer allow-list (RS256 token, ES256-only issuer)', async () => {
    const rsa = await freshIssuer({ alg: 'RS256' });
    const token = await rsa.mint(saClaims());
    const strict = attestorFor([issuerEntry(rsa, { algorithms: ['ES256'] })]);
    await expectAttestationFailed(strict.attest({ kind: 'oidc', token }), 'platform token algorithm is not allowed');
    expect(rsa.requests).toBe(0); // refused before any key lookup
    const lenient = attestorFor([issuerEntry(rsa, { algorithms: ['RS256'] })]);
    expect((await lenient.attest({ kind: 'oidc', token })).id).toBe('k8s://prod/ns/payments/sa/api');
  });

  it('refuses an expired token', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await issuer.mint(saClaims(), { iat: T0s - 600, ttlSeconds: 120 });
    const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token has expired');
    expect(err.detail).toContain('exp');
  });

  it('accepts expiry within the leeway and refuses it beyond', async () => {
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(issuer, { leeway: '30s' })], clock);
    const token = await issuer.mint(saClaims(), { iat: T0s, ttlSeconds: 60 });
    clock.now = (T0s + 60 + 20) * 1000; // 20 s past exp
    expect((await a.attest({ kind: 'oidc', token })).evidenceExpiresAt).toBe((T0s + 60) * 1000);
    clock.now = (T0s + 60 + 31) * 1000; // 31 s past exp
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token has expired');

    const tight = attestorFor([issuerEntry(issuer, { leeway: '0s' })], fakeClock((T0s + 60 + 1) * 1000));
    await expectAttestationFailed(tight.attest({ kind: 'oidc', token }), 'platform token has expired');
  });

  it('refuses a wrong audience and accepts any configured one', async () => {
    const a = attestorFor([issuerEntry(issuer, { audiences: [AUD, 'jit-broker-eu'] })]);
    const wrong = await issuer.mint({ ...saClaims(), aud: 'https://kubernetes.default.svc' });
    const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token: wrong }), 'platform token audience is not accepted');
    expect(err.detail).toContain('kubernetes.default.svc');
    const other = await issuer.mint({ ...saClaims(), aud: ['https://kubernetes.default.svc', 'jit-broker-eu'] });
    expect((await a.attest({ kind: 'oidc', token: other })).issuer).toBe(issuer.issuer);
  });

  it('refuses a token without kid before any key lookup (require_kid defaults to true)', async () => {
    const fresh = await freshIssuer();
    const noKid = await fresh.mint(saClaims(), { kid: null });
    expect(decodeProtectedHeader(noKid)).not.toHaveProperty('kid');
    for (const entry of [issuerEntry(fresh), issuerEntry(fresh, { require_kid: true })]) {
      const a = attestorFor([entry]);
      const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token: noKid }), 'platform token does not name its signing key (kid)');
      expect(err.detail).toContain('require_kid');
    }
    expect(fresh.discoveryRequests + fresh.requests).toBe(0); // refused before any key lookup
    const a = attestorFor([issuerEntry(fresh)]);
    expect((await a.attest({ kind: 'oidc', token: await fresh.mint(saClaims()) })).id).toBe('k8s://prod/ns/payments/sa/api');
  });

  it('accepts a token without kid when require_kid is false, only while a single published key fits', async () => {
    const fresh = await freshIssuer();
    const noKid = await fresh.mint(saClaims(), { kid: null });
    const a = attestorFor([issuerEntry(fresh, { require_kid: false })]);
    expect((await a.attest({ kind: 'oidc', token: noKid })).id).toBe('k8s://prod/ns/payments/sa/api');
    expect((await a.attest({ kind: 'oidc', token: await fresh.mint(saClaims()) })).id).toBe('k8s://prod/ns/payments/sa/api');
    // Still a real signature check: a foreign key without kid is refused.
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: await fresh.mintWithForeignKey(saClaims(), { kid: null }) }), 'platform token signature is invalid');

    // Two published keys fit: jose cannot choose, and the token is refused.
    await fresh.rotateKey();
    const ambiguous = attestorFor([issuerEntry(fresh, { require_kid: false })]);
    const token = await fresh.mint(saClaims(), { kid: null });
    await expectAttestationFailed(ambiguous.attest({ kind: 'oidc', token }), 'platform token does not identify its signing key (kid)');
  });

  it('refuses a token without exp', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    const token = await issuer.mint(saClaims(), { noExp: true });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token lacks the required "exp" claim');
  });

  it('refuses a token older than max_token_age, and one without iat while the age is checked', async () => {
    const a = attestorFor([issuerEntry(issuer, { max_token_age: '1h' })]);
    const old = await issuer.mint(saClaims(), { iat: T0s - 2 * 3600, ttlSeconds: 3 * 3600 });
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: old }), 'platform token is too old');
    const noIat = await issuer.mint({ ...saClaims(), iat: undefined });
    expect(decodeJwt(noIat).iat).toBeUndefined();
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: noIat }), 'platform token lacks the required "iat" claim');

    const unlimited = attestorFor([issuerEntry(issuer, { max_token_age: false })]);
    expect((await unlimited.attest({ kind: 'oidc', token: old })).id).toBe('k8s://prod/ns/payments/sa/api');
    expect((await unlimited.attest({ kind: 'oidc', token: noIat })).id).toBe('k8s://prod/ns/payments/sa/api');
    const future = await issuer.mint(saClaims(), { iat: T0s + 120 });
    await expectAttestationFailed(unlimited.attest({ kind: 'oidc', token: future }), 'platform token was issued in the future');
  });

  it('refuses typ at+jwt and other token kinds; accepts absent, JWT and JOSE (any case, optional application/)', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    for (const typ of ['at+jwt', 'application/at+jwt', 'txntoken+jwt', 'wit+jwt', 'dpop+jwt']) {
      const token = await issuer.mint(saClaims(), { typ });
      const err = await expectAttestationFailed(a.attest({ kind: 'oidc', token }), /is not accepted \(access, transaction and workload tokens/);
      expect(err.description).toContain(`"${typ}"`);
    }
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: await issuer.mint(saClaims(), { typ: 'secevent+jwt' }) }), 'platform token type "secevent+jwt" is not accepted');
    for (const typ of [null, 'JWT', 'jwt', 'application/jwt', 'JOSE', 'application/jose']) {
      const token = await issuer.mint(saClaims(), { typ });
      expect((await a.attest({ kind: 'oidc', token })).id).toBe('k8s://prod/ns/payments/sa/api');
    }
  });

  it('refuses malformed tokens as 401, never 500', async () => {
    const a = attestorFor([issuerEntry(issuer)]);
    for (const token of ['', 'not-a-jwt', 'a.b.c', `${Buffer.from('{"alg":"ES256"}').toString('base64url')}.e30.`, 'x'.repeat(20_000)])
      await expectAttestationFailed(a.attest({ kind: 'oidc', token }), /^(platform token is malformed: .+|token issuer is not trusted|platform token is larger than 16384 bytes \(attestation\.oidc\.max_token_bytes\))$/);
  });

  it('never writes the token into errors or logs', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const broken = await freshIssuer();
    broken.setMode('down');
    const a = attestorFor([issuerEntry(issuer), issuerEntry(broken, { mapping: { preset: 'kubernetes', cluster: 'broken' } })], fakeClock(), createLogger({ level: 'trace', destination: sink }));
    await a.warm();
    const tokens = [
      await issuer.mintWithForeignKey(saClaims()),
      await issuer.mint(saClaims(), { iat: T0s - 600, ttlSeconds: 60 }),
      await broken.mint(saClaims()),
    ];
    for (const token of tokens) {
      const err = await failure(a.attest({ kind: 'oidc', token }));
      const [, , signature = ''] = token.split('.');
      for (const text of [err.message, err.description, err.detail ?? '', JSON.stringify(err)]) expect(text).not.toContain(signature);
    }
    expect(lines.length).toBeGreaterThan(0); // the broken issuer's fetch failure was logged
    for (const token of tokens) expect(lines.join('')).not.toContain(token.split('.')[2]);
  });
});

describe('oidc attestor: keys', () => {
  it('shares one in-flight fetch between concurrent requests', async () => {
    const fresh = await freshIssuer();
    const a = attestorFor([issuerEntry(fresh)]);
    const tokens = await Promise.all(Array.from({ length: 8 }, () => fresh.mint(saClaims())));
    const results = await Promise.all(tokens.map((token) => a.attest({ kind: 'oidc', token })));
    expect(results.map((w) => w.id)).toEqual(Array(8).fill('k8s://prod/ns/payments/sa/api'));
    expect(fresh.discoveryRequests).toBe(1);
    expect(fresh.requests).toBe(1);
  });

  it('picks up a rotated key (new kid) by refetching on the unknown kid, once per cooldown', async () => {
    const fresh = await freshIssuer();
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(fresh, { key_cache: { refresh_cooldown: '30s' } })], clock);
    const oldToken = await fresh.mint(saClaims());
    await a.attest({ kind: 'oidc', token: oldToken });
    expect(fresh.requests).toBe(1);

    const newKid = await fresh.rotateKey();
    const newToken = await fresh.mint(saClaims());
    expect(decodeJwt(newToken)).toBeTruthy();
    // Fetched just now: within the cooldown the unknown kid is refused without a fetch.
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: newToken }), 'platform token signing key is not known');
    expect(fresh.requests).toBe(1);

    clock.advance(31_000);
    expect((await a.attest({ kind: 'oidc', token: newToken })).id).toBe('k8s://prod/ns/payments/sa/api');
    expect(fresh.requests).toBe(2);
    expect(a.status()[0]).toMatchObject({ issuer: fresh.issuer, keys: 2, fetched_at: clock.now });
    expect((await a.attest({ kind: 'oidc', token: oldToken })).id).toBe('k8s://prod/ns/payments/sa/api'); // old key still published
    expect(fresh.kid).toBe(newKid);

    // The issuer drops the old key: once refreshed, tokens under it no longer verify.
    await fresh.rotateKey({ dropOld: true });
    const newest = await fresh.mint(saClaims());
    clock.advance(31_000);
    await a.attest({ kind: 'oidc', token: newest });
    expect(fresh.requests).toBe(3);
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: oldToken }), 'platform token signing key is not known');
  });

  it('caches a verified token for reuse, yet re-applies time rules and key changes on every use', async () => {
    const fresh = await freshIssuer();
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(fresh, { max_token_age: '20m', key_cache: { ttl: '10m' } })], clock);
    const token = await fresh.mint(saClaims(), { iat: T0s, ttlSeconds: 3600 });
    const first = await a.attest({ kind: 'oidc', token });
    expect(await a.attest({ kind: 'oidc', token })).toBe(first); // the very same verified result
    expect(fresh.requests).toBe(1);

    // The issuer drops the key. Past the cache ttl the keys it has still serve (stale within
    // max_stale) while a refetch runs in the background; once that lands, the cached
    // verification no longer counts and the token is refused.
    await fresh.rotateKey({ dropOld: true });
    clock.advance(11 * 60_000);
    expect(await a.attest({ kind: 'oidc', token })).toBe(first);
    await vi.waitFor(() => expect(a.status()[0]?.fetched_at).toBe(clock.now));
    expect(fresh.requests).toBe(2);
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token signing key is not known');

    // Time rules on a cached token: max_token_age, then exp, exactly as on a first use.
    const live = await fresh.mint(saClaims(), { iat: T0s + 11 * 60, ttlSeconds: 30 * 60 });
    expect((await a.attest({ kind: 'oidc', token: live })).id).toBe('k8s://prod/ns/payments/sa/api');
    clock.advance(19 * 60_000); // 19 min after iat: within max_token_age
    expect((await a.attest({ kind: 'oidc', token: live })).id).toBe('k8s://prod/ns/payments/sa/api');
    clock.advance(2 * 60_000); // 21 min after iat
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: live }), 'platform token is too old');
    const lenient = attestorFor([issuerEntry(fresh, { max_token_age: false, leeway: '0s' })], clock);
    const short = await fresh.mint(saClaims(), { iat: clock.now / 1000, ttlSeconds: 60 });
    await lenient.attest({ kind: 'oidc', token: short });
    clock.advance(61_000);
    await expectAttestationFailed(lenient.attest({ kind: 'oidc', token: short }), 'platform token has expired');
  });

  it("judges a cached token by jose's whole-second time rules: refused at the same instant as an uncached verify", async () => {
    const cfg = { max_token_age: '1900ms', leeway: '500ms' }; // jose sees maxTokenAge 1 s, clockTolerance 0.5 s
    /** Attests with a fresh attestor (no cache) at `nowMs`. */
    const uncached = (token: string, nowMs: number, entry = issuerEntry(issuer, cfg)) =>
      attestorFor([entry], fakeClock(nowMs)).attest({ kind: 'oidc', token });

    // max_token_age: too old once floor(now) - iat - 0.5 > 1, i.e. from iat + 2 s on (not iat + 2.4 s).
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(issuer, cfg)], clock);
    const token = await issuer.mint(saClaims(), { iat: T0s, ttlSeconds: 3600 });
    const first = await a.attest({ kind: 'oidc', token });
    clock.now = T0 + 1999;
    expect(await a.attest({ kind: 'oidc', token })).toBe(first); // a cache hit
    expect((await uncached(token, clock.now)).id).toBe(first.id);
    clock.now = T0 + 2000;
    await expectAttestationFailed(uncached(token, clock.now), 'platform token is too old');
    await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token is too old');

    // exp: expired once exp <= floor(now) - 0.5, i.e. from exp + 1 s on (not exp + 0.5 s).
    const expiring = { ...cfg, max_token_age: false };
    const b = attestorFor([issuerEntry(issuer, expiring)], clock);
    const short = await issuer.mint(saClaims(), { iat: T0s, ttlSeconds: 60 });
    clock.now = T0;
    const cached = await b.attest({ kind: 'oidc', token: short });
    clock.now = (T0s + 61) * 1000 - 1;
    expect(await b.attest({ kind: 'oidc', token: short })).toBe(cached);
    expect((await uncached(short, clock.now, issuerEntry(issuer, expiring))).id).toBe(cached.id);
    clock.now = (T0s + 61) * 1000;
    await expectAttestationFailed(uncached(short, clock.now, issuerEntry(issuer, expiring)), 'platform token has expired');
    await expectAttestationFailed(b.attest({ kind: 'oidc', token: short }), 'platform token has expired');
  });

  it('prunes expired entries (past exp + leeway) from the verified cache as new tokens are cached', async () => {
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(issuer, { leeway: '30s' })], clock);
    const attest = async (sa: string, ttlSeconds = 600) =>
      a.attest({ kind: 'oidc', token: await issuer.mint(saClaims('payments', sa), { iat: clock.now / 1000, ttlSeconds }) });
    const longLived = await issuer.mint(saClaims('payments', 'long'), { iat: T0s, ttlSeconds: 3600 });
    const kept = await a.attest({ kind: 'oidc', token: longLived });
    for (let i = 0; i < 12; i++) await attest(`short-${i}`, 60);
    expect(a.cacheSize()).toBe(13);

    clock.now = T0 + 80_000; // past exp, within the leeway: nothing to prune yet
    await attest('x');
    expect(a.cacheSize()).toBe(14);

    clock.now = T0 + 90_000; // exp + leeway reached: each insert drops up to 8 expired entries
    await attest('a');
    expect(a.cacheSize()).toBeLessThan(14);
    await attest('b');
    await attest('c');
    expect(a.cacheSize()).toBe(5); // long, x, a, b, c
    expect(await a.attest({ kind: 'oidc', token: longLived })).toBe(kept); // live entries stay cached
  });

  it('does not let unknown kids cause a refetch storm', async () => {
    const fresh = await freshIssuer();
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(fresh)], clock);
    await a.attest({ kind: 'oidc', token: await fresh.mint(saClaims()) });
    expect(fresh.requests).toBe(1);
    clock.advance(31_000);
    const bogus = await Promise.all(Array.from({ length: 10 }, (_, i) => fresh.mint(saClaims(), { kid: `nope-${i}` })));
    const concurrent = await Promise.all(bogus.map((token) => failure(a.attest({ kind: 'oidc', token }))));
    for (const token of bogus) await expectAttestationFailed(a.attest({ kind: 'oidc', token }), 'platform token signing key is not known');
    for (const err of concurrent) expect(err.description).toBe('platform token signing key is not known');
    expect(fresh.requests).toBe(2); // one refetch for the whole burst
    clock.advance(10_000);
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: bogus[0] as string }), 'platform token signing key is not known');
    expect(fresh.requests).toBe(2);
    clock.advance(21_000);
    await expectAttestationFailed(a.attest({ kind: 'oidc', token: bogus[0] as string }), 'platform token signing key is not known');
    expect(fresh.requests).toBe(3);
  });

  it('keeps verifying with cached keys while the issuer is down, up to max_stale, then fails closed with 503', async () => {
    const fresh = await freshIssuer();
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(fresh, { key_cache: { ttl: '10m', max_stale: '1h' } })], clock);
    const token = await fresh.mint(saClaims(), { ttlSeconds: 3 * 3600 });
    await a.attest({ kind: 'oidc', token });
    expect(fresh.requests).toBe(1);

    fresh.setMode('down');
    clock.advance(11 * 60_000); // past ttl: stale keys within max_stale serve at once; the refresh runs behind and fails
    expect((await a.attest({ kind: 'oidc', token })).id).toBe('k8s://prod/ns/payments/sa/api');
    await vi.waitFor(() => expect(a.status()[0]).toMatchObject({ keys: 1, fetched_at: T0, error: expect.stringMatching(/returned HTTP 500/) }));
    expect(fresh.discoveryRequests).toBe(2);
    expect(a.notReady()).toBeUndefined();

    clock.advance(10_000); // within the cooldown: no new attempt
    await a.attest({ kind: 'oidc', token });
    expect(fresh.discoveryRequests).toBe(2);

    clock.advance(50 * 60_000); // 61 min after the fetch: beyond max_stale
    const err = await expectUnavailable(a.attest({ kind: 'oidc', token }), fresh);
    expect(err.detail).toMatch(/returned HTTP 500/);
    expect(err.retryAfter).toBe(1);
    expect(a.notReady()).toMatch(/^no OIDC issuer has usable signing keys \(.*returned HTTP 500/);

    fresh.setMode('ok');
    clock.advance(31_000);
    expect((await a.attest({ kind: 'oidc', token })).id).toBe('k8s://prod/ns/payments/sa/api');
    expect(a.notReady()).toBeUndefined();
  });

  it('fails closed when the issuer was never reachable, and notReady says why', async () => {
    const down = await freshIssuer();
    down.setMode('down');
    const a = attestorFor([issuerEntry(down)]);
    await expect(a.warm()).resolves.toBeUndefined();
    expect(a.status()).toEqual([{ issuer: down.issuer, keys: 0, error: `OIDC discovery document ${down.issuer}/.well-known/openid-configuration returned HTTP 500` }]);
    expect(a.notReady()).toBe(
      `no OIDC issuer has usable signing keys (${down.issuer}: OIDC discovery document ${down.issuer}/.well-known/openid-configuration returned HTTP 500)`,
    );
    await expectUnavailable(a.attest({ kind: 'oidc', token: await down.mint(saClaims()) }), down);

    // Nothing listening at all.
    const gone = await startOidcIssuer();
    const token = await gone.mint(saClaims());
    await gone.close();
    const b = attestorFor([issuerEntry(gone)]);
    const err = await expectUnavailable(b.attest({ kind: 'oidc', token }), gone);
    expect(err.detail).toMatch(/failed: fetch failed.*ECONNREFUSED/);
  });

  it('gives up on a slow issuer after fetch_timeout', async () => {
    const slow = await freshIssuer();
    slow.setMode('slow');
    const a = attestorFor([issuerEntry(slow, { key_cache: { fetch_timeout: '200ms' } })]);
    const err = await expectUnavailable(a.attest({ kind: 'oidc', token: await slow.mint(saClaims()) }), slow);
    expect(err.detail).toBe(`OIDC discovery document ${slow.issuer}/.well-known/openid-configuration timed out after 200ms`);
  });

  it('treats a JWKS that is not JSON, or that leaks private key members, as a fetch failure', async () => {
    const bad = await freshIssuer();
    const clock = fakeClock();
    const a = attestorFor([issuerEntry(bad, { jwks_uri: bad.jwksUri })], clock);
    const token = await bad.mint(saClaims());
    bad.setMode('garbage');
    const garbage = await expectUnavailable(a.attest({ kind: 'oidc', token }), bad);
    expect(garbage.detail).toBe(`JWKS ${bad.jwksUri} is not valid JSON`);
    clock.advance(31_000);
    bad.setMode('private');
    const leaked = await expectUnavailable(a.attest({ kind: 'oidc', token }), bad);
    expect(leaked.detail).toMatch(/is not a valid public JWKS at keys\.0: must be a public key: it contains the private\/secret member "d"/);
    expect(bad.discoveryRequests).toBe(0); // jwks_uri skips discovery
    clock.advance(31_000);
    bad.setMode('ok');
    expect((await a.attest({ kind: 'oidc', token })).id).toBe('k8s://prod/ns/payments/sa/api');
  });

  it('verifies with an inline JWKS without any fetch', async () => {
    const fresh = await freshIssuer();
    const jwks = (await (await fetch(fresh.jwksUri)).json()) as { keys: unknown[] };
    const before = fresh.requests;
    const a = attestorFor([issuerEntry(fresh, { jwks })]);
    expect(a.notReady()).toBeUndefined();
    expect((await a.attest({ kind: 'oidc', token: await fresh.mint(saClaims()) })).id).toBe('k8s://prod/ns/payments/sa/api');
    expect(fresh.requests).toBe(before);
    expect(fresh.discoveryRequests).toBe(0);
  });

  it('is ready when at least one issuer has keys, and trivially ready with none configured', async () => {
    const down = await freshIssuer();
    down.setMode('down');
    const a = attestorFor([issuerEntry(issuer), issuerEntry(down, { mapping: { preset: 'kubernetes', cluster: 'down' } })]);
    await a.warm();
    expect(a.notReady()).toBeUndefined();
    expect(a.status().map((s) => s.keys)).toEqual([1, 0]);
    expect(attestorFor([]).notReady()).toBeUndefined();
  });
});

describe('oidc config schema', () => {
  const base = { issuer: 'https://token.actions.githubusercontent.com', audiences: [AUD], mapping: { preset: 'github' } };
  const problems = (issuerBlock: Record<string, unknown>) => {
    const r = oidcConfigSchema.safeParse({ issuers: [issuerBlock] });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('applies defaults', () => {
    const cfg = oidcConfigSchema.parse({ issuers: [base] });
    expect(cfg.issuers[0]).toEqual({
      issuer: base.issuer,
      audiences: [AUD],
      algorithms: ['RS256', 'ES256'],
      keys: { source: 'discovery' },
      max_token_age: 86_400_000,
      require_kid: true,
      leeway: 30_000,
      max_token_lifetime: 86_400_000,
      key_cache: { ttl: 600_000, refresh_cooldown: 30_000, max_stale: 3_600_000, fetch_timeout: 2000 },
      mapping: { type: 'github' },
    });
    expect(oidcAttestor.kind).toBe('oidc');
    expect(oidcAttestor.configSchema).toBe(oidcConfigSchema);
  });

  it('rejects symmetric and none algorithms', () => {
    expect(problems({ ...base, algorithms: ['ES256', 'HS256'] })).toEqual([
      'issuers.0.algorithms.1: algorithm "HS256" is not allowed: only asymmetric algorithms (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519) may verify platform tokens',
    ]);
    expect(problems({ ...base, algorithms: ['none'] })[0]).toMatch(/^issuers\.0\.algorithms\.0: algorithm "none" is not allowed/);
  });

  it('rejects a leeway above 60s', () => {
    expect(problems({ ...base, leeway: '61s' })).toEqual(['issuers.0.leeway: must be <= 60s']);
    expect(problems({ ...base, leeway: '60s' })).toEqual([]);
  });

  it('max_token_lifetime: a duration of at least 1s', () => {
    expect(problems({ ...base, max_token_lifetime: '0s' })).toEqual(['issuers.0.max_token_lifetime: must be >= 1s']);
    expect(problems({ ...base, max_token_lifetime: '1h' })).toEqual([]);
  });

  it('max_token_bytes: one limit for all issuers, 1 KiB to 64 KiB, default 16 KiB', () => {
    expect(oidcConfigSchema.parse({ issuers: [base] }).max_token_bytes).toBe(16_384);
    expect(oidcConfigSchema.safeParse({ issuers: [base], max_token_bytes: 1023 }).success).toBe(false);
    expect(oidcConfigSchema.safeParse({ issuers: [base], max_token_bytes: 65_537 }).success).toBe(false);
    expect(oidcConfigSchema.parse({ issuers: [base], max_token_bytes: 8192 }).max_token_bytes).toBe(8192);
  });

  it('requires exactly one key source', () => {
    expect(problems({ ...base, discovery: true, jwks_uri: 'https://example.com/jwks' })).toEqual([
      'issuers.0: set exactly one key source (discovery, jwks_uri, jwks or jwks_file); got discovery and jwks_uri',
    ]);
    expect(problems({ ...base, jwks_uri: 'https://example.com/jwks', jwks_file: '/etc/jwks.json' })).toEqual([
      'issuers.0: set exactly one key source (discovery, jwks_uri, jwks or jwks_file); got jwks_uri and jwks_file',
    ]);
    expect(problems({ ...base, discovery: false })).toEqual(['issuers.0: no key source: set discovery: true, jwks_uri, jwks or jwks_file']);
  });

  it('reports typos, plain-http remote keys, private inline keys, bad mappings and duplicate issuers', () => {
    expect(problems({ ...base, audience: [AUD] })[0]).toMatch(/^issuers\.0: Unrecognized key: "audience"/);
    expect(problems({ ...base, jwks_uri: 'http://keys.example.com/jwks' })).toEqual([
      'issuers.0.jwks_uri: must use https (http is allowed only for loopback hosts)',
    ]);
    expect(problems({ ...base, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b', d: 'secret' }] } })).toEqual([
      'issuers.0.jwks.keys.0: must be a public key: it contains the private/secret member "d"',
    ]);
    expect(problems({ ...base, mapping: { preset: 'kubernetes' } })).toEqual([
      'issuers.0.mapping.cluster: preset kubernetes requires cluster (the name in k8s://<cluster>/ns/NS/sa/SA)',
    ]);
    expect(problems({ ...base, mapping: { template: '{sub}' } })).toEqual(['issuers.0.mapping.template: must start with a URI scheme, e.g. "ci://{iss_host}/{sub}"']);
    expect(problems({ ...base, audiences: [] })).toEqual(['issuers.0.audiences: must list at least one audience']);
    const dup = oidcConfigSchema.safeParse({ issuers: [base, base] });
    expect(dup.success ? [] : dup.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual([
      `issuers.1.issuer: issuer ${base.issuer} is listed twice`,
    ]);
  });

  it('refuses to start with an unreadable or private jwks_file', () => {
    const cfg = oidcConfigSchema.parse({ issuers: [{ ...base, jwks_file: '/nonexistent/jwks.json' }] });
    expect(() => createOidcAttestor(cfg, { clock: Date.now, log: silentLogger })).toThrow(ConfigError);
    try {
      createOidcAttestor(cfg, { clock: Date.now, log: silentLogger });
    } catch (e) {
      expect((e as ConfigError).problems[0]).toMatch(/^attestation\.oidc\.issuers\.0\.jwks_file: ENOENT/);
    }
  });
});
