/**
 * The operators' event log (issue 13 item 4) and policy explain (item 5), against a real broker
 * over HTTP and the harness's real Redis: every state change of many workloads in GET /v1/audit
 * in time order, filters and cursor pagination (every event exactly once), operator identity,
 * the ndjson export, the SSE live tail (resume with Last-Event-ID, bounded streams, broker close),
 * POST /v1/policy/explain, and who may call them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
const admin = newCredential();
const auditor = newCredential();
const rs = newCredential();
const ADMIN = { authorization: `Bearer ${admin.credential}` };
const AUDITOR = { authorization: `Bearer ${auditor.credential}` };
const WORKLOADS = 12;
const sa = (n: number) => `k8s://test/ns/payments/sa/w${n}`;

const overrides = () => ({
  operators: [
    { name: 'root', role: 'admin' as const, credential_sha256: admin.sha256 },
    { name: 'viewer', role: 'auditor' as const, credential_sha256: auditor.sha256 },
  ],
  resource_servers: [{ name: 'orders-db', audiences: ['db.payments'], credential_sha256: rs.sha256 }],
  policies: [
    { name: 'payments-read', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    { name: 'payments-write', workloads: ['k8s://test/ns/payments/sa/writer'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'], require_binding: true },
    { name: 'reports', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['reports'], actions: ['export'] },
  ],
});

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, overrides(), { auditTails: { pollMs: 50, heartbeatMs: 200, maxStreams: 2 } });
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const token = (n: number) => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: `w${n}`, audience: AUDIENCE, ttlSeconds: 600 });
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'audit log test' };

async function startTask(n: number, over: Partial<typeof intent> = {}) {
  return postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await token(n) }, intent: { ...intent, ...over } });
}
async function issue(n: number): Promise<{ grant: string; token: string }> {
  const res = await startTask(n);
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}
const renew = async (n: number, grant: string, bearer: string) =>
  postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await token(n) } }, { authorization: `Bearer ${bearer}` });
const end = (grant: string, bearer: string) => postJson(`${broker.url}/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${bearer}` });
const rsRevoke = (t: string) =>
  fetch(`${broker.url}/oauth2/revoke`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${rs.credential}` },
    body: new URLSearchParams({ token: t }).toString(),
  });

type Entry = { id: string; type: string; at: string; workload?: string; grant?: string; operator?: string; role?: string; action?: string; kid?: string; generation?: number };
type Page = { order: string; events: Entry[]; cursor: string | null; done: boolean };

async function get(path: string, headers: Record<string, string> = AUDITOR) {
  const res = await fetch(`${broker.url}${path}`, { headers });
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = JSON.parse(text);
  } catch {
    /* ndjson or empty */
  }
  return { status: res.status, headers: res.headers, text, json: json as Page & { error?: string; error_description?: string } };
}
const log = async (query: string) => {
  const res = await get(`/v1/audit?${query}`);
  expect(res.status, res.text).toBe(200);
  return res.json;
};

/** Walks every page; returns the events in the order received. */
async function walk(query: string, limit: number, from: string | null = null): Promise<Entry[]> {
  const out: Entry[] = [];
  let cursor: string | null = from;
  for (let i = 0; i < 500; i++) {
    const page: Page = await log(`${query}&limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    out.push(...page.events);
    if (page.done || page.events.length === 0) break;
    cursor = page.cursor;
    expect(cursor).toBeTruthy();
  }
  return out;
}

const position = (id: string) => {
  const [entry, code] = id.split(':') as [string, string];
  const [ms, seq] = entry.split('-').map(Number) as [number, number];
  return { ms, seq, code };
};
const before = (a: string, b: string) => {
  const x = position(a);
  const y = position(b);
  return x.ms - y.ms || x.seq - y.seq || (x.code < y.code ? -1 : x.code > y.code ? 1 : 0);
};

describe('GET /v1/audit: every state change, merged across workloads', () => {
  const grants: Record<string, { workload: string; expect: string[] }> = {};

  beforeAll(async () => {
    // Every kind of state change, spread over many workloads (and so over many shard streams).
    for (let n = 0; n < WORKLOADS; n++) {
      const g = await issue(n);
      grants[g.grant] = { workload: sa(n), expect: ['grant.issued'] };
      if (n % 4 === 0) {
        const r = await renew(n, g.grant, g.token);
        expect(r.status, JSON.stringify(r.json)).toBe(200);
        grants[g.grant]!.expect.push('grant.renewed');
        const r2 = await renew(n, g.grant, r.json.access_token as string);
        expect(r2.status, JSON.stringify(r2.json)).toBe(200);
        grants[g.grant]!.expect.push('grant.renewed');
        // A token older than the one just superseded: two holders, the grant is revoked.
        expect((await renew(n, g.grant, g.token)).status).toBe(400);
        grants[g.grant]!.expect.push('grant.replay_detected');
      } else if (n % 4 === 1) {
        expect((await end(g.grant, g.token)).status).toBe(200);
        grants[g.grant]!.expect.push('grant.ended');
      } else if (n % 4 === 2) {
        expect((await rsRevoke(g.token)).status).toBe(200);
        grants[g.grant]!.expect.push('grant.revoked');
      }
    }
    // Denials (within the audit budget): an action no rule allows.
    expect((await startTask(3, { actions: ['delete'] })).status).toBe(403);
    expect((await startTask(5, { actions: ['delete'] })).status).toBe(403);
    // An operator action, which also publishes a new next key.
    const rotated = await fetch(`${broker.url}/v1/keys/rotate`, { method: 'POST', headers: ADMIN });
    expect(rotated.status).toBe(200);
  });

  it('has each grant\'s events in order, merged in time order across workloads', async () => {
    const page = await log('order=asc&type=issued,renewed,ended,revoked,replay_detected&limit=1000');
    expect(page.order).toBe('asc');
    const ids = page.events.map((e) => e.id);
    expect([...ids].sort(before)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [grant, g] of Object.entries(grants)) {
      const mine = page.events.filter((e) => e.grant === grant);
      expect(mine.map((e) => e.type), grant).toEqual(g.expect);
      for (const e of mine) expect(e.workload).toBe(g.workload);
    }
    // The shard streams are a bounded set: 12 workloads, at most 16 streams.
    const shards = new Set(page.events.map((e) => position(e.id).code));
    for (const code of shards) expect(code).toMatch(/^g(\d|1[0-5])$/);
    expect(page.events.find((e) => e.type === 'grant.renewed')?.generation).toBe(2);
  });

  it('records denials, key events and operator actions with the operator\'s identity', async () => {
    const denied = (await log('type=denied')).events;
    expect(denied.map((e) => e.workload).sort()).toEqual([sa(3), sa(5)]);
    const keys = (await log('type=key.published,key.retired')).events;
    expect(keys.some((e) => e.type === 'key.published' && e.kid)).toBe(true);
    expect(keys.some((e) => e.type === 'key.retired' && e.kid)).toBe(true);
    const ops = (await log('type=operator')).events;
    expect(ops.find((e) => e.action === 'keys.rotate')).toMatchObject({ type: 'operator.action', operator: 'root', role: 'admin' });
    // Reading the log is itself audited, naming the reader.
    expect(ops.find((e) => e.action === 'audit.read')).toMatchObject({ operator: 'viewer', role: 'auditor' });
  });

  it('is newest first by default, and pages by cursor give every event exactly once (both orders)', async () => {
    const q = 'type=grant.issued,grant.renewed,grant.ended,grant.revoked,grant.replay_detected,grant.denied';
    const all = (await log(`${q}&limit=1000`)).events;
    expect(all.length).toBeGreaterThan(WORKLOADS * 2);
    expect([...all].sort((a, b) => before(b.id, a.id)).map((e) => e.id)).toEqual(all.map((e) => e.id));
    const desc = await walk(q, 4);
    expect(desc.map((e) => e.id)).toEqual(all.map((e) => e.id));
    const asc = await walk(`${q}&order=asc`, 5);
    expect(asc.map((e) => e.id)).toEqual([...all].reverse().map((e) => e.id));
  });

  it('a page walk is stable while new events arrive', async () => {
    const q = 'type=issued';
    const first: Page = await log(`${q}&limit=3`);
    const arrived = await issue(7);
    const rest = await walk(q, 3, first.cursor);
    const seen = [...first.events, ...rest].map((e) => e.id);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...first.events, ...rest].some((e) => e.grant === arrived.grant)).toBe(false); // newer than the walk's start
    expect(seen.length).toBe(Object.keys(grants).length);
    grants[arrived.grant] = { workload: sa(7), expect: ['grant.issued'] };
  });

  it('filters by workload (its own streams), by grant, and by time', async () => {
    const w = (await log(`workload=${encodeURIComponent(sa(3))}&order=asc`)).events;
    expect(w.length).toBeGreaterThan(0);
    expect(w.every((e) => e.workload === sa(3))).toBe(true);
    expect(w.map((e) => e.type)).toContain('grant.denied');
    for (const e of w) expect(position(e.id).code).toMatch(/^[wd]$/);
    const [grant, g] = Object.entries(grants).find(([, x]) => x.expect.includes('grant.replay_detected'))!;
    const byGrant = (await log(`grant=${grant}&order=asc`)).events;
    expect(byGrant.map((e) => e.type)).toEqual(g.expect);
    // Workload pages by cursor too.
    expect((await walk(`workload=${encodeURIComponent(sa(3))}&order=asc`, 1)).map((e) => e.id)).toEqual(w.map((e) => e.id));
    // since (inclusive) and until (exclusive), by the time the entry was appended.
    const all = (await log('type=issued&order=asc&limit=1000')).events;
    const mid = all[Math.floor(all.length / 2)]!;
    const ms = position(mid.id).ms;
    const since = (await log(`type=issued&order=asc&limit=1000&since=${new Date(ms).toISOString()}`)).events;
    expect(since.map((e) => e.id)).toEqual(all.filter((e) => position(e.id).ms >= ms).map((e) => e.id));
    const until = (await log(`type=issued&order=asc&limit=1000&until=${ms}`)).events;
    expect(until.map((e) => e.id)).toEqual(all.filter((e) => position(e.id).ms < ms).map((e) => e.id));
  });

  it('exports ndjson, bounded per call, with a cursor to continue', async () => {
    const all = (await log('type=issued&order=asc&limit=1000')).events;
    const lines: Entry[] = [];
    let cursor = '';
    for (let i = 0; i < 100; i++) {
      const res = await get(`/v1/audit?format=ndjson&type=issued&limit=4${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/x-ndjson');
      expect(res.headers.get('audit-order')).toBe('asc');
      const got = res.text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Entry);
      expect(got.length).toBeLessThanOrEqual(4);
      lines.push(...got);
      cursor = res.headers.get('audit-cursor') ?? '';
      if (res.headers.get('audit-done') === 'true') break;
    }
    expect(lines.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(cursor).not.toBe(''); // a SIEM keeps polling forward from it
  });

  it('refuses bad parameters with a clear 400', async () => {
    for (const [q, what] of [
      ['cursor=nonsense', /cursor/],
      ['type=bogus', /unknown event type "bogus"/],
      ['limit=0', /limit/],
      ['limit=5000', /limit/],
      ['since=yesterday', /since/],
      ['since=2000&until=1000', /until/],
      ['grant=g_x', /grant/],
      [`workload=a&grant=g_${'A'.repeat(22)}_${'B'.repeat(22)}`, /not both/],
      ['frobnicate=1', /frobnicate|unrecognized/i],
    ] as const) {
      const res = await get(`/v1/audit?${q}`);
      expect(res.status, q).toBe(400);
      expect(res.json.error).toBe('invalid_request');
      expect(res.json.error_description, q).toMatch(what);
    }
    // A desc cursor is not an asc one.
    const page = await log('limit=1');
    expect((await get(`/v1/audit?order=asc&cursor=${page.cursor}`)).status).toBe(400);
  });
});

describe('who may read the log and explain the policy', () => {
  it('auditor and admin: yes; anonymous, a wrong credential, a workload token, a resource server: 401', async () => {
    const g = await issue(9);
    expect((await get('/v1/audit?limit=1', AUDITOR)).status).toBe(200);
    expect((await get('/v1/audit?limit=1', ADMIN)).status).toBe(200);
    for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${newCredential().credential}` }, { authorization: `Bearer ${g.token}` }, { authorization: `Bearer ${rs.credential}` }]) {
      for (const path of ['/v1/audit', '/v1/audit/stream']) {
        const res = await get(path, headers);
        expect(res.status, `${path} ${JSON.stringify(headers).slice(0, 30)}`).toBe(401);
      }
      const ex = await postJson(`${broker.url}/v1/policy/explain`, { workload: sa(1), intent }, headers);
      expect(ex.status).toBe(401);
    }
  });
});

/** A minimal SSE reader over fetch: frames as {id, event, data}, comments as {comment}. */
function sse(path: string, headers: Record<string, string> = AUDITOR) {
  const ctl = new AbortController();
  const frames: { id?: string; event?: string; data?: string; comment?: string }[] = [];
  let ended = false;
  let status = 0;
  const ready = fetch(`${broker.url}${path}`, { headers, signal: ctl.signal }).then(async (res) => {
    status = res.status;
    if (!res.ok || !res.body) {
      ended = true;
      return;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const f: (typeof frames)[number] = {};
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) f.comment = line.slice(1).trim();
              else {
                const [k, ...v] = line.split(': ');
                if (k === 'id' || k === 'event' || k === 'data') f[k] = v.join(': ');
              }
            }
            frames.push(f);
          }
        }
      } catch {
        /* aborted */
      }
      ended = true;
    })();
  });
  const until = async <T>(check: () => T | undefined, what: string): Promise<T> => {
    for (let i = 0; i < 400; i++) {
      const got = check();
      if (got !== undefined) return got;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`SSE: timed out waiting for ${what}; frames: ${JSON.stringify(frames).slice(0, 500)}`);
  };
  const events = () => frames.filter((f) => f.data && !f.event).map((f) => ({ ...(JSON.parse(f.data!) as Entry), id: f.id! }));
  return { ctl, frames, events, until, ready, status: () => status, ended: () => ended };
}

describe('GET /v1/audit/stream: the live tail', () => {
  it('receives an issuance made after it connected, and resumes from Last-Event-ID without loss or duplicates', async () => {
    const tail = sse('/v1/audit/stream?type=issued');
    await tail.ready;
    expect(tail.status()).toBe(200);
    await tail.until(() => tail.frames.find((f) => f.event === 'ready'), 'ready');
    const a = await issue(10);
    const first = await tail.until(() => tail.events().find((e) => e.grant === a.grant), 'the issuance');
    expect(first).toMatchObject({ type: 'grant.issued', workload: sa(10) });
    expect(tail.events()).toHaveLength(1); // nothing from before it connected
    // Idle: heartbeat comments keep the stream open.
    await tail.until(() => tail.frames.find((f) => f.comment === 'heartbeat'), 'a heartbeat');
    tail.ctl.abort();
    await tail.until(() => (tail.ended() ? true : undefined), 'the end');

    // While disconnected, two more issuances; the resumed tail gets exactly those, in order.
    const b = await issue(11);
    const c = await issue(2);
    const resumed = sse('/v1/audit/stream?type=issued', { ...AUDITOR, 'last-event-id': first.id });
    await resumed.until(() => (resumed.events().length >= 2 ? true : undefined), 'two events');
    const d = await issue(4);
    await resumed.until(() => (resumed.events().length >= 3 ? true : undefined), 'the live one');
    await new Promise((r) => setTimeout(r, 200));
    expect(resumed.events().map((e) => e.grant)).toEqual([b.grant, c.grant, d.grant]);
    const ids = resumed.events().map((e) => e.id);
    expect([...ids].sort(before)).toEqual(ids);
    resumed.ctl.abort();
  });

  it('filters by workload and refuses a Last-Event-ID of another scope', async () => {
    const tail = sse(`/v1/audit/stream?workload=${encodeURIComponent(sa(6))}`);
    await tail.until(() => tail.frames.find((f) => f.event === 'ready'), 'ready');
    await issue(5);
    const mine = await issue(6);
    const got = await tail.until(() => tail.events().find((e) => e.grant === mine.grant), 'the workload event');
    expect(position(got.id).code).toBe('w');
    expect(tail.events().every((e) => e.workload === sa(6))).toBe(true);
    tail.ctl.abort();
    const wrong = await get(`/v1/audit/stream?workload=${encodeURIComponent(sa(6))}`, { ...AUDITOR, 'last-event-id': '1-0:g3' });
    expect(wrong.status).toBe(400);
    expect(wrong.json.error_description).toMatch(/Last-Event-ID/);
  });

  it('bounds concurrent streams per instance (429), and frees a slot when a client goes away', async () => {
    const one = sse('/v1/audit/stream');
    const two = sse('/v1/audit/stream');
    await one.until(() => one.frames.find((f) => f.event === 'ready'), 'ready 1');
    await two.until(() => two.frames.find((f) => f.event === 'ready'), 'ready 2');
    const three = await get('/v1/audit/stream');
    expect(three.status).toBe(429);
    expect(three.headers.get('retry-after')).toBeTruthy();
    one.ctl.abort();
    // The server sees the client go and frees its slot.
    let four: ReturnType<typeof sse> | undefined;
    for (let i = 0; i < 200 && !four; i++) {
      const attempt = sse('/v1/audit/stream');
      await attempt.ready;
      if (attempt.status() === 200) four = attempt;
      else await new Promise((r) => setTimeout(r, 25));
    }
    expect(four).toBeDefined();
    await four!.until(() => four!.frames.find((f) => f.event === 'ready'), 'ready 4');
    two.ctl.abort();
    four!.ctl.abort();
  });

  it('ends cleanly when the broker closes', async () => {
    const other = await startTestBroker(issuer, { ...overrides(), prefix: broker.prefix }, { auditTails: { pollMs: 50 } });
    const ctl = new AbortController();
    const res = await fetch(`${other.url}/v1/audit/stream`, { headers: AUDITOR, signal: ctl.signal });
    expect(res.status).toBe(200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const first = await reader.read();
    expect(first.value).toContain('event: ready');
    await other.close();
    let done = false;
    for (let i = 0; i < 50 && !done; i++) done = (await reader.read()).done;
    expect(done).toBe(true);
  });
});

describe('POST /v1/policy/explain', () => {
  const explain = (body: unknown) => postJson(`${broker.url}/v1/policy/explain`, body, AUDITOR);

  it('allow: the matching rule and what would be granted', async () => {
    const res = await explain({ workload: sa(1), intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/a'] } });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ decision: 'allow', rule: 'payments-read', granted: { audience: 'db.payments', actions: ['read'], require_binding: false }, reason: null });
  });

  it.each([
    ['workload', { workload: 'k8s://test/ns/hr/sa/x', intent: { audience: 'reports', actions: ['export'] } }, ['workload'], 'reports'],
    ['audience', { workload: sa(1), intent: { audience: 'db.hr', actions: ['read'], resources: ['db://payments/a'] } }, ['audience'], 'payments-read'],
    ['actions', { workload: sa(1), intent: { audience: 'db.payments', actions: ['read', 'drop'], resources: ['db://payments/a'] } }, ['actions'], 'payments-read'],
    ['resources', { workload: sa(1), intent: { audience: 'db.payments', actions: ['read'], resources: ['db://hr/a'] } }, ['resources'], 'payments-read'],
    [
      'evidence kind',
      { workload: 'k8s://test/ns/payments/sa/writer', evidence_kind: 'oidc', intent: { audience: 'db.payments', actions: ['write'], resources: ['db://payments/a'] } },
      undefined,
      'payments-write',
    ],
  ])('deny by %s: which part no rule allows, and the closest rule', async (part, body, notAllowed, closest) => {
    const res = await explain(body);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json.decision).toBe('deny');
    expect(typeof res.json.reason).toBe('string');
    expect((res.json.closest_rule as { name: string }).name).toBe(closest);
    if (notAllowed) expect((res.json.not_allowed as { parts: string[] }).parts).toEqual(notAllowed);
    else expect((res.json.closest_rule as { refused: { parts: string[] } }).refused.parts).toEqual(['evidence_kind']);
    void part;
  });

  it('refuses bad input with a clear 400, and is audited naming the operator', async () => {
    const bad = await explain({ workload: sa(1), intent: { audience: 'db.payments', actions: [] } });
    expect(bad.status).toBe(400);
    expect(bad.json.error_description).toMatch(/actions/);
    expect((await explain({ workload: sa(1), evidence_kind: 'jwt', intent })).status).toBe(400);
    const ops = (await log('type=operator&limit=1000')).events;
    expect(ops.find((e) => e.action === 'policy.explain')).toMatchObject({ operator: 'viewer', role: 'auditor' });
  });
});
