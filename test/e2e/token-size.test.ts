/**
 * One task-token size bound (issue 11, finding 5): the broker never mints a token that one of its
 * own readers refuses. With 60 resources of about 1,000 characters it used to mint an 82 KB token
 * that introspection refused (413) and end and renew refused (431), while its grant held a cap
 * slot for its whole life. Over real HTTP and the harness's Redis: a token of exactly the largest
 * size is accepted by renew, end, introspection and revocation; an intent one byte over is a 400
 * that writes nothing.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { MAX_TASK_TOKEN_BYTES, MIN_BODY_BYTES } from '../../src/protocol/limits.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { configProblems } from '../helpers/config.js';

const RS_CREDENTIAL = 'token-size-test-credential-0123456789abcdefghijklmnopqrstuv';
const MAX_BODY = 65_536;
let issuer: OidcIssuer;
let broker: BrokerRuntime;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    http: { max_body_bytes: MAX_BODY },
    grants: { max_active_per_workload: 3 },
    resource_servers: [{ name: 'payments-db', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }],
  });
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const workloadOf = (sa: string) => `k8s://test/ns/payments/sa/${sa}`;
const saToken = (sa: string) => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: sa, audience: AUDIENCE, ttlSeconds: 600 });
const BASE = 'db://payments/r0';
const intentWith = (resources: string[]) => ({ audience: 'db.payments', actions: ['read'], resources, purpose: 'token size', task: 'size-test' });
const start = async (sa: string, resources: string[]) => postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken(sa) }, intent: intentWith(resources) });
const form = (path: string, body: string) =>
  fetch(`${broker.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` }, body }).then(async (r) => ({
    status: r.status,
    json: (await r.json()) as Record<string, unknown>,
  }));
const introspect = (token: string) => form('/oauth2/introspect', `token=${token}&token_type_hint=access_token`);
const revoke = (token: string) => form('/oauth2/revoke', `token=${token}&token_type_hint=access_token`);

/**
 * Resources whose JSON in the token is `extra` bytes longer than `[BASE]`: fillers of 1,000
 * characters (each adds 1,003 bytes: `,"…"`), the rest appended to BASE.
 */
function resourcesAdding(extra: number): string[] {
  const fillers = Math.floor(extra / 1003);
  const rest = extra - fillers * 1003;
  const filler = (i: number) => `db://payments/f${i}/`.padEnd(1000, 'x');
  return [BASE + 'x'.repeat(rest), ...Array.from({ length: fillers }, (_, i) => filler(i))];
}

/**
 * The token of `[BASE]` (for a service account named with 6 characters, as every one here: the
 * workload id is in `sub` and `client_id`), and the extra intent bytes that make a token of exactly the limit, or just over it. */
async function boundary() {
  const base = await start('probe0', [BASE]);
  expect(base.status, JSON.stringify(base.json)).toBe(201);
  const [h, p, s] = (base.json.access_token as string).split('.') as [string, string, string];
  const n0 = Buffer.from(p, 'base64url').length;
  const length = (n: number) => h.length + 1 + Math.ceil((4 * n) / 3) + 1 + s.length;
  let n = n0;
  while (length(n + 1) <= MAX_TASK_TOKEN_BYTES) n++;
  return { within: n - n0, over: n + 1 - n0, lengthWithin: length(n) };
}

let sizes: Awaited<ReturnType<typeof boundary>>;
beforeAll(async () => {
  sizes = await boundary();
});

describe('task-token size bound', () => {
  it('the limit is derived from the readers: 8 KiB of headers left for the rest, the form body holds it', () => {
    expect(MAX_TASK_TOKEN_BYTES).toBe(16_384 - 8_192 - 'Authorization'.length - 'Bearer '.length);
    expect(MIN_BODY_BYTES).toBeGreaterThanOrEqual(MAX_TASK_TOKEN_BYTES + 'token='.length + '&token_type_hint=access_token'.length);
  });

  it('a token of the largest size is accepted by introspection, renew (with 8 KiB of other headers) and end', async () => {
    const r = await start('within', resourcesAdding(sizes.within));
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    const token = r.json.access_token as string;
    expect(token.length).toBe(sizes.lengthWithin);
    expect(token.length).toBeGreaterThan(MAX_TASK_TOKEN_BYTES - 4); // base64url grows by 4 characters per 3 bytes
    const grant = r.json.grant as string;

    expect((await introspect(token)).json).toMatchObject({ active: true, grant });

    // Other headers up to the headroom (a forwarded certificate chain, X-Forwarded-For, ...).
    const other = { 'x-forwarded-for': '203.0.113.7', 'x-request-context': 'c'.repeat(7_600) };
    const renewed = await postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken('within') } }, { authorization: `Bearer ${token}`, ...other });
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    const token2 = renewed.json.access_token as string;
    expect(token2.length).toBeLessThanOrEqual(MAX_TASK_TOKEN_BYTES);

    const ended = await postJson(`${broker.url}/v1/tasks/${grant}/end`, '', { authorization: `Bearer ${token2}`, ...other });
    expect(ended.status, JSON.stringify(ended.json)).toBe(200);
    expect(ended.json.status).toBe('ended');
    expect((await introspect(token2)).json).toEqual({ active: false });
  });

  it('a token of the largest size is revoked by its resource server; an invalid one within the limit gets 200 and changes nothing', async () => {
    const r = await start('revoke', resourcesAdding(sizes.within));
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    const token = r.json.access_token as string;
    expect(token.length).toBe(sizes.lengthWithin);

    // RFC 7009 §2.2: an invalid token is no error; the grant is untouched.
    const forged = `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    expect(await revoke(forged)).toEqual({ status: 200, json: {} });
    expect(await revoke('a'.repeat(MAX_TASK_TOKEN_BYTES))).toEqual({ status: 200, json: {} });
    expect((await introspect(token)).json.active).toBe(true);

    expect(await revoke(token)).toEqual({ status: 200, json: {} });
    expect((await introspect(token)).json).toEqual({ active: false });
    expect(await broker.store.getGrant(r.json.grant as string)).toMatchObject({ status: 'revoked' });
  });

  it('an intent whose token would be one byte over the limit is a 400 that writes nothing and holds no cap slot', async () => {
    const wl = workloadOf('overby');
    for (let i = 0; i < 5; i++) {
      const r = await start('overby', resourcesAdding(sizes.over));
      expect(r.status).toBe(400);
      expect(r.json.error).toBe('invalid_request');
      expect(r.json.error_description).toMatch(new RegExp(`task token .* over the ${MAX_TASK_TOKEN_BYTES}-byte limit`));
    }
    expect(await broker.store.listWorkloadGrants(wl, { now: Date.now() })).toEqual([]);
    expect(await broker.store.readAudit(wl)).toEqual([]);
    // The cap (3) is free: the same workload still gets its three grants.
    for (let i = 0; i < 3; i++) expect((await start('overby', [BASE])).status).toBe(201);
  });

  it('the reported attack: 60 resources of about 1,000 characters is a 400 naming the limit, not an 82 KB token', async () => {
    const resources = Array.from({ length: 60 }, (_, i) => `db://payments/attack${i}/`.padEnd(1000, 'y'));
    const r = await start('attack', resources); // any size: far over
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ error: 'invalid_request' });
    expect(r.json.error_description).toContain(`${MAX_TASK_TOKEN_BYTES}-byte limit`);
    expect(await broker.store.listWorkloadGrants(workloadOf('attack'), { now: Date.now() })).toEqual([]);
  });

  it('a token parameter longer than any task token is a 400; a body over http.max_body_bytes stays 413', async () => {
    const long = await revoke('a'.repeat(MAX_TASK_TOKEN_BYTES + 1));
    expect(long.status).toBe(400);
    expect(long.json.error).toBe('invalid_request');
    expect((await introspect('a'.repeat(MAX_TASK_TOKEN_BYTES + 1))).status).toBe(400);
    const huge = await revoke('a'.repeat(MAX_BODY));
    expect(huge.status).toBe(413);
    expect(huge.json.error).toBe('request_too_large');
  });

  it('config load refuses an http.max_body_bytes too small for a task token in a form', () => {
    const base = { issuer: 'https://broker.test', store: { kind: 'memory' }, policies: [] };
    expect(configProblems({ ...base, http: { max_body_bytes: MIN_BODY_BYTES } })).toEqual([]);
    const problems = configProblems({ ...base, http: { max_body_bytes: 4096 } });
    expect(problems.join('\n')).toMatch(new RegExp(`http\\.max_body_bytes: must be >= ${MIN_BODY_BYTES}`));
  });
});
