/**
 * The kill switch (issue 13 item 3) against a real broker and the harness's Redis: POST
 * /v1/grants/revoke by each selector, with a dry run first; afterwards introspection is inactive
 * for exactly the matching grants and active for every other; each revoked grant's event and the
 * operation's event name the operator. Revoking by key id also retires the key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';

let issuer: OidcIssuer;
let second: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
const admin = newCredential();
const auditor = newCredential();
const rs = newCredential();

interface Started {
  grant: string;
  token: string;
  workload: string;
  task: string;
  kid: string;
}
/** Every grant started in this file: each test checks all of them, not only its own. */
const all: Started[] = [];
/** Grants some selector revoked. */
const revoked = new Set<string>();

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  second = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    attestation: { oidc: { issuers: [issuerEntry(issuer), issuerEntry(second, { mapping: { preset: 'kubernetes', cluster: 'other' } })] } },
    resource_servers: [{ name: 'rs', audiences: ['db.payments', 'ledger-api'], credential_sha256: rs.sha256 }],
    operators: [
      { name: 'root', role: 'admin', credential_sha256: admin.sha256 },
      { name: 'viewer', role: 'auditor', credential_sha256: auditor.sha256 },
    ],
    policies: [
      { name: 'payments', workloads: ['k8s://*/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
      { name: 'ledger', workloads: ['k8s://*/ns/ledger/sa/*'], audiences: ['ledger-api'], actions: ['read'], resources: ['ledger://**'] },
    ],
  });
});

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  await second?.close();
});

let taskSeq = 0;
async function start(ns: 'payments' | 'ledger', sa: string, opts: { from?: OidcIssuer; task?: string } = {}): Promise<Started> {
  const from = opts.from ?? issuer;
  const token = await from.mintServiceAccountToken({ cluster: from === issuer ? 'test' : 'other', namespace: ns, serviceAccount: sa, pod: 'p', audience: AUDIENCE, ttlSeconds: 600 });
  const task = opts.task ?? `task-${++taskSeq}`;
  const intent = ns === 'payments' ? { audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'] } : { audience: 'ledger-api', actions: ['read'], resources: ['ledger://x'] };
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent: { ...intent, purpose: 'p', task } });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  const accessToken = res.json.access_token as string;
  const kid = (JSON.parse(Buffer.from(accessToken.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
  const s = { grant: res.json.grant as string, token: accessToken, workload: res.json.workload as string, task, kid };
  all.push(s);
  return s;
}

const active = async (token: string) => {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${rs.credential}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  return ((await res.json()) as { active: boolean }).active;
};

const revoke = (body: unknown, credential = admin.credential) => postJson(`${broker.url}/v1/grants/revoke`, body, { authorization: `Bearer ${credential}` });
const get = async (path: string, credential = auditor.credential) => {
  const res = await fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${credential}` } });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
};

/** Dry run, then the real thing (looping on the cursor until done); returns the revoked ids. */
async function killSwitch(selector: Record<string, string>, expected: Started[]): Promise<void> {
  const dry = await revoke({ selector, reason: 'drill', dry_run: true });
  expect(dry.status, JSON.stringify(dry.json)).toBe(200);
  expect(dry.json).toMatchObject({ dry_run: true, done: true, revoked: expected.length });
  expect(new Set(dry.json.grants as string[])).toEqual(new Set(expected.map((s) => s.grant)));
  // A dry run changes nothing.
  for (const s of all) expect(await active(s.token), `${s.grant} after dry run`).toBe(!revoked.has(s.grant));

  let total = 0;
  let cursor: string | undefined;
  for (let calls = 0; ; calls++) {
    const res = await revoke({ selector, reason: 'incident 42', ...(cursor ? { cursor } : {}) });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    total += res.json.revoked as number;
    if (res.json.done) break;
    cursor = res.json.cursor as string;
    expect(calls).toBeLessThan(100);
  }
  expect(total).toBe(expected.length);
  for (const s of expected) revoked.add(s.grant);
  // Exactly the matching grants are dead; every other one is still live.
  for (const s of all) expect(await active(s.token), s.grant).toBe(!revoked.has(s.grant));
  // Each revoked grant records its closer, and its event names the operator.
  for (const s of expected) {
    const shown = await get(`/v1/grants/${s.grant}`);
    expect(shown.json).toMatchObject({ status: 'revoked', closed_by: 'operator:root' });
    expect((shown.json.events as { type: string; operator?: string; reason?: string }[]).at(-1)).toMatchObject({
      type: 'grant.revoked',
      operator: 'root',
      reason: 'revoked by operator root: incident 42',
    });
  }
  // A second run finds nothing live.
  expect((await revoke({ selector, reason: 'again' })).json).toMatchObject({ revoked: 0, done: true });
}

describe('POST /v1/grants/revoke', () => {
  it('by grant id', async () => {
    const a = await start('payments', 'api');
    await start('payments', 'api');
    await killSwitch({ grant: a.grant }, [a]);
  });

  it('by workload id, and by workload glob', async () => {
    const a = await start('payments', 'batch');
    const b = await start('payments', 'batch');
    await start('payments', 'cron');
    await killSwitch({ workload: 'k8s://test/ns/payments/sa/batch' }, [a, b]);
    const c = await start('ledger', 'writer');
    const d = await start('ledger', 'reader');
    await killSwitch({ workload: 'k8s://test/ns/ledger/sa/*' }, [c, d]);
  });

  it('by task, audience, rule and issuer', async () => {
    const t1 = await start('payments', 'api', { task: 'shared-task' });
    const t2 = await start('payments', 'cron', { task: 'shared-task' });
    await killSwitch({ task: 'shared-task' }, [t1, t2]);

    const l1 = await start('ledger', 'auditor');
    await killSwitch({ audience: 'ledger-api' }, [l1]);
    const l2 = await start('ledger', 'auditor');
    await killSwitch({ rule: 'ledger' }, [l2]);

    const o1 = await start('payments', 'api', { from: second });
    const o2 = await start('ledger', 'writer', { from: second });
    await killSwitch({ issuer: second.issuer }, [o1, o2]);
  });

  it('by signing key id: the grants it signed die, and the key signs and verifies nothing more', async () => {
    const old1 = await start('payments', 'api');
    const old2 = await start('ledger', 'writer');
    const kid = old1.kid;
    expect(old2.kid).toBe(kid);
    const rotated = await postJson(`${broker.url}/v1/keys/rotate`, {}, { authorization: `Bearer ${admin.credential}` });
    expect(rotated.json).toMatchObject({ rotated: true, previous_kid: kid });
    const fresh = await start('payments', 'api');
    expect(fresh.kid).not.toBe(kid);
    const olderLive = all.filter((s) => s.kid === kid && !revoked.has(s.grant));
    await killSwitch({ key_id: kid }, olderLive);
    // Left out of the JWKS; its mark is authenticated in the store.
    const jwks = (await (await fetch(`${broker.url}/.well-known/jwks.json`)).json()) as { keys: { kid: string }[] };
    expect(jwks.keys.map((k) => k.kid)).not.toContain(kid);
    expect((await broker.store.revokedKeys(Date.now())).map((m) => m.kid)).toContain(kid);
    const keys = await get('/v1/keys');
    expect((keys.json.keys as { kid: string }[]).map((k) => k.kid)).not.toContain(kid);

    // Revoking the key that signs now: this instance moves to its next key at once.
    const current = fresh.kid;
    for (let i = 0; i < 100 && !(await get('/v1/keys')).json.keys.some((k: { state?: string }) => k.state === 'next'); i++) await new Promise((r) => setTimeout(r, 20));
    const res = await revoke({ selector: { key_id: current }, reason: 'key compromised' });
    expect(res.json).toMatchObject({ key: { kid: current, held_by_this_instance: true }, done: true });
    expect(await active(fresh.token)).toBe(false);
    revoked.add(fresh.grant);
    const after = await start('payments', 'api');
    expect([kid, current]).not.toContain(after.kid);
    expect(await active(after.token)).toBe(true);
  });

  it('audits the operation naming the operator, and refuses auditors, bad selectors and bad input with 4xx', async () => {
    const ops = (await broker.store.readOperatorAudit()).filter((e) => e.action === 'grants.revoke' || e.action === 'keys.revoke');
    expect(ops.length).toBeGreaterThan(0);
    for (const e of ops) expect(e).toMatchObject({ operator: 'root', role: 'admin' });
    expect(ops.some((e) => e.action === 'grants.revoke' && e.dry_run === true)).toBe(true);
    expect(ops.some((e) => e.action === 'grants.revoke' && e.reason === 'incident 42' && e.done === true)).toBe(true);
    expect(new Set(ops.filter((e) => e.action === 'keys.revoke').map((e) => e.kid)).size).toBe(2);

    const s = await start('payments', 'api');
    const denied = await revoke({ selector: { grant: s.grant }, reason: 'x' }, auditor.credential);
    expect(denied.status).toBe(403);
    expect(denied.json.error).toBe('access_denied');
    for (const body of [
      {},
      { selector: { grant: s.grant } },
      { selector: { grant: s.grant, task: 't' }, reason: 'r' },
      { selector: {}, reason: 'r' },
      { selector: { grant: 'not-a-grant' }, reason: 'r' },
      { selector: { task: 't' }, reason: 'r', cursor: '!!' },
      { selector: { task: 't' }, reason: 'r', dry_run: 'yes' },
      { selector: { color: 'red' }, reason: 'r' },
      { selector: { task: 't' }, reason: '' },
      { selector: { task: 't\u0000' }, reason: 'r' },
    ]) {
      const res = await revoke(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json.error).toBe('invalid_request');
    }
    expect(await active(s.token)).toBe(true);
  });
});
