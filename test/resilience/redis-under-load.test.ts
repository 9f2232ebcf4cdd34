/**
 * Redis dies (SIGKILL) or stalls (CLIENT PAUSE) while the broker is under load.
 *
 * test/e2e/store-outage.test.ts covers the single-request view of an outage: 503 + Retry-After
 * while Redis is down, /readyz naming the store, recovery without a restart, a renewal whose reply
 * never came, a voided create. This file adds load: 16 request loops of POST /v1/tasks against a
 * private redis-server (persistent: `appendfsync always`, so every acknowledged write survives
 * SIGKILL), and checks every single answer:
 *   - a 201 carries a token whose grant exists once Redis is back (no token without a grant);
 *   - anything else is a 503 with Retry-After and a JSON error_description (never a 500, a reset
 *     connection or a hang: each request has a client timeout far above the store's);
 *   - once the broker has settled, no live grant exists that no caller received (the undelivered
 *     writes are voided), so a failure under load leaves nothing holding a cap slot.
 * Time bounds below are "never hangs" bounds, not speed figures (bench/ measures speed).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { createLocalJWKSet, decodeJwt, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { startRedisServer, type RedisProcess } from '../helpers/redis.js';

/** The store's command timeout: a slower Redis is down (fail closed). */
const COMMAND_TIMEOUT_MS = 300;
/** Each request's client-side timeout: far above the command timeout, so a hang shows as such. */
const CLIENT_TIMEOUT_MS = 5_000;
/** Slack on top of the command timeout for a loaded 2-core machine (scheduling, not Redis). */
const MARGIN_MS = 1_000;
const LOOPS = 16;
const LOAD_MS = 3_000;
/** Longer than the 503 bound by far: a request that waited for the pause would break the bound. */
const PAUSE_MS = 2_500;
/** Issuance must work again this soon after Redis answers again (the brief's bound). */
const RECOVERY_MS = 2_000;

let issuer: OidcIssuer;
let redis: RedisProcess;
let broker: BrokerRuntime;
let dataDir: string;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  dataDir = await mkdtemp(join(tmpdir(), 'jit-resilience-redis-'));
  // Private to this file: killing it harms no other test. AOF with fsync before every reply.
  redis = await startRedisServer({ args: ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dataDir] });
  broker = await startTestBroker(issuer, {
    store: { kind: 'redis', url: redis.url, key_prefix: 'load:', command_timeout: `${COMMAND_TIMEOUT_MS}ms` },
    // Each loop is one workload with hundreds of grants: the active cap is not under test here.
    grants: { max_active_per_workload: 100_000 },
  });
});
afterAll(async () => {
  await broker?.close();
  await redis?.stop();
  await issuer?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  /** HTTP status, or what happened instead of an answer. */
  status: number | 'client-timeout' | 'network-error';
  startedAt: number;
  endedAt: number;
  ms: number;
  retryAfter: string | null;
  body: Record<string, unknown>;
  error?: string;
}

const saToken = (serviceAccount: string) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount, audience: AUDIENCE, ttlSeconds: 3600 });

const workloadOf = (serviceAccount: string) => `k8s://test/ns/payments/sa/${serviceAccount}`;

/** One POST /v1/tasks with a client timeout; never throws. */
async function startTask(platformToken: string): Promise<Outcome> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), CLIENT_TIMEOUT_MS);
  const startedAt = performance.now();
  const done = (o: Omit<Outcome, 'startedAt' | 'endedAt' | 'ms'>): Outcome => {
    const endedAt = performance.now();
    return { ...o, startedAt, endedAt, ms: endedAt - startedAt };
  };
  try {
    const res = await fetch(`${broker.url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        attestation: { kind: 'oidc', token: platformToken },
        intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'resilience under load' },
      }),
      signal: ctrl.signal,
    });
    const text = await res.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { raw: text.slice(0, 200) };
    }
    return done({ status: res.status, retryAfter: res.headers.get('retry-after'), body });
  } catch (e) {
    const timedOut = ctrl.signal.aborted;
    return done({ status: timedOut ? 'client-timeout' : 'network-error', retryAfter: null, body: {}, error: (e as Error).message });
  } finally {
    clearTimeout(timer);
  }
}

interface Load {
  readonly outcomes: Outcome[];
  /** Workload ids of the loops. */
  readonly workloads: string[];
  count(pred: (o: Outcome) => boolean): number;
  stop(): Promise<void>;
}

/** LOOPS request loops, each its own workload (service account `<name>-<i>`), until stopped. */
async function startLoad(name: string): Promise<Load> {
  const accounts = Array.from({ length: LOOPS }, (_, i) => `${name}-${i}`);
  const tokens = await Promise.all(accounts.map(saToken));
  const outcomes: Outcome[] = [];
  let running = true;
  const loops = tokens.map(async (token) => {
    while (running) outcomes.push(await startTask(token));
  });
  return {
    outcomes,
    workloads: accounts.map(workloadOf),
    count: (pred) => outcomes.filter(pred).length,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns whether it held. */
async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, every = 20): Promise<boolean> {
  const deadline = performance.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (performance.now() >= deadline) return false;
    await sleep(every);
  }
}

/** Every answer is a 201 with a token, or a 503 that fails closed as documented. */
function expectOnlyTokensOrFailClosed(outcomes: Outcome[]): void {
  const wrong = outcomes.filter((o) => {
    if (o.status === 201) return typeof o.body.access_token !== 'string' || typeof o.body.grant !== 'string';
    if (o.status !== 503) return true;
    return (
      !/^[1-9][0-9]*$/.test(o.retryAfter ?? '') ||
      o.body.error !== 'temporarily_unavailable' ||
      typeof o.body.error_description !== 'string' ||
      o.body.error_description.length === 0
    );
  });
  // Shown in full on failure: the status, the body and how long it took.
  expect(wrong.slice(0, 5).map((o) => ({ status: o.status, ms: Math.round(o.ms), retryAfter: o.retryAfter, body: o.body, error: o.error }))).toEqual([]);
}

/**
 * Every 201's token names a grant the store holds, for the token's workload, still active; and
 * the token verifies with the broker's JWKS (sampled: the signature is not what Redis endangers).
 */
async function expectEveryTokenHasItsGrant(outcomes: Outcome[]): Promise<Set<string>> {
  const issued = outcomes.filter((o) => o.status === 201);
  const delivered = new Set<string>();
  const missing: string[] = [];
  for (let i = 0; i < issued.length; i += 50) {
    await Promise.all(
      issued.slice(i, i + 50).map(async (o) => {
        const claims = decodeJwt(o.body.access_token as string);
        expect(claims.grant).toBe(o.body.grant);
        const grant = await broker.store.getGrant(claims.grant as string);
        if (!grant || grant.id !== claims.grant || grant.workload !== claims.sub || grant.status !== 'active') {
          missing.push(`${String(claims.grant)}: ${grant ? `${grant.status} for ${grant.workload}` : 'no grant'}`);
        }
        delivered.add(claims.grant as string);
      }),
    );
  }
  expect(missing).toEqual([]);
  const jwks = createLocalJWKSet((await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
  for (const o of [...issued.slice(0, 3), ...issued.slice(-3)]) {
    await expect(jwtVerify(o.body.access_token as string, jwks, { issuer: 'https://broker.test', audience: 'db.payments' })).resolves.toBeTruthy();
  }
  return delivered;
}

/**
 * Once the broker has voided what it could not deliver, every live grant of the load's
 * workloads is one whose token a caller received. Polled: voiding retries with backoff.
 */
async function expectNoUndeliveredLiveGrant(load: Load, delivered: Set<string>): Promise<void> {
  let stray: string[] = [];
  const settled = await waitFor(
    async () => {
      stray = [];
      for (const workload of load.workloads) {
        const live = await broker.store.listWorkloadGrants(workload, { now: Date.now(), liveOnly: true, limit: 1000 });
        expect(live.length).toBeLessThan(1000); // the listing is complete
        for (const g of live) if (!delivered.has(g.id)) stray.push(g.id);
      }
      return stray.length === 0;
    },
    15_000,
    250,
  );
  expect(settled ? [] : stray).toEqual([]);
}

/** Polls POST /v1/tasks until a 201; returns how long it took (fails the test beyond `ms`). */
async function untilIssued(token: string, ms: number): Promise<number> {
  const t0 = performance.now();
  let last: Outcome | undefined;
  const ok = await waitFor(
    async () => {
      last = await startTask(token);
      return last.status === 201;
    },
    ms + 1_000,
    20,
  );
  const took = performance.now() - t0;
  expect(ok, `no 201 within ${ms} ms; last answer ${last?.status} ${JSON.stringify(last?.body)}`).toBe(true);
  return took;
}

describe('Redis under load', () => {
  it('SIGKILL mid-load: each answer is a 201 whose grant survived, or a 503 with Retry-After; issuance resumes within 2 s of the restart, no broker restart', async () => {
    const probe = await saToken('kill-probe');
    const load = await startLoad('kill');
    const loadStart = performance.now();
    let killedAt = 0;
    let upAt = 0;
    try {
      // Mid-load: the loops are past their first answers and tokens are being issued.
      expect(await waitFor(() => performance.now() - loadStart >= 1_000 && load.count((o) => o.status === 201) >= 20, 15_000)).toBe(true);
      const pid = redis.pid;
      await redis.kill(); // SIGKILL to that PID, then wait for the exit
      killedAt = performance.now();
      expect(() => process.kill(pid, 0)).toThrow(); // the process is gone
      await sleep(600);
      await redis.restart(); // same port, same data directory: the AOF is replayed
      upAt = performance.now();
      const took = await untilIssued(probe, RECOVERY_MS);
      expect(took).toBeLessThan(RECOVERY_MS);
      // The load goes on past the recovery, so its loops see issuance resume too.
      await sleep(Math.max(500, loadStart + LOAD_MS - performance.now()));
    } finally {
      await load.stop();
    }

    const { outcomes } = load;
    expectOnlyTokensOrFailClosed(outcomes);
    // The kill hit the load: tokens before it, 503s around it, tokens again after the restart.
    expect(outcomes.filter((o) => o.status === 201 && o.endedAt < killedAt).length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.status === 503).length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.status === 201 && o.startedAt > upAt).length).toBeGreaterThan(0);
    // No answer was a hang cut off by the client.
    expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(CLIENT_TIMEOUT_MS);

    const delivered = await expectEveryTokenHasItsGrant(outcomes);
    await expectNoUndeliveredLiveGrant(load, delivered);
  }, 60_000);

  it('CLIENT PAUSE ALL mid-load: requests fail closed (503 + Retry-After) within the command timeout plus a margin, never waiting out the pause; issuance works once it ends', async () => {
    const probe = await saToken('pause-probe');
    const load = await startLoad('pause');
    const loadStart = performance.now();
    let pausedAt = 0;
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await admin.connect();
      expect(await waitFor(() => performance.now() - loadStart >= 1_000 && load.count((o) => o.status === 201) >= 20, 15_000)).toBe(true);
      await admin.client('PAUSE', PAUSE_MS, 'ALL'); // every client's commands wait, reads and writes
      pausedAt = performance.now();
      admin.disconnect();
      // The pause is still on: the requests in it have been answered by now, not held.
      await sleep(PAUSE_MS - 500);
      const during = load.outcomes.filter((o) => o.startedAt > pausedAt + 100 && o.endedAt < pausedAt + PAUSE_MS - 500);
      expect(during.length).toBeGreaterThan(0);
      expect(during.every((o) => o.status === 503)).toBe(true);
      await sleep(Math.max(0, pausedAt + PAUSE_MS - performance.now()));
      // After the pause: the writes Redis held run now; issuance works again by itself.
      await untilIssued(probe, RECOVERY_MS);
      await sleep(500);
    } finally {
      admin.disconnect();
      await load.stop();
    }

    const { outcomes } = load;
    expectOnlyTokensOrFailClosed(outcomes);
    expect(outcomes.filter((o) => o.status === 503).length).toBeGreaterThan(0);
    // Fail closed at the configured timeout, not at the end of the pause: no answer (503 or
    // not) took as long as the command timeout plus the margin, well under the pause.
    const slowest = outcomes.reduce((a, b) => (b.ms > a.ms ? b : a));
    expect(slowest.ms, `slowest answer: ${slowest.status} after ${Math.round(slowest.ms)} ms`).toBeLessThan(COMMAND_TIMEOUT_MS + MARGIN_MS);
    expect(outcomes.filter((o) => o.status === 201 && o.startedAt > pausedAt + PAUSE_MS).length).toBeGreaterThan(0);

    const delivered = await expectEveryTokenHasItsGrant(outcomes);
    // The paused creates ran once the pause ended; each was voided, none is left live.
    await expectNoUndeliveredLiveGrant(load, delivered);
  }, 60_000);
});
