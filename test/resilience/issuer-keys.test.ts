/**
 * The platform-token issuer's keys unreachable, slow or rotated, seen through the broker's HTTP
 * API (POST /v1/tasks and /readyz), with the broker's clock injected and moved by hand.
 *
 * test/integration/oidc-attestor.test.ts drives the attestor's key cache directly; here the same
 * rules must hold end to end: cached keys keep verifying while the issuer is down up to
 * key_cache.max_stale, beyond it the broker fails closed with a 503 (Retry-After, an
 * error_description naming the issuer's keys; never a 401 or a 500) and /readyz names the check (its
 * log says why); a slow
 * issuer costs at most fetch_timeout; a rotated key is picked up without a restart, and a token
 * under a key the issuer no longer publishes is a 401. The issuer is the real local one (discovery
 * + JWKS over HTTP on loopback) and mints with the same injected clock.
 */
import { Writable } from 'node:stream';
import { decodeProtectedHeader } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';

/** The issuer entry's key cache: short, so minutes of fake time cover every state. */
const KEY_CACHE = { ttl: '1m', refresh_cooldown: '10s', max_stale: '5m', fetch_timeout: '300ms' } as const;
const TTL_MS = 60_000;
const COOLDOWN_MS = 10_000;
const MAX_STALE_MS = 5 * 60_000;
const FETCH_TIMEOUT_MS = 300;
/** A slow issuer answers after 10 s (src/dev/oidc-issuer.ts); giving up must come far sooner. */
const GIVE_UP_BOUND_MS = 3_000;

/** A clock the test moves by hand, starting at a whole second near real time. */
function fakeClock() {
  const c = { now: Math.floor(Date.now() / 1000) * 1000, fn: () => c.now, advance: (ms: number) => void (c.now += ms) };
  return c;
}

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

interface Setup {
  clock: ReturnType<typeof fakeClock>;
  issuer: OidcIssuer;
  broker: BrokerRuntime;
}

/** A fresh issuer and a broker that trusts it (discovery, the short key cache), on one fake clock. */
async function setup(opts: { issuerMode?: 'slow'; limits?: Record<string, unknown>; keyCache?: Record<string, string> } = {}): Promise<Setup & { startMs: number }> {
  const clock = fakeClock();
  const issuer = await startOidcIssuer({ alg: 'ES256', clock: clock.fn });
  cleanups.push(() => issuer.close());
  if (opts.issuerMode) issuer.setMode(opts.issuerMode);
  const t0 = performance.now();
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const broker = await startTestBroker(
    issuer,
    {
      attestation: {
        oidc: {
          issuers: [issuerEntry(issuer, { discovery: true, key_cache: { ...KEY_CACHE, ...opts.keyCache } })],
        },
      },
      ...(opts.limits ? { limits: opts.limits } : {}),
    },
    { clock: clock.fn, destination },
  );
  logs.set(broker, lines);
  const startMs = performance.now() - t0;
  cleanups.push(() => broker.close());
  return { clock, issuer, broker, startMs };
}

const saToken = (issuer: OidcIssuer) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 3 * 3600 });

/** POST /v1/tasks with a platform token; also how long the answer took. */
async function start(broker: BrokerRuntime, token: string) {
  const t0 = performance.now();
  const res = await postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'issuer keys resilience' },
  });
  return { ...res, ms: performance.now() - t0 };
}

/** Each broker's log lines (JSON), where /readyz's reasons go. */
const logs = new WeakMap<BrokerRuntime, string[]>();

/**
 * GET /readyz: its anonymous answer (ready, or the failing checks by name), and the reasons the
 * broker logged for the failing ones (the latest line per check).
 */
async function readyz(broker: BrokerRuntime) {
  const res = await fetch(`${broker.url}/readyz`);
  const body = (await res.json()) as { status: string; failing?: string[] };
  const reasons: Record<string, string> = {};
  for (const line of logs.get(broker) ?? []) {
    const entry = JSON.parse(line) as { msg?: string; check?: string; reason?: string };
    if (entry.msg === 'readiness check failing' && entry.check && entry.reason) reasons[entry.check] = entry.reason;
  }
  return { status: res.status, body, reasons };
}

/** A token was issued: 201 with an access token. */
function expectIssued(res: Awaited<ReturnType<typeof start>>): void {
  expect({ status: res.status, error: res.json.error_description }).toEqual({ status: 201, error: undefined });
  expect(typeof res.json.access_token).toBe('string');
}

/** Fail closed on the issuer's keys: 503, Retry-After, the documented error naming the issuer. */
function expectKeysUnavailable(res: Awaited<ReturnType<typeof start>>, issuer: OidcIssuer): void {
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  expect(res.json).toEqual({ error: 'temporarily_unavailable', error_description: `signing keys of issuer ${issuer.issuer} are unavailable` });
}

/** Refused evidence: 401 invalid_client with this description (never a 503 or 500). */
function expectRefused(res: Awaited<ReturnType<typeof start>>, description: string): void {
  expect(res.status).toBe(401);
  expect(res.json).toEqual({ error: 'invalid_client', error_description: description });
  expect(res.headers.get('www-authenticate')).toBe('Bearer realm="jit-broker"');
}

describe('issuer keys unreachable', () => {
  it('keeps verifying with cached keys while the issuer is down until max_stale, then 503 and /readyz names the issuer; recovers when it is back', async () => {
    const { clock, issuer, broker } = await setup();
    const reused = await saToken(issuer); // the token a workload keeps presenting
    expectIssued(await start(broker, reused));
    expect(issuer.requests).toBe(1); // fetched once at start (warm)

    issuer.setMode('down'); // discovery and JWKS answer HTTP 500
    clock.advance(TTL_MS + 60_000); // 2 min after the fetch: stale, well within max_stale
    expectIssued(await start(broker, reused));
    expectIssued(await start(broker, await saToken(issuer))); // a token never seen: verified by the cached keys
    expect(issuer.discoveryRequests).toBe(2); // the refresh was tried (and failed)
    const stillReady = await readyz(broker);
    expect(stillReady.status).toBe(200);
    expect(stillReady.body).toEqual({ status: 'ready' });

    clock.advance(MAX_STALE_MS - 2 * 60_000 - 1_000); // 1 s before max_stale: still served
    expectIssued(await start(broker, reused));
    clock.advance(2_000); // 1 s beyond max_stale
    for (const token of [reused, await saToken(issuer)]) expectKeysUnavailable(await start(broker, token), issuer);

    const notReady = await readyz(broker);
    expect(notReady.status).toBe(503);
    expect(notReady.body).toEqual({ status: 'not_ready', failing: ['attestation_oidc'] }); // the store is fine
    expect(notReady.reasons.attestation_oidc).toBe(
      `no OIDC issuer has usable signing keys (${issuer.issuer}: OIDC discovery document ${issuer.issuer}/.well-known/openid-configuration returned HTTP 500)`,
    );

    issuer.setMode('ok');
    clock.advance(COOLDOWN_MS + 1_000); // the next attempt is due
    expectIssued(await start(broker, reused));
    const ready = await readyz(broker);
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready' });
  });

  it('a slow issuer delays nobody while stale keys may serve; beyond max_stale it fails closed within fetch_timeout and /readyz says it timed out', async () => {
    const { clock, issuer, broker } = await setup();
    const reused = await saToken(issuer);
    expectIssued(await start(broker, reused));

    issuer.setMode('slow'); // answers only after 10 s
    clock.advance(TTL_MS + 1_000);
    // The refresh is due: it runs in the background (and gives up after fetch_timeout) while this
    // request is served by the keys it has, still within max_stale (the next test shows it did not wait).
    expectIssued(await start(broker, reused));
    await new Promise((r) => setTimeout(r, FETCH_TIMEOUT_MS + 200)); // the background attempt gives up

    clock.advance(MAX_STALE_MS); // beyond max_stale, past the cooldown: a new attempt, slow again
    const closed = await start(broker, reused);
    expectKeysUnavailable(closed, issuer);
    expect(closed.ms).toBeLessThan(GIVE_UP_BOUND_MS);
    const notReady = await readyz(broker);
    expect(notReady.status).toBe(503);
    expect(notReady.body.failing).toEqual(['attestation_oidc']);
    expect(notReady.reasons.attestation_oidc).toBe(
      `no OIDC issuer has usable signing keys (${issuer.issuer}: OIDC discovery document ${issuer.issuer}/.well-known/openid-configuration timed out after ${FETCH_TIMEOUT_MS}ms)`,
    );

    issuer.setMode('ok');
    clock.advance(COOLDOWN_MS + 1_000);
    expectIssued(await start(broker, reused));
    expect((await readyz(broker)).status).toBe(200);
  });

  it('while stale keys may serve, a request never waits for the refresh of a slow issuer', async () => {
    const { clock, issuer, broker } = await setup({ keyCache: { fetch_timeout: '8s' } });
    const reused = await saToken(issuer);
    expectIssued(await start(broker, reused));
    issuer.setMode('slow'); // answers only after 10 s; the broker would wait 8 s for it
    clock.advance(TTL_MS + 1_000);
    const stale = await start(broker, reused);
    expectIssued(stale);
    expect(stale.ms).toBeLessThan(4_000); // waiting would take the 8 s fetch_timeout: a bound, not a speed figure
  }, 20_000);

  it('a broker that starts while the issuer is slow starts within fetch_timeout, is not ready, fails closed, and recovers without a restart', async () => {
    const { clock, issuer, broker, startMs } = await setup({ issuerMode: 'slow' });
    expect(startMs).toBeLessThan(GIVE_UP_BOUND_MS); // start-up did not wait out the issuer
    const token = await saToken(issuer);

    const notReady = await readyz(broker);
    expect(notReady.status).toBe(503);
    expect(notReady.body.failing).toEqual(['attestation_oidc']);
    expect(notReady.reasons.attestation_oidc).toMatch(/timed out after 300ms\)$/);
    const first = await start(broker, token); // within the cooldown of the start-up attempt: no wait
    expectKeysUnavailable(first, issuer);
    clock.advance(COOLDOWN_MS + 1_000);
    const retried = await start(broker, token); // a new attempt, given up after fetch_timeout
    expectKeysUnavailable(retried, issuer);
    expect(retried.ms).toBeLessThan(GIVE_UP_BOUND_MS);

    issuer.setMode('ok');
    clock.advance(COOLDOWN_MS + 1_000);
    expectIssued(await start(broker, token));
    expect((await readyz(broker)).status).toBe(200);
  });

  it("an issuer outage is not the caller's failure: 503s spend none of its failed-attestation budget (never a 429), and it is served once the keys are back", async () => {
    const burst = 3;
    const { clock, issuer, broker } = await setup({ limits: { failed_attestations: { rate: 1, per: '1h', burst } } });
    const token = await saToken(issuer);
    issuer.setMode('down');
    clock.advance(MAX_STALE_MS + 1_000);
    for (let i = 0; i < 4 * burst; i++) expectKeysUnavailable(await start(broker, token), issuer);

    issuer.setMode('ok');
    clock.advance(COOLDOWN_MS + 1_000);
    expectIssued(await start(broker, token));
    // The budget is intact: real failures (a bad signature) count, and only past it come 429s.
    const forged = await issuer.mintWithForeignKey({ aud: AUDIENCE, sub: 'system:serviceaccount:payments:api' });
    const statuses: number[] = [];
    for (let i = 0; i < burst + 1; i++) statuses.push((await start(broker, forged)).status);
    expect(statuses).toEqual([...Array(burst).fill(401), 429]);
  });
});

describe('issuer key rotation', () => {
  it('picks up a new kid without a restart; a token under a key the issuer dropped is a 401 once the broker has refreshed', async () => {
    const { clock, issuer, broker } = await setup();
    const oldKid = issuer.kid;
    const underOld = await saToken(issuer);
    expectIssued(await start(broker, underOld));

    // The issuer adds a key and signs with it; the old one stays published.
    const newKid = await issuer.rotateKey();
    const underNew = await saToken(issuer);
    expect(decodeProtectedHeader(underNew).kid).toBe(newKid);
    clock.advance(COOLDOWN_MS + 1_000); // an unknown kid may trigger a refetch once per cooldown
    expectIssued(await start(broker, underNew));
    expect(issuer.requests).toBe(2);
    expectIssued(await start(broker, underOld)); // still published: still good

    // The issuer drops every key but a newer one. Until the broker refreshes it trusts what it
    // fetched; after the refresh (ttl passed) tokens under the dropped keys no longer verify.
    await issuer.rotateKey({ dropOld: true });
    const underNewest = await saToken(issuer);
    clock.advance(TTL_MS + 1_000);
    expectIssued(await start(broker, underNewest)); // refreshes the keys (ttl) and verifies
    expect(issuer.requests).toBe(3);
    for (const token of [underOld, underNew]) expectRefused(await start(broker, token), 'platform token signing key is not known');
    // A token that names the dropped kid but is signed by another key is no better.
    const mislabelled = await issuer.mint(
      { aud: AUDIENCE, sub: 'system:serviceaccount:payments:api', 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'api', uid: 'u' } } },
      { kid: oldKid, typ: null },
    );
    expectRefused(await start(broker, mislabelled), 'platform token signing key is not known');
    expect((await readyz(broker)).status).toBe(200); // refused tokens are not an outage
  });
});
