/**
 * Interchangeable replicas: brokers that share only one Redis (the harness's, one key prefix, one
 * issuer URL and one key publication secret). A task started on one replica is renewed, ended or
 * revoked on another and introspected on all; a signing key rotated on one is trusted by the
 * others while they serve; a replica that has just started is trusted at once (a kid a broker has
 * not seen yet is looked up in Redis before it is refused), and trusts the others' tokens at once.
 *
 * The first part runs two brokers in-process with a frozen clock, so a broker's cached union JWKS
 * cannot run out between the two steps that matter; the second runs real `jit-broker serve`
 * processes, each stopped by PID whatever the outcome, on one Redis and on a Redis Cluster.
 */
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';
import { configDir, spawnCli, stopChildren, type CliChild } from '../helpers/cli.js';
import { startRedisCluster } from '../helpers/redis-cluster.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const ISSUER = 'https://broker.test';
const RESOURCE_AUDIENCE = 'db.payments';
const rs = newCredential();
const admin = newCredential();
const POLICY = {
  name: 'payments',
  workloads: ['k8s://test/ns/payments/sa/*'],
  audiences: [RESOURCE_AUDIENCE],
  actions: ['read'],
  resources: ['db://payments/**'],
  max_ttl: '10m',
  max_lifetime: '1h',
};

let issuer: OidcIssuer;
const files = configDir('jit-replicas-');

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  stopChildren();
  await issuer?.close();
  files.cleanup();
});

const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;
const saToken = (sa: string) => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: sa, audience: AUDIENCE, ttlSeconds: 600 });
let taskSeq = 0;
const intent = () => ({ audience: RESOURCE_AUDIENCE, actions: ['read'], resources: ['db://payments/orders'], purpose: 'replicas e2e', task: `task-${++taskSeq}` });

interface Replica {
  name: string;
  url: string;
  /** Its log so far, for a failed assertion's message (processes only). */
  logs?: () => string;
}

async function startTask(r: Replica, sa: string): Promise<{ grant: string; token: string }> {
  const res = await postJson(`${r.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken(sa) }, intent: intent() });
  expect(res.status, `${r.name} POST /v1/tasks: ${JSON.stringify(res.json)}\n${r.logs?.().slice(-4000) ?? ''}`).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}

async function introspect(r: Replica, token: string): Promise<boolean> {
  const res = await fetch(`${r.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${rs.credential}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  expect(res.status, `${r.name} introspection`).toBe(200);
  return ((await res.json()) as { active: boolean }).active;
}

async function jwksOf(r: Replica): Promise<JSONWebKeySet> {
  const res = await fetch(`${r.url}/.well-known/jwks.json`);
  expect(res.status, `${r.name} JWKS`).toBe(200);
  return (await res.json()) as JSONWebKeySet;
}

/** What every replica says about `token`, asked of all of them at once. */
async function introspectEverywhere(replicas: Replica[], token: string, active: boolean, what: string): Promise<void> {
  const answers = await Promise.all(replicas.map(async (r) => [r.name, await introspect(r, token)] as const));
  expect(Object.fromEntries(answers), `${what}: introspection on every replica`).toEqual(Object.fromEntries(replicas.map((r) => [r.name, active])));
}

/** A fresh token: active on every replica at once, and verified with every replica's JWKS (fetched now). */
async function trustedEverywhere(replicas: Replica[], token: string, what: string): Promise<void> {
  const [sets] = await Promise.all([Promise.all(replicas.map(jwksOf)), introspectEverywhere(replicas, token, true, what)]);
  for (const [i, set] of sets.entries()) {
    const verified = jwtVerify(token, createLocalJWKSet(set), { issuer: ISSUER, audience: RESOURCE_AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'] });
    await expect(verified.then((v) => v.protectedHeader.kid), `${what}: verified with ${replicas[i]!.name}'s JWKS`).resolves.toBe(kidOf(token));
  }
}

describe('a replica that has just started (in-process, frozen clock)', () => {
  const brokers: BrokerRuntime[] = [];
  afterAll(async () => {
    for (const b of brokers) await b.close();
  });

  it("is trusted at once: A introspects B's first token and serves B's key, inside A's JWKS cache period", async () => {
    const now = Date.now();
    const clock = () => now; // A's cached union JWKS (1 s) never runs out on its own here
    const prefix = uniquePrefix('replicas-new');
    const config = { prefix, resource_servers: [{ name: 'rs', audiences: [RESOURCE_AUDIENCE], credential_sha256: rs.sha256 }], policies: [POLICY] };
    const a = await startTestBroker(issuer, config, { clock });
    brokers.push(a);
    const ra = { name: 'A', url: a.url };
    const first = await startTask(ra, 'api-a');
    expect(await introspect(ra, first.token)).toBe(true); // A has read the union now: its keys only

    const b = await startTestBroker(issuer, config, { clock });
    brokers.push(b);
    const rb = { name: 'B', url: b.url };
    const fromB = await startTask(rb, 'api-b');
    expect(await introspect(ra, fromB.token), "A introspects B's first token").toBe(true);
    const res = await fetch(`${a.url}/.well-known/jwks.json`);
    expect(res.headers.get('cache-control')).toBe('public, no-cache');
    expect(((await res.json()) as JSONWebKeySet).keys.map((k) => k.kid), "A's JWKS has B's new key").toContain(kidOf(fromB.token));
    await trustedEverywhere([ra, rb], fromB.token, "B's first token");
    await trustedEverywhere([ra, rb], first.token, "A's token");
  });
});

/** Where the replicas' store lives: the harness's Redis, or a Cluster this file starts (and stops by PID). */
const topologies = [
  { where: "one Redis (the harness's)", key: 'standalone', start: () => Promise.resolve({ store: { kind: 'redis', url: redisUrl() }, stop: () => Promise.resolve() }) },
  {
    where: 'a 3-primary Redis Cluster',
    key: 'cluster',
    start: async () => {
      const cluster = await startRedisCluster();
      return { store: { kind: 'redis', cluster: { nodes: cluster.startupNodes.map((n) => `${n.host}:${n.port}`) } }, stop: () => cluster.stop() };
    },
  },
];

describe.each(topologies)('three replicas as processes, then a fourth, on $where', ({ key, start }) => {
  const prefix = uniquePrefix(`replicas-${key}`);
  let topology: Awaited<ReturnType<typeof start>> | undefined;
  /** Every replica this describe started: each is stopped by its PID in afterAll, whatever happened. */
  const running: Array<Replica & { proc: CliChild }> = [];
  beforeAll(async () => {
    topology = await start();
  });
  afterAll(async () => {
    await Promise.all(running.map((r) => r.proc.stop()));
    await topology?.stop();
  });

  async function startReplica(name: string): Promise<Replica & { proc: CliChild; pid: number }> {
    const port = await freePort();
    const path = files.write(`${key}-${name}.yaml`, {
      issuer: ISSUER,
      listen: { host: '127.0.0.1', port },
      // A generous command timeout: the machine running the suite may be loaded, and this file
      // checks interchangeability, not how a slow store is answered (store-outage tests do).
      store: { ...topology!.store, key_prefix: prefix, command_timeout: '5s' },
      log: { level: 'info' },
      // No scheduled rotation during the test: rotations come from the operator API and SIGUSR2.
      tokens: { key_rotation: '6h', key_overlap: '20m', key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
      attestation: { oidc: { issuers: [issuerEntry(issuer)] } },
      limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1_000_000, burst: 1_000_000 } },
      resource_servers: [{ name: 'rs', audiences: [RESOURCE_AUDIENCE], credential_sha256: rs.sha256 }],
      operators: [{ name: 'root', role: 'admin', credential_sha256: admin.sha256 }],
      policies: [POLICY],
    });
    const url = `http://127.0.0.1:${port}`;
    const proc = await spawnCli(['serve', '--config', path], { label: `replica-${key}-${name}`, readyUrl: `${url}/readyz`, timeoutMs: 30_000 });
    const r = { name, url, proc, pid: proc.child.pid!, logs: () => proc.output() };
    running.push(r);
    return r;
  }

  const operator = (r: Replica, path: string, body: unknown) => postJson(`${r.url}${path}`, body, { authorization: `Bearer ${admin.credential}` });

  it('start on A, renew on B, end on C; revoke and the kill switch anywhere; rotation on A while B and C serve; a fourth replica trusted at once', async () => {
    const [a, b, c] = await Promise.all(['A', 'B', 'C'].map(startReplica));
    const fleet: Replica[] = [a!, b!, c!];

    // Start on A, renew on B (with A's token), end on C (with B's token).
    const task = await startTask(a!, 'api-1');
    await trustedEverywhere(fleet, task.token, 'started on A');
    const renewed = await postJson(`${b!.url}/v1/tasks/${task.grant}/renew`, { attestation: { kind: 'oidc', token: await saToken('api-1') } }, { authorization: `Bearer ${task.token}` });
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    const renewedToken = renewed.json.access_token as string;
    expect(kidOf(renewedToken), 'B signs the renewal with its own key').not.toBe(kidOf(task.token));
    await trustedEverywhere(fleet, renewedToken, 'renewed on B');
    const ended = await postJson(`${c!.url}/v1/tasks/${task.grant}/end`, '', { authorization: `Bearer ${renewedToken}` });
    expect(ended.status, JSON.stringify(ended.json)).toBeLessThan(300);
    await introspectEverywhere(fleet, renewedToken, false, 'ended on C');
    await introspectEverywhere(fleet, task.token, false, "ended on C: A's first token");

    // Start on B, RFC 7009 revocation on C.
    const second = await startTask(b!, 'api-2');
    await trustedEverywhere(fleet, second.token, 'started on B');
    const revoked = await fetch(`${c!.url}/oauth2/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${rs.credential}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: second.token }),
    });
    expect(revoked.status).toBe(200);
    await introspectEverywhere(fleet, second.token, false, 'revoked on C');

    // The kill switch on A for one workload, over grants started on every replica.
    const victims = await Promise.all(fleet.map((r) => startTask(r, 'api-victim')));
    const bystanders = await Promise.all(fleet.map((r) => startTask(r, 'api-bystander')));
    for (const t of [...victims, ...bystanders]) await trustedEverywhere(fleet, t.token, 'started before the kill switch');
    const kill = await operator(a!, '/v1/grants/revoke', { selector: { workload: 'k8s://test/ns/payments/sa/api-victim' }, reason: 'replicas e2e' });
    expect(kill.status, JSON.stringify(kill.json)).toBe(200);
    expect(kill.json).toMatchObject({ revoked: 3, done: true });
    for (const t of victims) await introspectEverywhere(fleet, t.token, false, 'killed on A');
    for (const t of bystanders) await introspectEverywhere(fleet, t.token, true, 'another workload after the kill switch');

    // Rotate A (operator API, then SIGUSR2 to A's PID) while B and C issue.
    for (const rotate of [() => operator(a!, '/v1/keys/rotate', {}).then((r) => expect(r.status, JSON.stringify(r.json)).toBe(200)), () => void process.kill(a!.pid, 'SIGUSR2')]) {
      const before = kidOf((await startTask(a!, 'api-rot')).token);
      const during = Promise.all([b!, c!, b!, c!].map((r) => startTask(r, 'api-during')));
      await rotate();
      for (const t of await during) await trustedEverywhere(fleet, t.token, 'issued on B or C during the rotation on A');
      let after = await startTask(a!, 'api-rot');
      // SIGUSR2 is handled asynchronously: wait (bounded) for A to sign with its next key.
      for (let i = 0; i < 100 && kidOf(after.token) === before; i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = await startTask(a!, 'api-rot');
      }
      expect(kidOf(after.token), 'A rotated').not.toBe(before);
      await trustedEverywhere(fleet, after.token, 'issued on A after its rotation');
    }

    // A fourth replica, started now: trusted at once by the others, and trusting theirs.
    const d = await startReplica('D');
    const all: Replica[] = [...fleet, d];
    const fromD = await startTask(d, 'api-d');
    await trustedEverywhere(all, fromD.token, "D's first token");
    for (const t of bystanders) await trustedEverywhere(all, t.token, 'an older token, with D in the fleet');
    const fromEach = await Promise.all(fleet.map((r) => startTask(r, 'api-after-d')));
    for (const t of fromEach) await trustedEverywhere(all, t.token, 'issued by A, B or C after D started');
    // D renews a grant A started, and A ends it.
    const onA = await startTask(a!, 'api-d-renew');
    const onD = await postJson(`${d.url}/v1/tasks/${onA.grant}/renew`, { attestation: { kind: 'oidc', token: await saToken('api-d-renew') } }, { authorization: `Bearer ${onA.token}` });
    expect(onD.status, JSON.stringify(onD.json)).toBe(200);
    await trustedEverywhere(all, onD.json.access_token as string, 'renewed on D');
    const endOnA = await postJson(`${a!.url}/v1/tasks/${onA.grant}/end`, '', { authorization: `Bearer ${onD.json.access_token as string}` });
    expect(endOnA.status, JSON.stringify(endOnA.json)).toBeLessThan(300);
    await introspectEverywhere(all, onD.json.access_token as string, false, 'renewed on D, ended on A');
  }, 120_000);
});
