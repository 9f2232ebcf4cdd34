/**
 * Signing-key rotation across a fleet, with real processes: two `jit-broker serve` children
 * sharing one Redis (and one key prefix and one issuer URL), each rotated with `kill -USR2`.
 * A token from either instance must verify with the JWKS the other one serves, before and after
 * every rotation; each instance's next key must be in the fleet's JWKS before it signs anything;
 * retired keys stay published through the overlap; the published-key cap holds and fails closed.
 *
 * Scheduled rotation and pruning after the overlap need a clock the test controls: they are
 * covered in-process, with a fake clock, by test/integration/keyring.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { MAX_PUBLISHED_KEYS } from '../../src/tokens/keyring.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, postJson } from '../helpers/broker.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
/** One issuer URL for the whole fleet: tokens from any instance are interchangeable. */
const ISSUER = 'https://broker.test';
const RESOURCE_AUDIENCE = 'db.payments';
const intent = { audience: RESOURCE_AUDIENCE, actions: ['read'], resources: ['db://payments/orders'], purpose: 'rotation e2e' };
/** Every wait in this file is bounded by this (or less). */
const WAIT_MS = 15_000;

const dir = mkdtempSync(join(tmpdir(), 'jit-rotation-'));
let issuer: OidcIssuer;
/** Every child this file started, so afterAll can stop any a failed test left running. */
const started = new Set<Instance>();

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  for (const b of started) await stop(b);
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Instance {
  name: string;
  url: string;
  child: ChildProcess;
  exited: Promise<void>;
  logs(): string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fleetConfig(port: number, keyPrefix: string) {
  return {
    issuer: ISSUER,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'redis', url: redisUrl(), key_prefix: keyPrefix },
    log: { level: 'info' },
    // Scheduled rotation (6h) never fires during the test; rotations come from SIGUSR2 only.
    // The overlap (20m, the default, >= max_ttl + leeway) keeps every retired key published.
    tokens: { key_rotation: '6h', key_overlap: '20m', key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
    attestation: {
      oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] },
    },
    limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1_000_000, burst: 1_000_000 } },
    policies: [
      {
        name: 'payments',
        workloads: ['k8s://test/ns/payments/sa/*'],
        audiences: [RESOURCE_AUDIENCE],
        actions: ['read'],
        resources: ['db://payments/**'],
        max_ttl: '10m',
        max_lifetime: '1h',
      },
    ],
  };
}

/** The env of a child: none of the overrides loadConfig reads from the environment. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('JIT__') || ['JIT_CONFIG', 'JIT_ISSUER', 'REDIS_URL', 'PORT', 'LOG_LEVEL'].includes(k)) continue;
    env[k] = v;
  }
  return env;
}

/** Spawns `jit-broker serve --config <yaml>` and waits (bounded) until GET /readyz answers 200. */
async function startInstance(name: string, keyPrefix: string): Promise<Instance> {
  const port = await freePort();
  const path = join(dir, `${name}-${port}.yaml`);
  writeFileSync(path, stringify(fleetConfig(port, keyPrefix)));
  const child = spawn(process.execPath, [...CLI, 'serve', '--config', path], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const collect = (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-200_000);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const b: Instance = { name, url: `http://127.0.0.1:${port}`, child, exited, logs: () => out };
  started.add(b);
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const ready = await fetch(`${b.url}/readyz`).then((r) => r.status === 200).catch(() => false);
    if (ready) return b;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited before it was ready:\n${out}`);
    if (Date.now() > deadline) throw new Error(`${name} not ready within ${WAIT_MS} ms:\n${out}`);
    await sleep(100);
  }
}

/** SIGTERM to exactly this child's PID; SIGKILL if it has not exited 5 s later. */
async function stop(b: Instance): Promise<void> {
  const running = () => b.child.exitCode === null && b.child.signalCode === null;
  const within = (ms: number) => Promise.race([b.exited.then(() => true), sleep(ms).then(() => false)]);
  if (running()) {
    b.child.kill('SIGTERM');
    if (!(await within(5000)) && running()) {
      b.child.kill('SIGKILL');
      await within(5000);
    }
  }
  started.delete(b);
}

async function jwks(b: Instance): Promise<JSONWebKeySet> {
  const res = await fetch(`${b.url}/.well-known/jwks.json`);
  expect(res.status, `${b.name} JWKS`).toBe(200);
  return (await res.json()) as JSONWebKeySet;
}

const kidsOf = (set: JSONWebKeySet) => set.keys.map((k) => k.kid as string);

/**
 * Polls b's JWKS until it lists `count` keys (the count only grows here: nothing retires out of
 * its 20 min overlap during the test), then asserts it is exactly `count`. Bounded by WAIT_MS;
 * covers the ≤1 s in-process JWKS cache of the instance serving it.
 */
async function jwksWithCount(b: Instance, count: number): Promise<JSONWebKeySet> {
  const deadline = Date.now() + WAIT_MS;
  let set = await jwks(b);
  while (set.keys.length < count && Date.now() < deadline) {
    await sleep(50);
    set = await jwks(b);
  }
  expect(kidsOf(set), `${b.name} JWKS after waiting for ${count} keys\n${b.logs().slice(-4000)}`).toHaveLength(count);
  // Public halves only, each kid once.
  for (const k of set.keys) expect(k.d, `${b.name} serves private key material`).toBeUndefined();
  expect(new Set(kidsOf(set)).size).toBe(count);
  return set;
}

/** A task token from b for service account `sa` (POST /v1/tasks with a platform token). */
async function taskToken(b: Instance, sa: string): Promise<string> {
  const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: sa, audience: AUDIENCE, ttlSeconds: 600 });
  const res = await postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
  expect(res.status, `${b.name} POST /v1/tasks: ${JSON.stringify(res.json)}`).toBe(201);
  return res.json.access_token as string;
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;

/** Verifies a task token as a resource server would, with a JWKS it fetched (and maybe cached). */
async function verify(token: string, set: JSONWebKeySet, what: string): Promise<void> {
  await expect(
    jwtVerify(token, createLocalJWKSet(set), { issuer: ISSUER, audience: RESOURCE_AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'] }).then((r) => r.protectedHeader.kid),
    what,
  ).resolves.toBe(kidOf(token));
}

/** Counts JSON log lines of b with this msg. */
const logCount = (b: Instance, msg: string) => b.logs().split('\n').filter((l) => l.includes(`"msg":"${msg}"`)).length;

describe('key rotation across two broker processes sharing one Redis', () => {
  it('publishes each next key before use; tokens from either instance verify with the other’s JWKS before and after rotations', async () => {
    const prefix = uniquePrefix('rotation');
    const a = await startInstance('A', prefix);
    const b = await startInstance('B', prefix);
    const fleet = { A: a, B: b } as const;
    const otherOf = (x: Instance) => (x === a ? b : a);
    const rotations = { A: 0, B: 0 };
    // Per instance: current + next + one retired key per rotation (none leaves its overlap here).
    const expectedKeys = () => rotations.A + 2 + (rotations.B + 2);
    const tokens: Array<{ token: string; from: string }> = [];
    const signedKids = { A: [] as string[], B: [] as string[] };
    try {
      // At start each instance published its current AND its next key: 2 + 2, the same union on both.
      const startA = await jwksWithCount(a, 4);
      const startB = await jwksWithCount(b, 4);
      expect(new Set(kidsOf(startA))).toEqual(new Set(kidsOf(startB)));

      const mintAndCheck = async (x: Instance, name: 'A' | 'B') => {
        const token = await taskToken(x, `api-${name.toLowerCase()}`);
        tokens.push({ token, from: name });
        const kid = kidOf(token);
        if (signedKids[name].at(-1) !== kid) signedKids[name].push(kid);
        return token;
      };
      await mintAndCheck(a, 'A');
      await mintAndCheck(b, 'B');
      expect(signedKids.A[0]).not.toBe(signedKids.B[0]);
      await verify(tokens[0]!.token, startB, "A's first token with B's JWKS");
      await verify(tokens[1]!.token, startA, "B's first token with A's JWKS");

      for (const name of ['A', 'B', 'A', 'B'] as const) {
        const x = fleet[name];
        const other = otherOf(x);
        const before = await jwksWithCount(other, expectedKeys());
        const kidBefore = kidOf(await mintAndCheck(x, name));

        // Rotate x. Once x serves one key more, it has rotated and published its new next key.
        x.child.kill('SIGUSR2');
        rotations[name]++;
        await jwksWithCount(x, expectedKeys());
        const afterOther = await jwksWithCount(other, expectedKeys()); // past the other's JWKS cache
        const afterSelf = await jwks(x);
        expect(new Set(kidsOf(afterSelf)), 'both instances serve the same union').toEqual(new Set(kidsOf(afterOther)));

        const tokenAfter = await mintAndCheck(x, name);
        const kidAfter = kidOf(tokenAfter);
        expect(kidAfter, `${name} signs with a new key after SIGUSR2`).not.toBe(kidBefore);
        // Published ahead of use: the key x signs with now was already in the JWKS the other
        // instance served BEFORE the rotation, so a resource server that fetched (and cached) the
        // JWKS before the rotation verifies the new tokens without a refetch. If the broker only
        // made its next key at rotation time, kidAfter would be missing from `before` and both
        // assertions below would fail (as would the initial count of 2 keys per instance).
        expect(kidsOf(before), `${name}'s new kid was published before the rotation`).toContain(kidAfter);
        await verify(tokenAfter, before, `${name}'s post-rotation token with ${other.name}'s pre-rotation JWKS`);

        // The other instance is unaffected and still verifiable by x's JWKS.
        const otherName = name === 'A' ? 'B' : 'A';
        await mintAndCheck(other, otherName);

        // Every token so far, minted before or after any rotation by either instance, verifies with
        // the JWKS served by the other instance (and by its own).
        const fresh = { A: await jwks(a), B: await jwks(b) };
        for (const [i, t] of tokens.entries()) {
          const otherSet = t.from === 'A' ? fresh.B : fresh.A;
          await verify(t.token, otherSet, `token #${i} from ${t.from} with the other instance's JWKS after ${name} rotated`);
          await verify(t.token, fresh[t.from as 'A' | 'B'], `token #${i} from ${t.from} with its own instance's JWKS`);
        }
        // Retired keys stay published through the overlap, on both instances.
        for (const kid of [...signedKids.A, ...signedKids.B]) {
          expect(kidsOf(fresh.A)).toContain(kid);
          expect(kidsOf(fresh.B)).toContain(kid);
        }
        // Exact, not a bound: rotations are sequential, nothing expires, no scheduled rotation.
        expect(fresh.A.keys).toHaveLength(expectedKeys());
        expect(fresh.B.keys).toHaveLength(expectedKeys());
      }
      // Two SIGUSR2 rotations each: 3 keys have signed per instance, and 2 + 2 retired + 2 (current, next) are published.
      expect(signedKids.A).toHaveLength(3);
      expect(signedKids.B).toHaveLength(3);
      expect(expectedKeys()).toBe(8);
      expect(logCount(a, 'signing key rotated')).toBe(2);
      expect(logCount(b, 'signing key rotated')).toBe(2);
    } finally {
      await stop(a);
      await stop(b);
    }
    expect(a.child.exitCode, 'A stopped cleanly on SIGTERM').toBe(0);
    expect(b.child.exitCode, 'B stopped cleanly on SIGTERM').toBe(0);
  }, 60_000);

  it('rotation stops at the published-key cap: no key is dropped, the instance keeps signing with a published key', async () => {
    const prefix = uniquePrefix('rotation-cap');
    const a = await startInstance('A', prefix);
    const b = await startInstance('B', prefix);
    try {
      const first = await taskToken(a, 'api-cap');
      const firstB = await taskToken(b, 'api-cap-b');
      await jwksWithCount(b, 4);
      // Each rotation adds one published key (the retired one stays for its overlap): rotate A
      // until the fleet publishes exactly the cap. One signal at a time: a rotation only moves
      // onto a next key that is published, so each waits for the previous one's new next key.
      for (let n = 5; n <= MAX_PUBLISHED_KEYS; n++) {
        a.child.kill('SIGUSR2');
        await jwksWithCount(a, n);
      }
      const atCap = await jwksWithCount(b, MAX_PUBLISHED_KEYS);
      const kidAtCap = kidOf(await taskToken(a, 'api-cap'));
      expect(kidsOf(atCap)).toContain(kidAtCap);

      // One more: A moves onto its (published) next key, but its successor cannot be published.
      a.child.kill('SIGUSR2');
      const deadline = Date.now() + WAIT_MS;
      while (logCount(a, 'key maintenance failed') < 1 && Date.now() < deadline) await sleep(50);
      expect(a.logs(), 'the failed publication is logged').toContain(`signing keys are published already (cap ${MAX_PUBLISHED_KEYS})`);
      const kidOver = kidOf(await taskToken(a, 'api-cap'));
      expect(kidOver).not.toBe(kidAtCap);
      expect(kidsOf(atCap), 'A signs only with a key the fleet already publishes').toContain(kidOver);

      // And another: no published next key, so A postpones the rotation and keeps its key.
      const rotatedBefore = logCount(a, 'signing key rotated');
      a.child.kill('SIGUSR2');
      const deadline2 = Date.now() + WAIT_MS;
      while (logCount(a, 'key rotation postponed: next key not published (the current key signs until it retires, then none)') < 1 && Date.now() < deadline2) await sleep(50);
      expect(logCount(a, 'key rotation postponed: next key not published (the current key signs until it retires, then none)')).toBe(1);
      expect(logCount(a, 'signing key rotated')).toBe(rotatedBefore);
      const lastToken = await taskToken(a, 'api-cap');
      expect(kidOf(lastToken)).toBe(kidOver);

      // The cap held (past both JWKS caches) and no key was dropped to make room: the first
      // tokens of each instance still verify with the other's JWKS, and so does A's latest.
      await sleep(1100);
      const finalA = await jwksWithCount(a, MAX_PUBLISHED_KEYS);
      const finalB = await jwksWithCount(b, MAX_PUBLISHED_KEYS);
      expect(new Set(kidsOf(finalA))).toEqual(new Set(kidsOf(atCap)));
      await verify(first, finalB, "A's first token with B's JWKS at the cap");
      await verify(lastToken, finalB, "A's token after the refused rotation with B's JWKS");
      await verify(firstB, finalA, "B's token with A's JWKS at the cap");
      // Both instances are still ready: the cap postpones rotation, it does not stop signing.
      for (const x of [a, b]) expect((await fetch(`${x.url}/readyz`)).status, `${x.name} ready at the cap`).toBe(200);
    } finally {
      await stop(a);
      await stop(b);
    }
  }, 60_000);
});
