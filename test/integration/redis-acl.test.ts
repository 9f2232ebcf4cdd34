/**
 * The shipped Redis ACL file (deploy/redis/users.acl) is sufficient and least privilege (issue 11
 * item 5): a real redis-server loads it as docker-compose.yml does (the password's SHA-256 written
 * over the placeholder), a broker logged in as its `jit-broker` user runs a whole cycle through
 * the HTTP API (start, introspect, renew, end, revoke, denials, listings, audit reads, key
 * publication), and the same user is refused everything else: other commands, other keys, and
 * the default user is off.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { startRedisServer, type RedisProcess } from '../helpers/redis.js';

const PLACEHOLDER = '@JIT_BROKER_PASSWORD_SHA256@';
const RS_CREDENTIAL = 'rs-acl-credential-0123456789';
const OPERATOR_CREDENTIAL = 'operator-acl-credential-0123456789';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const WORKLOAD = 'k8s://test/ns/payments/sa/api';

let issuer: OidcIssuer;
let redis: RedisProcess;
let broker: BrokerRuntime;
let asBroker: Redis;
const password = randomBytes(24).toString('hex');
const dir = mkdtempSync(join(tmpdir(), 'jit-acl-'));
const logLines: string[] = [];

/** The resource server's private_key_jwt key: an assertion's jti is recorded in Redis (SET NX PX). */
let rsKey: CryptoKey;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  const rsPair = await generateKeyPair('ES256');
  rsKey = rsPair.privateKey;
  const acl = readFileSync('deploy/redis/users.acl', 'utf8');
  expect(acl).toContain(PLACEHOLDER);
  const aclFile = join(dir, 'users.acl');
  writeFileSync(aclFile, acl.replaceAll(PLACEHOLDER, sha256(password)));
  redis = await startRedisServer({ args: ['--aclfile', aclFile] });
  const url = `redis://jit-broker:${password}@127.0.0.1:${redis.port}`;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  broker = await startTestBroker(
    issuer,
    {
      // The shipped config's prefix, which the ACL's key pattern names.
      prefix: 'jit:',
      store: { kind: 'redis', url, key_prefix: 'jit:' },
      log: { level: 'warn' },
      resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL), jwks: { keys: [{ ...(await exportJWK(rsPair.publicKey)), kty: 'EC', alg: 'ES256' }] } }],
      operators: [{ name: 'root', role: 'admin', credential_sha256: sha256(OPERATOR_CREDENTIAL) }],
    },
    { destination: sink },
  );
  asBroker = new Redis(url, { maxRetriesPerRequest: 0 });
});

afterAll(async () => {
  await broker?.close();
  asBroker?.disconnect();
  await redis?.stop();
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

const saToken = (namespace = 'payments') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'acl test', task: 'acl-1' };
const rsForm = async (path: string, token: string) => {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
};

describe('deploy/redis/users.acl', () => {
  it('is sufficient: a broker logged in as jit-broker runs the whole cycle', async () => {
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: unknown[] };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(2);

    const started = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent });
    expect(started.status).toBe(201);
    const grant = started.json.grant as string;
    const first = started.json.access_token as string;
    expect((await rsForm('/oauth2/introspect', first)).json).toMatchObject({ active: true, grant });
    const assertion = await new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setIssuer('rs').setSubject('rs').setAudience('https://broker.test').setJti(randomBytes(16).toString('hex')).setExpirationTime('1m').sign(rsKey);
    const byAssertion = await fetch(`${broker.url}/oauth2/introspect`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: first, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }).toString(),
    });
    expect(await byAssertion.json()).toMatchObject({ active: true, grant });

    const renewed = await postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, { authorization: `Bearer ${first}` });
    expect(renewed.status).toBe(200);
    const second = renewed.json.access_token as string;
    expect((await rsForm('/oauth2/introspect', second)).json).toMatchObject({ active: true });
    const ended = await postJson(`${broker.url}/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${second}` });
    expect(ended).toMatchObject({ status: 200, json: { status: 'ended' } });
    expect((await rsForm('/oauth2/introspect', second)).json).toEqual({ active: false });

    const other = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, task: 'acl-2' } });
    expect(other.status).toBe(201);
    expect((await rsForm('/oauth2/revoke', other.json.access_token as string)).status).toBe(200);
    expect((await rsForm('/oauth2/introspect', other.json.access_token as string)).json).toEqual({ active: false });

    // Denials: one of a workload a rule names (its own stream), one of a workload none does (the shared one).
    const denied = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, actions: ['delete'] } });
    expect(denied.status).toBe(403);
    const stranger = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken('elsewhere') }, intent });
    expect(stranger.status).toBe(403);

    // The store's reads (the operator API's, later).
    const now = Date.now();
    expect((await broker.store.listWorkloadGrants(WORKLOAD, { now })).map((g) => g.id).sort()).toEqual([grant, other.json.grant].sort());
    expect(await broker.store.listWorkloadGrants(WORKLOAD, { now, liveOnly: true })).toEqual([]);
    expect((await broker.store.listTaskGrants(WORKLOAD, 'acl-1', { now })).map((g) => g.id)).toEqual([grant]);
    const types = (await broker.store.readAudit(WORKLOAD)).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['grant.issued', 'grant.renewed', 'grant.ended', 'grant.revoked', 'grant.denied']));
    expect((await broker.store.readUnmatchedAudit()).length).toBeGreaterThan(0);
    expect(await asBroker.zrangebyscore('jit:workloads', '-inf', '+inf')).toContain(WORKLOAD);
    // The operators' event log: shard copies (script), merged reads in both orders (TIME), key events.
    const global = await broker.store.readAuditLog({ scope: { kind: 'global' }, order: 'asc', limit: 1000, maxExamined: 10_000 });
    expect(global.events.map((e) => e.type)).toEqual(expect.arrayContaining(['grant.issued', 'grant.renewed', 'grant.ended', 'grant.revoked', 'grant.denied', 'key.published']));
    const own = await broker.store.readAuditLog({ scope: { kind: 'workload', workload: WORKLOAD }, order: 'desc', limit: 1000, maxExamined: 10_000 });
    expect(own.events.length).toBeGreaterThan(0);

    // The operator API: queries over the global and workload indexes, workloads, keys, the kill
    // switch by task and by key id (its authenticated mark), and the operators' audit streams.
    const op = { authorization: `Bearer ${OPERATOR_CREDENTIAL}` };
    const live = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, task: 'acl-3' } });
    expect(live.status).toBe(201);
    const opGet = async (path: string) => {
      const res = await fetch(`${broker.url}${path}`, { headers: op });
      return { status: res.status, json: (await res.json()) as Record<string, any> };
    };
    await expect.poll(async () => (await opGet('/v1/grants?limit=10')).json.grants?.length).toBe(3);
    expect((await opGet(`/v1/grants?workload=${encodeURIComponent(WORKLOAD)}&status=active`)).json.grants).toHaveLength(1);
    expect((await opGet(`/v1/grants/${grant}`)).json.events.length).toBeGreaterThanOrEqual(3);
    expect((await opGet('/v1/workloads')).json.workloads).toEqual(expect.arrayContaining([expect.objectContaining({ workload: WORKLOAD, live_grants: 1 })]));
    const keys = (await opGet('/v1/keys')).json.keys as { kid: string; state?: string }[];
    expect((await postJson(`${broker.url}/v1/grants/revoke`, { selector: { task: 'acl-3' }, reason: 'acl', dry_run: true }, op)).json).toMatchObject({ revoked: 1 });
    expect((await postJson(`${broker.url}/v1/grants/revoke`, { selector: { workload: WORKLOAD }, reason: 'acl' }, op)).json).toMatchObject({ revoked: 1, done: true });
    const retired = keys.find((k) => k.state === 'next')!.kid;
    expect((await postJson(`${broker.url}/v1/grants/revoke`, { selector: { key_id: retired }, reason: 'acl' }, op)).status).toBe(200);
    expect((await broker.store.revokedKeys(Date.now())).map((m) => m.kid)).toContain(retired);
    expect((await postJson(`${broker.url}/v1/keys/rotate`, {}, op)).status).toBe(200);
    expect((await broker.store.readOperatorAudit()).map((e) => e.action)).toEqual(expect.arrayContaining(['grants.query', 'grants.revoke', 'keys.revoke', 'keys.rotate']));

    // WAIT, which a broker with store.replication sends after each grant write (none here: no replica).
    expect(await asBroker.call('WAIT', '0', '0')).toBe(0);
    // Nothing the broker did was refused by Redis.
    expect(logLines.filter((l) => /NOPERM|no permissions/i.test(l))).toEqual([]);
  });

  it('is sufficient for DPoP: the jti of a proof is recorded once (SET NX PX in the workload slot)', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const proof = await new SignJWT({ jti: `acl-${randomBytes(8).toString('hex')}`, htm: 'POST', htu: 'https://broker.test/v1/tasks' })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
      .setIssuedAt()
      .sign(privateKey);
    const body = { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, task: 'acl-dpop' } };
    expect((await postJson(`${broker.url}/v1/tasks`, body, { dpop: proof })).json.token_type).toBe('DPoP');
    expect((await postJson(`${broker.url}/v1/tasks`, { ...body, attestation: { kind: 'oidc', token: await saToken() } }, { dpop: proof })).json.error).toBe('invalid_dpop_proof');
  });

  it('is least privilege: other commands, other keys and the default user are refused', async () => {
    const refused = async (p: Promise<unknown>) => expect(p).rejects.toThrow(/NOPERM|user executing the script can't access/);
    await refused(asBroker.flushall());
    await refused(asBroker.keys('*'));
    await refused(asBroker.scan('0'));
    await refused(asBroker.config('GET', '*'));
    await refused(asBroker.call('SCRIPT', 'FLUSH'));
    await refused(asBroker.call('ACL', 'LIST'));
    await refused(asBroker.del('jit:keys'));
    await refused(asBroker.call('SHUTDOWN', 'NOSAVE'));
    // Its own commands, on keys outside its prefix.
    await refused(asBroker.set('other:key', 'x'));
    await refused(asBroker.get('other:key'));
    await refused(asBroker.eval("return redis.call('SET', KEYS[1], 'x')", 1, 'other:key'));
    // A script reaching outside the prefix with a key it did not declare.
    await refused(asBroker.eval("return redis.call('SET', 'other:key', 'x')", 0));
    // No login, no access.
    const anonymous = new Redis(redis.url, { maxRetriesPerRequest: 0, lazyConnect: true, enableReadyCheck: false });
    try {
      await anonymous.connect();
      await expect(anonymous.ping()).rejects.toThrow(/NOAUTH/);
    } finally {
      anonymous.disconnect();
    }
    // The server still answers its user.
    expect(await asBroker.ping()).toBe('PONG');
  });
});
