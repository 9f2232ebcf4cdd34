/**
 * Operator queries (issue 13 item 2) over 10,000 grants of 1,000 workloads, written through the
 * Redis store (pipelined), read through the real HTTP API: GET /v1/grants pages newest first with
 * an opaque cursor, every grant exactly once, stable while new grants arrive during the walk;
 * filters (workload, task, audience, issuer, rule, status incl. derived `expired`, since/until)
 * are applied while walking and may return partial pages; GET /v1/grants/{id}; GET /v1/workloads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { newGrantId } from '../../src/grants/ids.js';
import type { NewGrant } from '../../src/grants/store.js';
import type { BrokerRuntime } from '../../src/server.js';
import { startTestBroker } from '../helpers/broker.js';

const GRANTS = 10_000;
const WORKLOADS = 1_000;
const MIN = 60_000;

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let offset = 0;
const clock = () => Date.now() + offset;
const auditor = newCredential();
let base: number;
const made: (NewGrant & { final: 'active' | 'expired' | 'ended' | 'revoked' })[] = [];

const workloadOf = (i: number) => `k8s://test/ns/team-${Math.floor((i % WORKLOADS) / 100)}/sa/svc-${i % WORKLOADS}`;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, { operators: [{ name: 'viewer', role: 'auditor', credential_sha256: auditor.sha256 }] }, { clock });
  base = clock();
  for (let i = 0; i < GRANTS; i++) {
    const workload = workloadOf(i);
    const short = i % 10 === 3;
    made.push({
      id: newGrantId(workload),
      workload,
      workload_kind: 'oidc',
      issuer: i % 2 ? 'https://issuer-b.test' : 'https://issuer-a.test',
      rule: `rule-${i % 3}`,
      audience: `aud-${i % 5}`,
      actions: ['read'],
      resources: [`res://${i}`],
      purpose: 'load',
      task: `task-${i % 7}`,
      // Pairs share a created_at: ties are ordered by id.
      created_at: base - 20_000 + Math.floor(i / 2),
      expires_at: base + (short ? MIN : 60 * MIN),
      token_jti: `jti-${i}`,
      token_exp: base + MIN,
      kid: i % 4 ? 'kid-new' : 'kid-old',
      final: short ? 'expired' : i % 10 === 5 ? 'ended' : i % 10 === 7 ? 'revoked' : 'active',
    });
  }
  const opts = { now: base, maxActive: 100, retentionMs: 7 * 24 * 60 * MIN };
  // Pipelined: the store's client sends what one event-loop turn issues in one write.
  for (let i = 0; i < made.length; i += 1000) {
    await Promise.all(made.slice(i, i + 1000).map(({ final: _f, ...g }) => broker.store.createGrant(g, opts)));
  }
  const closing = made.filter((g) => g.final === 'ended' || g.final === 'revoked');
  for (let i = 0; i < closing.length; i += 500) {
    await Promise.all(
      closing.slice(i, i + 500).map((g) => broker.store.closeGrant(g.id, g.workload, { now: base + 1, status: g.final as 'ended' | 'revoked', by: g.final === 'ended' ? 'holder' : 'operator:root' })),
    );
  }
  // Two minutes on: the short grants have expired (nothing was written for it).
  offset = 2 * MIN;
}, 120_000);

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const newestFirst = (a: NewGrant, b: NewGrant) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1);

async function get(path: string): Promise<{ status: number; json: Record<string, any> }> {
  const res = await fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${auditor.credential}` } });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

/** Every page of a query: the ids in order, and the page sizes. */
async function walk(query: string, onPage?: (page: number) => Promise<void>): Promise<{ ids: string[]; pages: number[]; rows: Record<string, any>[] }> {
  const ids: string[] = [];
  const pages: number[] = [];
  const rows: Record<string, any>[] = [];
  let cursor: string | undefined;
  for (;;) {
    const res = await get(`/v1/grants?${query}${cursor ? `&cursor=${cursor}` : ''}`);
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    const grants = res.json.grants as Record<string, any>[];
    ids.push(...grants.map((g) => g.grant as string));
    rows.push(...grants);
    pages.push(grants.length);
    await onPage?.(pages.length);
    if (!res.json.cursor) return { ids, pages, rows };
    cursor = res.json.cursor as string;
    expect(pages.length).toBeLessThan(500);
  }
}

describe('GET /v1/grants over 10,000 grants of 1,000 workloads', () => {
  it('pages the global index newest first: every grant exactly once, stable while new grants arrive', async () => {
    const window = `since=${new Date(base - 30_000).toISOString()}`;
    // The global index is written in batches after the creates: wait until all of it is there.
    await expect.poll(async () => (await walk(`limit=1000&${window}`)).ids.length, { timeout: 20_000 }).toBe(GRANTS);
    const arriving: string[] = [];
    const { ids, pages } = await walk(`limit=500&${window}`, async (page) => {
      if (page !== 1 && page !== 7) return;
      // New grants (created now, as grants are) arrive between pages.
      for (let j = 0; j < 25; j++) {
        const workload = workloadOf(j * 37);
        const g = { ...made[0]!, id: newGrantId(workload), workload, created_at: clock(), expires_at: clock() + MIN, token_jti: `late-${page}-${j}` };
        const { final: _f, ...fresh } = g;
        await broker.store.createGrant(fresh, { now: clock(), maxActive: 100, retentionMs: 7 * 24 * 60 * MIN });
        arriving.push(g.id);
      }
    });
    expect(ids).toHaveLength(GRANTS);
    expect(new Set(ids).size).toBe(GRANTS);
    expect(ids).toEqual([...made].sort(newestFirst).map((g) => g.id));
    expect(pages).toEqual(Array(GRANTS / 500).fill(500));
    // A new walk lists them, first.
    await expect.poll(async () => (await get(`/v1/grants?limit=50`)).json.grants.filter((g: { grant: string }) => arriving.includes(g.grant)).length).toBe(50);
  });

  it('rows carry the grant, its evidence, intent, times as RFC 3339, status (expired derived), closer and key', async () => {
    const g = made.find((x) => x.final === 'revoked')!;
    const { json } = await get(`/v1/grants?workload=${encodeURIComponent(g.workload)}&status=revoked`);
    const row = (json.grants as Record<string, any>[]).find((r) => r.grant === g.id);
    expect(row).toEqual({
      grant: g.id,
      workload: g.workload,
      evidence: { kind: 'oidc', issuer: g.issuer },
      task: g.task,
      purpose: 'load',
      intent: { audience: g.audience, actions: ['read'], resources: g.resources },
      rule: g.rule,
      created_at: new Date(g.created_at).toISOString(),
      expires_at: new Date(base + 1).toISOString(),
      token_expires_at: new Date(base + 1).toISOString(),
      generation: 1,
      status: 'revoked',
      closed_by: 'operator:root',
      kid: g.kid,
    });
    const shown = await get(`/v1/grants/${g.id}`);
    expect(shown.json).toMatchObject({ grant: g.id, status: 'revoked' });
    expect((shown.json.events as { type: string }[]).map((e) => e.type)).toEqual(['grant.issued', 'grant.revoked']);
    const expired = made.find((x) => x.final === 'expired')!;
    expect((await get(`/v1/grants/${expired.id}`)).json.status).toBe('expired');
    expect((await get(`/v1/grants/g_AAAAAAAAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(404);
    expect((await get(`/v1/grants/nope`)).status).toBe(400);
  });

  it('applies filters while walking: exactly the matching grants, in order, partial pages allowed', async () => {
    const window = `since=${new Date(base - 30_000).toISOString()}&until=${new Date(base).toISOString()}`;
    const cases: [string, (g: (typeof made)[number]) => boolean][] = [
      ['audience=aud-2', (g) => g.audience === 'aud-2'],
      ['issuer=https%3A%2F%2Fissuer-b.test&rule=rule-1', (g) => g.issuer === 'https://issuer-b.test' && g.rule === 'rule-1'],
      ['task=task-3&status=active', (g) => g.task === 'task-3' && g.final === 'active'],
      ['status=expired', (g) => g.final === 'expired'],
      ['status=ended', (g) => g.final === 'ended'],
      ['kid=kid-old&audience=aud-0', (g) => g.kid === 'kid-old' && g.audience === 'aud-0'],
    ];
    for (const [query, pick] of cases) {
      const { ids, pages } = await walk(`limit=200&${window}&${query}`);
      expect(ids, query).toEqual(made.filter(pick).sort(newestFirst).map((g) => g.id));
      // At most 1,000 grants are examined per call: a rare match yields short pages, never a long call.
      expect(pages.length, query).toBeGreaterThanOrEqual(Math.ceil(GRANTS / 1000));
    }
    // since/until bound by created_at.
    const from = base - 20_000 + 100;
    const to = base - 20_000 + 199;
    const bounded = await walk(`limit=1000&since=${new Date(from).toISOString()}&until=${new Date(to).toISOString()}`);
    expect(bounded.ids).toEqual(made.filter((g) => g.created_at >= from && g.created_at <= to).sort(newestFirst).map((g) => g.id));
  });

  it("with workload=, walks that workload's own index", async () => {
    const w = workloadOf(123);
    const { ids, pages } = await walk(`limit=3&workload=${encodeURIComponent(w)}`);
    expect(ids).toEqual(made.filter((g) => g.workload === w).sort(newestFirst).map((g) => g.id));
    expect(pages.slice(0, -1).every((n) => n === 3)).toBe(true);
  });

  it('lists workloads with live grant counts, paged', async () => {
    const seen = new Map<string, number>();
    let cursor: string | undefined;
    for (let i = 0; i < 100; i++) {
      const { json, status } = await get(`/v1/workloads?limit=300${cursor ? `&cursor=${cursor}` : ''}`);
      expect(status).toBe(200);
      for (const w of json.workloads as { workload: string; live_grants: number; last_activity: string }[]) {
        expect(seen.has(w.workload)).toBe(false);
        seen.set(w.workload, w.live_grants);
        expect(Date.parse(w.last_activity)).toBeGreaterThan(0);
      }
      if (!json.cursor) break;
      cursor = json.cursor as string;
    }
    expect(seen.size).toBeGreaterThanOrEqual(WORKLOADS);
    const w = workloadOf(321);
    expect(seen.get(w)).toBe(made.filter((g) => g.workload === w && g.final === 'active').length);
  });

  it('refuses bad parameters with 400 invalid_request, never a 5xx', async () => {
    for (const q of ['limit=0', 'limit=1001', 'limit=x', 'status=gone', 'since=yesterday', 'cursor=%21%21', 'cursor=eyJ2IjoyfQ', 'color=red', `since=${new Date(base).toISOString()}&until=${new Date(base - 1).toISOString()}`, 'task=%00']) {
      const res = await get(`/v1/grants?${q}`);
      expect(res.status, q).toBe(400);
      expect(res.json.error).toBe('invalid_request');
    }
    expect((await get('/v1/workloads?limit=0')).status).toBe(400);
  });
});
