/**
 * Acknowledged grant writes are on a replica before the answer (store.replication: WAIT after
 * every write), on a real primary + replica. With the replica stopped (SIGSTOP by PID), WAIT
 * counts no replica: a task start or renewal answers 503 with Retry-After and its grant is voided;
 * an end, a revocation and the kill switch are retried, then answered 503 and logged, never a
 * success. Once the replica runs again (SIGCONT), every such grant is inactive on both nodes.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { NOT_REPLICATED } from '../../src/grants/replication.js';
import { createRedisGrantStore, type RedisGrantStore } from '../../src/grants/redis-store.js';
import { NOT_DELIVERED_REASON } from '../../src/grants/store.js';
import { silentLogger } from '../../src/log.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { startRedisServer, TEST_KEY_PUBLICATION_SECRETS, type RedisProcess } from '../helpers/redis.js';

const RS_CREDENTIAL = 'replication-rs-credential-0123';
const OPERATOR_CREDENTIAL = 'replication-operator-credential-0123';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const PREFIX = 'repl:';

let issuer: OidcIssuer;
let primary: RedisProcess;
let replica: RedisProcess;
let broker: BrokerRuntime;
/** The grant store read on the replica itself (GET works there: read-only). */
let onReplica: RedisGrantStore;
const logLines: string[] = [];

/** Stops (SIGSTOP) or resumes (SIGCONT) the replica by its PID. */
let replicaStopped = false;
function pauseReplica(stop: boolean): void {
  process.kill(replica.pid, stop ? 'SIGSTOP' : 'SIGCONT');
  replicaStopped = stop;
}

/** Until the replica's link to the primary is up and the primary counts it (the link survives a SIGSTOP). */
async function replicaInSync(): Promise<void> {
  const [p, r] = [new Redis(primary.url), new Redis(replica.url)];
  try {
    for (let i = 0; ; i++) {
      if (/connected_slaves:1/.test(await p.info('replication')) && /master_link_status:up/.test(await r.info('replication'))) return;
      if (i >= 200) throw new Error('the replica did not sync with the primary within 10 s');
      await new Promise((done) => setTimeout(done, 50));
    }
  } finally {
    p.disconnect();
    r.disconnect();
  }
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  primary = await startRedisServer();
  replica = await startRedisServer({ args: ['--replicaof', '127.0.0.1', String(primary.port)] });
  await replicaInSync();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  broker = await startTestBroker(
    issuer,
    {
      prefix: PREFIX,
      store: { kind: 'redis', url: primary.url, key_prefix: PREFIX, command_timeout: '1s', replication: { min_replicas: 1, timeout: '250ms' } },
      log: { level: 'warn' },
      resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL) }],
      operators: [{ name: 'root', role: 'admin', credential_sha256: sha256(OPERATOR_CREDENTIAL) }],
    },
    { destination: sink },
  );
  onReplica = createRedisGrantStore({ url: replica.url, keyPrefix: PREFIX, keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
}, 30_000);

afterAll(async () => {
  // A stopped process never handles SIGTERM: resume it first, whatever the test left.
  if (replica && replicaStopped) pauseReplica(false);
  await onReplica?.close();
  await broker?.close();
  await replica?.stop();
  await primary?.stop();
  await issuer?.close();
});

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
const intent = (task: string) => ({ audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'replication test', task });
const start = async (task: string) => postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: intent(task) });
const rsForm = async (path: string, token: string) => {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
};
const introspect = async (token: string) => (await rsForm('/oauth2/introspect', token)).json;

/** A 503 of a write the replicas did not confirm: Retry-After and the error saying so. */
function expectNotReplicated(res: { status: number; headers: Headers; json: Record<string, unknown> }): void {
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  expect(res.json).toEqual({ error: 'temporarily_unavailable', error_description: NOT_REPLICATED });
}

/** The grant as the replica holds it, once the replica has caught up with the primary's record. */
async function onReplicaOnceSynced(id: string) {
  const onPrimary = await broker.store.getGrant(id);
  await expect.poll(async () => JSON.stringify(await onReplica.getGrant(id)), { timeout: 5_000, interval: 50 }).toBe(JSON.stringify(onPrimary));
  return onPrimary!;
}

/** The one grant of `task` (the caller never got its id: its answer was a 503). */
async function grantOfTask(task: string) {
  const grants = await broker.store.listTaskGrants(WORKLOAD, task, { now: Date.now() });
  expect(grants).toHaveLength(1);
  return grants[0]!;
}

describe('store.replication: WAIT after every grant write (primary + replica)', () => {
  it('a task start whose write a replica acknowledged is answered 201, and the replica has its grant', async () => {
    const res = await start('met');
    expect(res.status).toBe(201);
    // On the replica already when the answer came: no poll.
    expect(await onReplica.getGrant(res.json.grant as string)).toMatchObject({ id: res.json.grant, status: 'active' });
  });

  it('with the replica stopped, a task start is a 503 with Retry-After, and its grant is voided', async () => {
    pauseReplica(true);
    try {
      expectNotReplicated(await start('start-unreplicated'));
    } finally {
      pauseReplica(false);
    }
    const grant = await onReplicaOnceSynced((await grantOfTask('start-unreplicated')).id);
    expect(grant).toMatchObject({ status: 'ended', closed_by: 'not_delivered' });
    expect(grant.expires_at).toBeLessThanOrEqual(Date.now());
    const events = await broker.store.readGrantEvents(grant);
    expect(events.map((e) => [e.type, e.reason])).toEqual([
      ['grant.issued', undefined],
      ['grant.ended', NOT_DELIVERED_REASON],
    ]);
    expect(logLines.some((l) => l.includes(grant.id) && l.includes('not confirmed on enough replicas'))).toBe(true);
  });

  it('with the replica stopped, a renewal is a 503 with Retry-After; the grant is voided and its token inactive', async () => {
    const started = await start('renew-unreplicated');
    expect(started.status).toBe(201);
    const [id, token] = [started.json.grant as string, started.json.access_token as string];
    expect(await introspect(token)).toMatchObject({ active: true });
    pauseReplica(true);
    try {
      expectNotReplicated(await postJson(`${broker.url}/v1/tasks/${id}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${token}` }));
    } finally {
      pauseReplica(false);
    }
    expect(await onReplicaOnceSynced(id)).toMatchObject({ status: 'ended', closed_by: 'not_delivered' });
    expect(await introspect(token)).toEqual({ active: false });
    const events = await broker.store.readGrantEvents({ id, workload: WORKLOAD, created_at: Date.now() - 60_000 });
    expect(events.map((e) => e.type)).toEqual(['grant.issued', 'grant.renewed', 'grant.ended']);
    expect(events.at(-1)?.reason).toBe(NOT_DELIVERED_REASON);
  });

  it('with the replica stopped, an end and an RFC 7009 revocation are 503 (retried, logged); the grants are inactive on both nodes after', async () => {
    const [a, b] = [await start('end-unreplicated'), await start('revoke-unreplicated')];
    expect([a.status, b.status]).toEqual([201, 201]);
    pauseReplica(true);
    try {
      expectNotReplicated(await postJson(`${broker.url}/v1/tasks/${a.json.grant as string}/end`, {}, { authorization: `Bearer ${a.json.access_token as string}` }));
      expectNotReplicated(await rsForm('/oauth2/revoke', b.json.access_token as string));
    } finally {
      pauseReplica(false);
    }
    expect(await onReplicaOnceSynced(a.json.grant as string)).toMatchObject({ status: 'ended', closed_by: 'holder' });
    expect(await onReplicaOnceSynced(b.json.grant as string)).toMatchObject({ status: 'revoked', closed_by: 'resource_server:rs' });
    for (const t of [a, b]) expect(await introspect(t.json.access_token as string)).toEqual({ active: false });
    for (const t of [a, b]) expect(logLines.some((l) => l.includes(t.json.grant as string) && l.includes('"attempts":3'))).toBe(true);
    // Asked again once the replica is back: confirmed, and answered as what it is.
    const again = await postJson(`${broker.url}/v1/tasks/${a.json.grant as string}/end`, {}, { authorization: `Bearer ${a.json.access_token as string}` });
    expect(again).toMatchObject({ status: 200, json: { status: 'ended' } });
  });

  it('with the replica stopped, the kill switch is a 503; its grants are revoked on both nodes after', async () => {
    const live = [await start('kill-1'), await start('kill-2')];
    for (const r of live) expect(r.status).toBe(201);
    pauseReplica(true);
    try {
      const res = await postJson(`${broker.url}/v1/grants/revoke`, { selector: { workload: WORKLOAD }, reason: 'replication test' }, { authorization: `Bearer ${OPERATOR_CREDENTIAL}` });
      expectNotReplicated(res);
    } finally {
      pauseReplica(false);
    }
    for (const r of live) {
      expect(await onReplicaOnceSynced(r.json.grant as string)).toMatchObject({ status: 'revoked' });
      expect(await introspect(r.json.access_token as string)).toEqual({ active: false });
    }
  });
});
