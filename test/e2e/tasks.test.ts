import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { clipDenial } from '../../src/grants/codec.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl } from '../helpers/redis.js';

const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'nightly reconciliation', task: 'recon-42' };

let issuer: OidcIssuer;
let stranger: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let redis: Redis;

const saToken = (over: { namespace?: string; serviceAccount?: string; audience?: string; ttlSeconds?: number } = {}) =>
  issuer.mintServiceAccountToken({
    cluster: 'test',
    namespace: over.namespace ?? 'payments',
    serviceAccount: over.serviceAccount ?? 'api',
    pod: 'api-5f7c',
    audience: over.audience ?? AUDIENCE,
    ttlSeconds: over.ttlSeconds ?? 600,
  });

async function keysUnder(pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys.sort();
}

/**
 * Everything the broker holds about grants: records, every index and every audit event except
 * denials (a refusal may add a `grant.denied` event and nothing else).
 */
async function grantState(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const key of await keysUnder(`${broker.prefix}*`)) {
    const type = await redis.type(key);
    if (type === 'string') out[key] = await redis.get(key);
    else if (type === 'hash') out[key] = await redis.hgetall(key);
    else if (type === 'zset') out[key] = await redis.zrange(key, 0, -1, 'WITHSCORES');
    else if (type === 'stream') {
      const entries = await redis.xrange(key, '-', '+');
      out[key] = entries.filter(([, fields]) => fields[fields.indexOf('type') + 1] !== 'grant.denied');
    }
  }
  return out;
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  stranger = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer);
  redis = new Redis(redisUrl());
});

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  await stranger?.close();
  redis?.disconnect();
});

describe('POST /v1/tasks', () => {
  it('issues a task token that verifies against the served JWKS with every claim', async () => {
    const before = Math.floor(Date.now() / 1000);
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent, ttl: '2m' });
    expect(res.status).toBe(201);
    const body = res.json as Record<string, any>;
    expect(body).toMatchObject({ token_type: 'Bearer', workload: WORKLOAD, expires_in: 120, scope: 'read', rule: 'payments' });
    expect(body.intent).toEqual(intent);
    expect(body.grant).toMatch(/^g_[A-Za-z0-9_-]{22}_[A-Za-z0-9_-]{22}$/);

    const header = decodeProtectedHeader(body.access_token);
    expect(header).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
    expect(typeof header.kid).toBe('string');

    const jwks = createRemoteJWKSet(new URL(`${broker.url}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(body.access_token, jwks, {
      issuer: 'https://broker.test',
      audience: 'db.payments',
      typ: 'at+jwt',
      algorithms: ['ES256'],
    });
    expect(payload).toMatchObject({
      iss: 'https://broker.test',
      sub: WORKLOAD,
      aud: 'db.payments',
      client_id: WORKLOAD,
      grant: body.grant,
      txn: 'recon-42',
      scope: 'read',
      authorization_details: [
        {
          type: 'jit_task',
          locations: ['db.payments'],
          actions: ['read'],
          resources: ['db://payments/orders'],
          purpose: 'nightly reconciliation',
          identifier: 'recon-42',
        },
      ],
    });
    expect(payload.cnf).toBeUndefined();
    expect(payload.iat).toBeGreaterThanOrEqual(before);
    expect(payload.nbf).toBe(payload.iat);
    expect(payload.exp).toBe(payload.iat! + 120);
    expect(payload.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(body.expires_at).toBe(new Date(payload.exp! * 1000).toISOString());

    // The grant is recorded, with its indexes.
    const grant = await broker.store.getGrant(body.grant);
    expect(grant).toMatchObject({ workload: WORKLOAD, status: 'active', rule: 'payments', token_jti: payload.jti, task: 'recon-42', generation: 1 });
    const listed = await broker.store.listTaskGrants(WORKLOAD, 'recon-42', { now: Date.now() });
    expect(listed.map((g) => g.id)).toContain(body.grant);
  });

  it('records the grant in Redis with its indexes and audit event, each living for the grant plus retention', async () => {
    // A workload of its own: index TTLs are never shortened, so earlier grants would show through.
    const token = await saToken({ serviceAccount: 'ttl-checker' });
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent: { ...intent, task: 'ttl-check' }, lifetime: '30m' });
    expect(res.status).toBe(201);
    const id = res.json.grant as string;
    const [keyOf] = await keysUnder(`${broker.prefix}*:grant:${id}`);
    expect(keyOf).toBeDefined();
    const slot = keyOf!.slice(0, keyOf!.indexOf(':grant:'));
    expect(slot).toMatch(/\{w:[A-Za-z0-9_-]{22}\}$/);
    expect(id.slice(2, 24)).toBe(slot.slice(-23, -1)); // the grant id carries its slot's tag
    const lifetime = 30 * 60_000;
    const retention = 7 * 24 * 3_600_000; // audit_retention default
    const tol = 10_000;
    const keep = lifetime + retention;
    const pttl = async (key: string) => redis.pttl(key);
    for (const key of [keyOf!, `${slot}:grants`, `${slot}:audit`]) {
      const ttl = await pttl(key);
      expect(ttl, key).toBeGreaterThan(keep - tol);
      expect(ttl, key).toBeLessThanOrEqual(keep);
    }
    const live = await pttl(`${slot}:live`);
    expect(live).toBeGreaterThan(lifetime - tol);
    expect(await redis.zscore(`${slot}:live`, id)).toBe(String(Date.parse(res.json.grant_expires_at as string)));
    expect((await redis.get(keyOf!))?.split('\n')[1]).toBe(String(Date.parse(res.json.grant_expires_at as string)));
    const events = await broker.store.readAudit('k8s://test/ns/payments/sa/ttl-checker');
    expect(events.filter((e) => e.type === 'grant.issued' && e.grant === id)).toHaveLength(1);
  });

  it('caps exp at the platform token expiry', async () => {
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken({ ttlSeconds: 90 }) }, intent });
    expect(res.status).toBe(201);
    expect(res.json.expires_in).toBeLessThanOrEqual(90);
    expect(res.json.expires_in).toBeGreaterThan(80);
  });

  it('caps ttl at the rule max_ttl and defaults to 5 minutes', async () => {
    // Evidence that outlives the cap: a 10-minute token, a few ms old, would cap exp at 599 s itself.
    const token = await saToken({ ttlSeconds: 3600 });
    const dflt = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
    expect(dflt.json.expires_in).toBe(300);
    const capped = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent, ttl: 900 });
    expect(capped.json.expires_in).toBe(600); // rule max_ttl 10m
  });

  it('generates a task id when none is given', async () => {
    const { task: _t, ...noTask } = intent;
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: noTask });
    expect(res.status).toBe(201);
    expect((res.json.intent as { task: string }).task).toMatch(/^task_[0-9a-f]{24}$/);
  });
});

describe('denials: each a 4xx with an OAuth error, and no grant written', () => {
  let before: Record<string, unknown>;
  beforeAll(async () => {
    // A grant to begin with, so the snapshot below is known to see grant records.
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent });
    expect(res.status).toBe(201);
  });
  beforeEach(async () => {
    before = await grantState();
    expect(Object.keys(before).some((k) => k.includes(':grant:'))).toBe(true); // the snapshot sees grants
  });
  const expectNothingWritten = async () => {
    const after = await grantState();
    // Streams that appear only to hold denials show up as empty lists.
    for (const [k, v] of Object.entries(after)) if (Array.isArray(v) && v.length === 0 && !(k in before)) delete after[k];
    // A full rate bucket expires by itself (about 1 s with the test's huge rate): gone is not written.
    for (const k of Object.keys(before)) if (k.endsWith(':rate') && !(k in after)) delete before[k];
    expect(after).toEqual(before);
  };

  const cases: Array<[string, () => Promise<unknown>, number, string, RegExp]> = [
    ['unknown issuer', async () => ({ attestation: { kind: 'oidc', token: await stranger.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE }) }, intent }), 401, 'invalid_client', /not trusted/],
    ['bad signature', async () => ({ attestation: { kind: 'oidc', token: await issuer.mintWithForeignKey({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }) }, intent }), 401, 'invalid_client', /signature/],
    ['alg none', async () => ({ attestation: { kind: 'oidc', token: issuer.forgeNone({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }) }, intent }), 401, 'invalid_client', /algorithm is not allowed/],
    ['HS256 keyed with the public key', async () => ({ attestation: { kind: 'oidc', token: await issuer.forgeHs256WithPublicKey({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }) }, intent }), 401, 'invalid_client', /algorithm/],
    ['expired token', async () => ({ attestation: { kind: 'oidc', token: await issuer.mint({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE, 'kubernetes.io': { namespace: 'payments', serviceaccount: { name: 'api', uid: 'u' } } }, { iat: Math.floor(Date.now() / 1000) - 600, ttlSeconds: 120 }) }, intent }), 401, 'invalid_client', /expired/],
    ['wrong audience', async () => ({ attestation: { kind: 'oidc', token: await saToken({ audience: 'someone-else' }) }, intent }), 401, 'invalid_client', /audience/],
    ['intent outside policy (action)', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, actions: ['read', 'drop'] } }), 403, 'access_denied', /action "drop" not allowed for workload k8s:\/\/test\/ns\/payments\/sa\/api/],
    ['intent outside policy (resource)', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, resources: ['db://hr/salaries'] } }), 403, 'access_denied', /resource "db:\/\/hr\/salaries"/],
    ['workload no rule names', async () => ({ attestation: { kind: 'oidc', token: await saToken({ namespace: 'hr' }) }, intent }), 403, 'access_denied', /no policy rule allows workload k8s:\/\/test\/ns\/hr\/sa\/api/],
    ['ttl below the 30 s floor', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent, ttl: 10 }), 400, 'invalid_request', /at least 30s/],
    ['ttl above the 15 min cap', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent, ttl: '1h' }), 400, 'invalid_request', /at most 900s/],
    ['evidence expiring within the floor', async () => ({ attestation: { kind: 'oidc', token: await saToken({ ttlSeconds: 20 }) }, intent }), 401, 'invalid_client', /at least 30s/],
    ['no evidence', async () => ({ intent }), 401, 'invalid_client', /no evidence/],
    ['unknown field', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent, admin: true }), 400, 'invalid_request', /admin/],
    ['wrong types', async () => ({ attestation: { kind: 'oidc', token: 42 }, intent: { ...intent, actions: 'read' } }), 400, 'invalid_request', /invalid request/],
    ['resource escaping its rule through ".."', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, resources: ['db://payments/../hr/salaries'] } }), 400, 'invalid_request', /resources\[0\]: must not contain "\." or "\.\." path segments/],
    ['no resource under a rule that scopes resources', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, resources: [] } }), 403, 'access_denied', /name at least one resource/],
    ['action that is not a scope token', async () => ({ attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, actions: ['read write'] } }), 400, 'invalid_request', /intent\.actions\[0\]: must be a scope token/],
    ['unknown attestation kind', async () => ({ attestation: { kind: 'tpm', token: 'x' }, intent }), 400, 'invalid_request', /attestation/],
  ];

  it.each(cases)('%s', async (_name, makeBody, status, error, description) => {
    const res = await postJson(`${broker.url}/v1/tasks`, await makeBody());
    expect(res.status).toBe(status);
    expect(res.json.error).toBe(error);
    expect(res.json.error_description).toMatch(description);
    expect(JSON.stringify(res.json)).not.toMatch(/eyJ/); // never echoes a token
    await expectNothingWritten();
  });

  it('malformed JSON, wrong content type and oversized bodies are 4xx', async () => {
    expect((await postJson(`${broker.url}/v1/tasks`, '{"intent":')).json.error_description).toBe('request body is not valid JSON');
    const wrongType = await fetch(`${broker.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(wrongType.status).toBe(400);
    const big = await postJson(`${broker.url}/v1/tasks`, { intent: { ...intent, purpose: 'x'.repeat(70_000) } });
    expect(big.status).toBe(413);
    expect(big.json.error).toBe('request_too_large');
    // Chunked, no content-length: refused while streaming, not after buffering it all.
    const streamed = await chunkedPost(`${broker.url}/v1/tasks`, Array.from({ length: 40 }, () => Buffer.alloc(4096, 0x20)));
    expect(streamed.status).toBe(413);
    expect(JSON.parse(streamed.body).error).toBe('request_too_large');
    const small = await chunkedPost(`${broker.url}/v1/tasks`, [Buffer.from('{"intent":'), Buffer.from('{}}')]);
    expect(small.status).toBe(400);
    expect(JSON.parse(small.body).error_description).toMatch(/^invalid request: /);
    const notUtf8 = await chunkedPost(`${broker.url}/v1/tasks`, [Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])]);
    expect(notUtf8.status).toBe(400);
    expect(JSON.parse(notUtf8.body).error_description).toBe('request body is not valid UTF-8');
    await expectNothingWritten();
  });

  it('a stalled body (slow-loris) is answered 408 and closed after http.request_timeout', async () => {
    const slow = await startTestBroker(issuer, { http: { request_timeout: '1s' } });
    try {
      const { port } = new URL(slow.url);
      const socket = connect(Number(port), '127.0.0.1');
      let reply = '';
      socket.on('data', (d: Buffer) => (reply += d.toString()));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.write('POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"intent":');
      await closed; // the server closes; the test timeout bounds the wait
      expect(reply).toMatch(/^HTTP\/1\.1 408/);
    } finally {
      await slow.close();
    }
  });

  it('a denial naming many long resources is still audited, with a short reason', async () => {
    const resources = Array.from({ length: 10 }, (_, i) => `db://hr/${i}-${'x'.repeat(600)}`);
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, resources } });
    expect(res.status).toBe(403);
    expect((res.json.error_description as string).length).toBeLessThan(600);
    const denial = (await broker.store.readAudit(WORKLOAD)).filter((e) => e.type === 'grant.denied').at(-1);
    // The audit keeps the reason clipped further (a denial costs Redis at most 2 KB).
    expect(denial?.reason).toBe(clipDenial({ type: 'grant.denied', at: 0, workload: WORKLOAD, reason: res.json.error_description as string }).reason);
  });

  it('a workload no rule names leaves no key of its own: its denial goes to the shared stream', async () => {
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken({ namespace: 'unlisted' }) }, intent });
    expect(res.status).toBe(403);
    const stranger = 'k8s://test/ns/unlisted/sa/api';
    expect(await broker.store.readAudit(stranger)).toEqual([]);
    const tag = createHash('sha256').update(stranger).digest('hex').slice(0, 32);
    expect(await keysUnder(`${broker.prefix}{w:${tag}}*`)).toEqual([]);
    const shared = await broker.store.readUnmatchedAudit({ limit: 10_000 });
    expect(shared.filter((e) => e.workload === stranger).at(-1)).toMatchObject({ type: 'grant.denied', reason: `no policy rule allows workload ${stranger}` });
  });

  it('denials are audited in the workload stream', async () => {
    await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken() }, intent: { ...intent, actions: ['drop'] } });
    const events = await broker.store.readAudit(WORKLOAD);
    const denial = events.filter((e) => e.type === 'grant.denied').at(-1);
    expect(denial).toMatchObject({ workload: WORKLOAD, rule: 'payments', actions: ['drop'] });
    expect(denial?.reason).toContain('action "drop"');
  });
});

describe('active grant cap', () => {
  it('exactly the cap succeeds under 50 concurrent requests', async () => {
    const capped = await startTestBroker(issuer, { grants: { max_active_per_workload: 7 } });
    try {
      const token = await saToken();
      const results = await Promise.all(
        Array.from({ length: 50 }, () => postJson(`${capped.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent })),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 201)).toHaveLength(7);
      expect(statuses.filter((s) => s === 429)).toHaveLength(43);
      const limited = results.find((r) => r.status === 429)!;
      expect(limited.json.error).toBe('rate_limited');
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
      const live = await capped.store.listWorkloadGrants(WORKLOAD, { now: Date.now(), liveOnly: true });
      expect(live).toHaveLength(7);
    } finally {
      await capped.close();
    }
  });
});

describe('well-known and health', () => {
  it('serves RFC 8414 metadata whose issuer is ours', async () => {
    const res = await fetch(`${broker.url}/.well-known/oauth-authorization-server`);
    const meta = (await res.json()) as Record<string, unknown>;
    expect(meta).toMatchObject({ issuer: 'https://broker.test', jwks_uri: 'https://broker.test/.well-known/jwks.json', revocation_endpoint_auth_methods_supported: ['none'] });
    // The token endpoint takes authorization_details of type jit_task (RFC 9396 §10).
    expect(meta).toMatchObject({ token_endpoint: 'https://broker.test/oauth2/token', authorization_details_types_supported: ['jit_task'] });
  });

  it('serves metadata at the path-inserted well-known URL when the issuer has a path (RFC 8414 §3.1)', async () => {
    const tenant = await startTestBroker(issuer, { issuer: 'https://broker.test/tenant-a' });
    try {
      const res = await fetch(`${tenant.url}/.well-known/oauth-authorization-server/tenant-a`);
      expect(res.status).toBe(200);
      const meta = (await res.json()) as Record<string, unknown>;
      expect(meta).toMatchObject({ issuer: 'https://broker.test/tenant-a', jwks_uri: 'https://broker.test/tenant-a/.well-known/jwks.json' });
      expect((await fetch(`${tenant.url}/.well-known/oauth-authorization-server/other`)).status).toBe(404);
    } finally {
      await tenant.close();
    }
  });

  it('publishes only public keys', async () => {
    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(2); // current and next
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      expect(k.d).toBeUndefined();
    }
  });

  it('is live and ready', async () => {
    expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${broker.url}/readyz`);
    expect(await ready.json()).toEqual({ status: 'ready' });
  });

  it('answers unknown routes with a JSON 404', async () => {
    const res = await fetch(`${broker.url}/v1/nope`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: 'not_found' });
  });
});

/** POSTs a JSON body in chunks with Transfer-Encoding: chunked (no content-length). */
function chunkedPost(url: string, chunks: Buffer[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}
