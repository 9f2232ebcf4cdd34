import { createHash, randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidRequest, LimitExceeded, UnreadableGrant } from '../../src/errors.js';
import { DuplicateGrantId, unmatchedPartition } from '../../src/grants/codec.js';
import { newGrantId } from '../../src/grants/ids.js';
import { comparePositions, parsePosition, type AuditLogPage, type LogEvent, type LogPosition } from '../../src/grants/audit-log.js';
import {
  NOT_DELIVERED_REASON,
  type AuditEvent,
  type Grant,
  type GrantStore,
  type IndexPosition,
  type NewGrant,
  type PublishedKey,
  type RateLimit,
  type RenewGrant,
  type WalkOptions,
  type WorkloadSummary,
} from '../../src/grants/store.js';

/**
 * A case only a store that can be put in that state runs (the memory store holds only validated
 * objects: it cannot hold a foreign or unreadable record). Not registered elsewhere, never skipped.
 */
const itWhere = (able: unknown): typeof it | ((name: string, fn: () => Promise<void>) => void) => (able ? it : () => undefined);
const describeWhere = (able: unknown): typeof describe | ((name: string, fn: () => void) => void) => (able ? describe : () => undefined);

/**
 * The one contract every GrantStore keeps (as every hono router runs common.case.test.ts).
 * Run by the Redis store (integration) and the memory store (unit).
 */
export interface GrantStoreContractOptions {
  /** Called after each test with the store (before it is closed). */
  afterEach?: (store: GrantStore) => Promise<void>;
  /**
   * Writes under `victim`'s keys (its slot) what a workload whose tag collides with the victim's
   * would: a live grant of task `task`, created at `now`, and its `grant.issued` event. Each
   * store does it the way it can; the tests that need it are skipped without it.
   */
  plantForeign?: (store: GrantStore, victim: string, at: { now: number; task: string }) => Promise<void>;
  /**
   * Makes the stored record of grant `id` (created through the store, purpose
   * 'ship release 1.2.3') one that is there but does not decode, as a broker before issue 11
   * wrote it with a lone surrogate. Stores that hold only validated objects cannot hold one
   * (memory): the tests that need it are skipped without it.
   */
  plantUnreadable?: (store: GrantStore, id: string) => Promise<void>;
}

const MIN = 60_000;
const HOUR = 60 * MIN;

/** A workload id no other test shares. */
export function uniqueWorkload(label = 'w'): string {
  return `spiffe://test.example/${label}/${randomBytes(6).toString('hex')}`;
}

export function makeGrant(workload: string, now: number, over: Partial<NewGrant> = {}): NewGrant {
  return {
    id: newGrantId(workload),
    workload,
    workload_kind: 'x509',
    issuer: 'spiffe://test.example',
    rule: 'deploy-rule',
    audience: 'https://api.example.com',
    actions: ['deploy', 'read'],
    resources: ['repo:acme/app', 'env:prod'],
    purpose: 'ship release 1.2.3',
    task: `task_${randomBytes(6).toString('hex')}`,
    created_at: now,
    expires_at: now + 10 * MIN,
    token_jti: `jti_${randomBytes(8).toString('hex')}`,
    token_exp: now + 5 * MIN,
    ...over,
  };
}

const opts = (now: number, maxActive = 10, retentionMs = 24 * HOUR) => ({ now, maxActive, retentionMs });
const ids = (gs: Grant[]) => gs.map((g) => g.id);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeGrantStoreContract(
  name: string,
  makeStore: () => Promise<GrantStore>,
  contractOpts: GrantStoreContractOptions = {},
): void {
  describe(`GrantStore contract: ${name}`, () => {
    let store: GrantStore;
    let t0: number;

    beforeEach(async () => {
      store = await makeStore();
      t0 = Date.now();
    });
    afterEach(async () => {
      await contractOpts.afterEach?.(store);
      await store.close();
    });

    describe('createGrant / getGrant', () => {
      it('round-trips every field, with status active and generation 1', async () => {
        const w = uniqueWorkload();
        const input = makeGrant(w, t0, {
          workload_kind: 'oidc',
          issuer: 'https://token.actions.githubusercontent.com',
          actions: ['a', 'b', 'c'],
          resources: [],
          purpose: 'quotes " \' and {braces} and unicode ✓',
          task: 'build:123/step-4.x',
          cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' },
        });
        const created = await store.createGrant(input, opts(t0));
        const expected: Grant = { ...input, status: 'active', generation: 1 };
        expect(created).toEqual(expected);
        expect(await store.getGrant(input.id)).toEqual(expected);

        const withJkt = makeGrant(w, t0, { cnf: { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I' } });
        await store.createGrant(withJkt, opts(t0));
        expect((await store.getGrant(withJkt.id))?.cnf).toEqual({ jkt: withJkt.cnf && 'jkt' in withJkt.cnf ? withJkt.cnf.jkt : '' });

        const unbound = makeGrant(w, t0);
        await store.createGrant(unbound, opts(t0));
        const got = await store.getGrant(unbound.id);
        expect(got).toEqual({ ...unbound, status: 'active', generation: 1 });
        expect(got && 'cnf' in got).toBe(false);
      });

      it('returns a copy: mutating the result does not change the stored grant', async () => {
        const input = makeGrant(uniqueWorkload(), t0);
        const created = await store.createGrant(input, opts(t0));
        created.actions.push('admin');
        const fetched = await store.getGrant(input.id);
        expect(fetched?.actions).toEqual(['deploy', 'read']);
        fetched?.actions.push('admin');
        expect((await store.getGrant(input.id))?.actions).toEqual(['deploy', 'read']);
      });

      it('refuses a duplicate grant id and keeps the first record', async () => {
        const w = uniqueWorkload();
        const first = makeGrant(w, t0);
        await store.createGrant(first, opts(t0));
        const again = { ...makeGrant(w, t0 + 1), id: first.id, purpose: 'overwrite attempt' };
        await expect(store.createGrant(again, opts(t0 + 1))).rejects.toBeInstanceOf(DuplicateGrantId);
        expect(await store.getGrant(first.id)).toEqual({ ...first, status: 'active', generation: 1 });
        const audit = await store.readAudit(w);
        expect(audit.map((e) => e.type)).toEqual(['grant.issued']);
        expect(await store.listWorkloadGrants(w, { now: t0 + 1 })).toHaveLength(1);
        expect(await store.listTaskGrants(w, again.task, { now: t0 + 1 })).toEqual([]);
      });

      it('refuses invalid input before writing anything', async () => {
        const w = uniqueWorkload();
        const other = uniqueWorkload('other');
        // A grant id carrying another workload's tag would land in another workload's slot.
        const wrongTag = makeGrant(w, t0, { id: newGrantId(other) });
        await expect(store.createGrant(wrongTag, opts(t0))).rejects.toBeInstanceOf(InvalidRequest);
        const expired = makeGrant(w, t0, { expires_at: t0 });
        await expect(store.createGrant(expired, opts(t0))).rejects.toBeInstanceOf(InvalidRequest);
        const badId = makeGrant(w, t0, { id: 'g_not_an_id' });
        await expect(store.createGrant(badId, opts(t0))).rejects.toBeInstanceOf(InvalidRequest);
        const noActive = makeGrant(w, t0);
        await expect(store.createGrant(noActive, opts(t0, 0))).rejects.toBeInstanceOf(InvalidRequest);
        await expect(store.createGrant(noActive, opts(t0, 1.5))).rejects.toBeInstanceOf(InvalidRequest);
        const control = makeGrant(w, t0, { audience: 'aud\r\nX-Evil: 1' });
        await expect(store.createGrant(control, opts(t0))).rejects.toBeInstanceOf(InvalidRequest);

        expect(await store.getGrant(wrongTag.id)).toBeNull();
        expect(await store.getGrant(expired.id)).toBeNull();
        expect(await store.getGrant(noActive.id)).toBeNull();
        expect(await store.listWorkloadGrants(w, { now: t0 })).toEqual([]);
        expect(await store.listWorkloadGrants(other, { now: t0 })).toEqual([]);
        expect(await store.readAudit(w)).toEqual([]);
      });

      it('refuses text that is not well-formed Unicode in any field, writing nothing (issue 11)', async () => {
        const w = uniqueWorkload();
        const lone = '\ud800';
        const bad: Partial<NewGrant>[] = [
          { issuer: `https://issuer${lone}` },
          { rule: `rule${lone}` },
          { audience: `aud${lone}` },
          { actions: ['read', `\udc00deploy`] },
          { resources: [`repo:${lone}`] },
          { purpose: `ship ${lone}` },
          { purpose: '\udc00\ud800' },
          { task: `task${lone}` },
          { token_jti: `jti${lone}` },
          { cnf: { 'x5t#S256': `x${lone}` } },
        ];
        for (const over of bad) await expect(store.createGrant(makeGrant(w, t0, over), opts(t0)), JSON.stringify(over)).rejects.toBeInstanceOf(InvalidRequest);
        const loneWorkload = `${w}${lone}`;
        await expect(store.createGrant(makeGrant(loneWorkload, t0), opts(t0))).rejects.toBeInstanceOf(InvalidRequest);
        expect(await store.listWorkloadGrants(w, { now: t0 })).toEqual([]);
        expect(await store.readAudit(w)).toEqual([]);

        // Audit events, close reasons and renewals likewise.
        for (const e of [{ reason: `r${lone}` }, { audience: `a${lone}` }, { actions: [`a${lone}`] }, { task: `t${lone}` }, { rule: `r${lone}` }])
          await expect(store.appendAudit({ type: 'grant.denied', at: t0, workload: w, ...e }, { retentionMs: HOUR })).rejects.toBeInstanceOf(InvalidRequest);
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        await expect(store.closeGrant(g.id, w, { now: t0 + 1, status: 'revoked', reason: `by ${lone}` })).rejects.toBeInstanceOf(InvalidRequest);
        const renewal = { id: g.id, workload: w, presentedJti: g.token_jti, jti: `jti${lone}`, tokenExp: t0 + MIN };
        await expect(store.renewGrant(renewal, { now: t0 + 1, retentionMs: HOUR })).rejects.toBeInstanceOf(InvalidRequest);
        expect(await store.getGrant(g.id)).toEqual({ ...g, status: 'active', generation: 1 });
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued']);
      });

      it('round-trips well-formed text of every kind: astral, bidi and combining marks, at the maximum lengths', async () => {
        const w = uniqueWorkload();
        const input = makeGrant(w, t0, {
          audience: `𝔸😀\u202e\u2067e\u0301${'𝔹'.repeat(508)}`, // 1024 UTF-16 units, the maximum
          purpose: '😀'.repeat(1024),
          rule: 'règle-\u200f',
          resources: ['\u{10FFFF}'.repeat(1024)],
          actions: ['e\u0301\u0327'],
        });
        await store.createGrant(input, opts(t0));
        const expected: Grant = { ...input, status: 'active', generation: 1 };
        expect(await store.getGrant(input.id)).toEqual(expected);
        expect(await store.listWorkloadGrants(w, { now: t0 })).toEqual([expected]);
        expect(await store.listTaskGrants(w, input.task, { now: t0 })).toEqual([expected]);
        const renewed = await store.renewGrant({ id: input.id, workload: w, presentedJti: input.token_jti, jti: 'jti-2', tokenExp: t0 + MIN }, { now: t0 + 1, retentionMs: HOUR });
        expect(renewed).toEqual({ outcome: 'renewed', grant: { ...expected, generation: 2, token_jti: 'jti-2', token_exp: t0 + MIN, prev_jti: input.token_jti, token_iat: t0 + 1 } });
        const closed = await store.closeGrant(input.id, w, { now: t0 + 2, status: 'ended' });
        expect(closed).toMatchObject({ outcome: 'closed', grant: { ...expected, generation: 2, token_jti: 'jti-2', token_exp: t0 + MIN, status: 'ended', expires_at: t0 + 2 } });
        expect((await store.readAudit(w))[0]).toMatchObject({ type: 'grant.issued', audience: input.audience, actions: input.actions, rule: input.rule });
      });

      it('names a grant g_<128-bit workload tag>_<128 random bits>, both base64url', async () => {
        const w = uniqueWorkload();
        const g = await store.createGrant(makeGrant(w, t0), opts(t0));
        expect(g.id).toMatch(/^g_[A-Za-z0-9_-]{22}_[A-Za-z0-9_-]{22}$/);
        const tag = createHash('sha256').update(w).digest().subarray(0, 16).toString('base64url');
        expect(g.id.slice(2, 24)).toBe(tag);
        // A shorter tag, or the former hex form, is no grant id.
        for (const id of [`g_${tag.slice(0, 12)}_${'A'.repeat(22)}`, `g_${createHash('sha256').update(w).digest('hex').slice(0, 32)}_${'0'.repeat(32)}`]) {
          const bad = makeGrant(w, t0, { id });
          await expect(store.createGrant(bad, opts(t0))).rejects.toBeInstanceOf(InvalidRequest);
          expect(await store.getGrant(bad.id)).toBeNull();
        }
      });

      it('answers null for malformed and unknown grant ids', async () => {
        const malformed = ['', 'nope', 'g_123', `g_${'z'.repeat(22)}_${'0'.repeat(21)}`, `g_${'A'.repeat(22)}_${'0'.repeat(21)}=`, `g_${'A'.repeat(22)}.${'0'.repeat(22)}`];
        for (const id of [...malformed, `${newGrantId('x')}x`, '../../etc']) {
          expect(await store.getGrant(id)).toBeNull();
        }
        expect(await store.getGrant(newGrantId(uniqueWorkload()))).toBeNull();
      });
    });

    describe('active-grant cap', () => {
      it('refuses beyond maxActive with LimitExceeded and writes nothing (the caller audits the denial, within its budget)', async () => {
        const w = uniqueWorkload();
        const a = makeGrant(w, t0, { expires_at: t0 + 1000 });
        const b = makeGrant(w, t0, { expires_at: t0 + 2000 });
        await store.createGrant(a, opts(t0, 2));
        await store.createGrant(b, opts(t0, 2));
        const c = makeGrant(w, t0 + 10);
        const err = await store.createGrant(c, opts(t0 + 10, 2)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(LimitExceeded);
        expect((err as LimitExceeded).status).toBe(429);
        // Retry-After: the earliest live grant ends in 990 ms → 1 s.
        expect((err as LimitExceeded).retryAfter).toBe(1);
        expect(await store.getGrant(c.id)).toBeNull();
        expect(await store.listTaskGrants(w, c.task, { now: t0 + 10 })).toEqual([]);
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued', 'grant.issued']);
      });

      it('does not count expired grants (expires_at <= now is dead)', async () => {
        const w = uniqueWorkload();
        await store.createGrant(makeGrant(w, t0, { expires_at: t0 + 1000 }), opts(t0, 2));
        await store.createGrant(makeGrant(w, t0, { expires_at: t0 + 5000 }), opts(t0, 2));
        await expect(store.createGrant(makeGrant(w, t0 + 999), opts(t0 + 999, 2))).rejects.toBeInstanceOf(LimitExceeded);
        // At exactly expires_at the first grant is no longer live.
        const next = makeGrant(w, t0 + 1000, { expires_at: t0 + 9000 });
        await expect(store.createGrant(next, opts(t0 + 1000, 2))).resolves.toMatchObject({ id: next.id });
        await expect(store.createGrant(makeGrant(w, t0 + 1001), opts(t0 + 1001, 2))).rejects.toBeInstanceOf(LimitExceeded);
        // Once everything has expired the full cap is available again.
        const later = t0 + 10_000;
        await store.createGrant(makeGrant(w, later), opts(later, 2));
        await store.createGrant(makeGrant(w, later), opts(later, 2));
        await expect(store.createGrant(makeGrant(w, later), opts(later, 2))).rejects.toBeInstanceOf(LimitExceeded);
      });

      it('enforces the cap exactly under 50 concurrent creates (maxActive 7)', async () => {
        const w = uniqueWorkload();
        const inputs = Array.from({ length: 50 }, () => makeGrant(w, t0));
        const results = await Promise.allSettled(inputs.map((g) => store.createGrant(g, opts(t0, 7))));
        const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
        expect(ok).toHaveLength(7);
        expect(failed).toHaveLength(43);
        for (const e of failed) expect(e).toBeInstanceOf(LimitExceeded);

        const live = await store.listWorkloadGrants(w, { now: t0, liveOnly: true });
        expect(live.map((g) => g.id).sort()).toEqual(ok.map((g) => g.id).sort());
        for (const [i, r] of results.entries()) {
          if (r.status === 'rejected') expect(await store.getGrant(inputs[i]!.id)).toBeNull();
        }
        const audit = await store.readAudit(w);
        expect(audit).toHaveLength(7);
        expect(audit.map((e) => e.grant).sort()).toEqual(ok.map((g) => g.id).sort());
      });

      it('keeps caps per workload', async () => {
        const a = uniqueWorkload('a');
        const b = uniqueWorkload('b');
        await store.createGrant(makeGrant(a, t0), opts(t0, 1));
        await expect(store.createGrant(makeGrant(b, t0), opts(t0, 1))).resolves.toBeTruthy();
        await expect(store.createGrant(makeGrant(a, t0), opts(t0, 1))).rejects.toBeInstanceOf(LimitExceeded);
        await expect(store.createGrant(makeGrant(b, t0), opts(t0, 1))).rejects.toBeInstanceOf(LimitExceeded);
        expect((await store.readAudit(a)).map((e) => e.type)).toEqual(['grant.issued']);
        expect((await store.readAudit(b)).map((e) => e.type)).toEqual(['grant.issued']);
      });
    });

    describe('listWorkloadGrants / listTaskGrants', () => {
      it('lists newest first, honours limit, task and liveOnly', async () => {
        const w = uniqueWorkload();
        const g1 = makeGrant(w, t0, { task: 'task-a', expires_at: t0 + 1000 });
        const g2 = makeGrant(w, t0 + 1, { task: 'task-b', expires_at: t0 + 10 * MIN });
        const g3 = makeGrant(w, t0 + 2, { task: 'task-a', expires_at: t0 + 10 * MIN });
        const g4 = makeGrant(w, t0 + 3, { task: 'task-a', expires_at: t0 + 10 * MIN });
        for (const g of [g1, g2, g3, g4]) await store.createGrant(g, opts(g.created_at));

        expect(ids(await store.listWorkloadGrants(w, { now: t0 + 3 }))).toEqual([g4.id, g3.id, g2.id, g1.id]);
        expect(ids(await store.listWorkloadGrants(w, { now: t0 + 3, limit: 2 }))).toEqual([g4.id, g3.id]);
        expect(ids(await store.listTaskGrants(w, 'task-a', { now: t0 + 3 }))).toEqual([g4.id, g3.id, g1.id]);
        expect(ids(await store.listTaskGrants(w, 'task-a', { now: t0 + 3, limit: 1 }))).toEqual([g4.id]);
        expect(ids(await store.listTaskGrants(w, 'task-b', { now: t0 + 3 }))).toEqual([g2.id]);
        expect(await store.listTaskGrants(w, 'task-none', { now: t0 + 3 })).toEqual([]);

        // After g1 expires it is still listed (audit) but not live.
        const later = t0 + 2000;
        expect(ids(await store.listWorkloadGrants(w, { now: later }))).toEqual([g4.id, g3.id, g2.id, g1.id]);
        expect(ids(await store.listWorkloadGrants(w, { now: later, liveOnly: true }))).toEqual([g4.id, g3.id, g2.id]);
        expect(ids(await store.listWorkloadGrants(w, { now: later, liveOnly: true, limit: 2 }))).toEqual([g4.id, g3.id]);
        expect(ids(await store.listTaskGrants(w, 'task-a', { now: later, liveOnly: true }))).toEqual([g4.id, g3.id]);
        expect(ids(await store.listTaskGrants(w, 'task-b', { now: later, liveOnly: true }))).toEqual([g2.id]);
        expect(await store.listWorkloadGrants(w, { now: t0 + 11 * MIN, liveOnly: true })).toEqual([]);

        const full = await store.listWorkloadGrants(w, { now: t0 + 3 });
        expect(full[0]).toEqual({ ...g4, status: 'active', generation: 1 });
        expect(await store.listWorkloadGrants(uniqueWorkload('nobody'), { now: t0 })).toEqual([]);
      });

      it('caps limit at 1000 and defaults to 100', async () => {
        const w = uniqueWorkload();
        const many = Array.from({ length: 105 }, (_, i) => makeGrant(w, t0 + i));
        await Promise.all(many.map((g) => store.createGrant(g, opts(g.created_at, 1000))));
        expect(await store.listWorkloadGrants(w, { now: t0 + 200 })).toHaveLength(100);
        expect(await store.listWorkloadGrants(w, { now: t0 + 200, limit: 5000 })).toHaveLength(105);
        expect(await store.listWorkloadGrants(w, { now: t0 + 200, limit: 0 })).toHaveLength(1);
      });

      it('prunes index entries created before now - retention', async () => {
        const w = uniqueWorkload();
        const retention = 10_000;
        const old = makeGrant(w, t0, { task: 'same', expires_at: t0 + 1000 });
        await store.createGrant(old, opts(t0, 10, retention));
        const fresh = makeGrant(w, t0 + 20_000, { task: 'same', expires_at: t0 + 30_000 });
        await store.createGrant(fresh, opts(t0 + 20_000, 10, retention));
        expect((await store.listWorkloadGrants(w, { now: t0 + 20_000 })).map((g) => g.id)).toEqual([fresh.id]);
        expect((await store.listTaskGrants(w, 'same', { now: t0 + 20_000 })).map((g) => g.id)).toEqual([fresh.id]);
      });

      it('skips grants whose records are gone, without them taking places in the page', async () => {
        const w = uniqueWorkload();
        const kept = makeGrant(w, t0, { task: 'same' });
        await store.createGrant(kept, opts(t0));
        // Newer, and its record lives 2 ms (retention 1 ms): its index entries outlive it.
        const gone = makeGrant(w, t0 + 1, { task: 'same', expires_at: t0 + 2 });
        await store.createGrant(gone, opts(t0 + 1, 10, 1));
        await sleep(50); // Redis expires in real time; the memory store at a later `now`
        const later = t0 + 100;
        // Twice: the first read meets the gone id (and prunes it), the second reads the pruned index.
        for (let pass = 0; pass < 2; pass++) {
          expect(ids(await store.listWorkloadGrants(w, { now: later, limit: 1 }))).toEqual([kept.id]);
          expect(ids(await store.listTaskGrants(w, 'same', { now: later, limit: 1 }))).toEqual([kept.id]);
          expect(ids(await store.listWorkloadGrants(w, { now: later, liveOnly: true }))).toEqual([kept.id]);
        }
        expect(await store.getGrant(gone.id)).toBeNull();
      });
    });

    describe('another workload under the same keys (a tag collision)', () => {
      itWhere(contractOpts.plantForeign)("is never listed, nor read back, as this workload's", async () => {
        const w = uniqueWorkload();
        const task = 'shared-task';
        const own = makeGrant(w, t0, { task });
        await store.createGrant(own, opts(t0));
        // Newer than ours: newest first, it would take the only place in a page of one.
        await contractOpts.plantForeign?.(store, w, { now: t0 + 1, task });
        const now = t0 + 2;
        expect(ids(await store.listWorkloadGrants(w, { now }))).toEqual([own.id]);
        expect(ids(await store.listWorkloadGrants(w, { now, limit: 1 }))).toEqual([own.id]);
        expect(ids(await store.listWorkloadGrants(w, { now, liveOnly: true }))).toEqual([own.id]);
        expect(ids(await store.listTaskGrants(w, task, { now }))).toEqual([own.id]);
        expect(ids(await store.listTaskGrants(w, task, { now, limit: 1 }))).toEqual([own.id]);
        expect(ids(await store.listTaskGrants(w, task, { now, liveOnly: true }))).toEqual([own.id]);
        const audit = await store.readAudit(w);
        expect(audit.map((e) => [e.type, e.workload, e.grant])).toEqual([['grant.issued', w, own.id]]);
      });
    });

    describe('event log (readAuditLog: every workload merged, or one workload or grant)', () => {
      const everything = { limit: 1_000_000, maxExamined: 1_000_000 };
      /** Events of these workloads, grants and kids only (other tests share the store). */
      const mine = (events: LogEvent[], ws: string[], kid?: string) =>
        events.filter((e) => ('workload' in e && ws.includes(e.workload)) || ('kid' in e && e.kid === kid) || ('operator' in e && e.type === 'operator.action' && e.selector === kid));

      it('merges lifecycle events, denials, key and operator events of many workloads in time order; pages give each once', async () => {
        const ws = Array.from({ length: 6 }, (_, i) => uniqueWorkload(`log${i}`));
        const kid = `kid-${randomBytes(4).toString('hex')}`;
        const grants: Grant[] = [];
        for (const [i, w] of ws.entries()) {
          const g = await store.createGrant(makeGrant(w, t0 + i), opts(t0 + i));
          grants.push(g);
          if (i % 2 === 0) await store.closeGrant(g.id, w, { now: t0 + i, status: i % 4 === 0 ? 'ended' : 'revoked', reason: 'by test' });
        }
        await store.appendAudit({ type: 'grant.denied', at: t0, workload: ws[1]!, reason: 'no' }, { retentionMs: HOUR });
        await store.appendKeyAudit({ type: 'key.published', at: t0, kid, alg: 'ES256', instance: 'test:1', retire_at: t0 + HOUR }, { retentionMs: HOUR });
        await store.appendOperatorAudit({ type: 'operator.action', at: t0, action: 'keys.list', operator: 'op', role: 'auditor', selector: kid }, { retentionMs: HOUR, read: true });
        await sleep(2); // past the settle horizon of an oldest-first read

        const desc = mine((await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', ...everything })).events, ws, kid);
        const asc = mine((await store.readAuditLog({ scope: { kind: 'global' }, order: 'asc', ...everything })).events, ws, kid);
        expect(asc.map((e) => e.id)).toEqual([...desc].reverse().map((e) => e.id));
        // Every grant once; each workload's events in the order they happened (across workloads,
        // Redis's clock orders them to the millisecond: see grants/audit-log.ts).
        expect(asc.filter((e) => e.type === 'grant.issued').map((e) => 'grant' in e && e.grant).sort()).toEqual(ids(grants).sort());
        for (const [i, w] of ws.entries()) {
          const types = asc.filter((e) => 'workload' in e && e.workload === w).map((e) => e.type);
          expect(types).toEqual(['grant.issued', ...(i % 2 === 0 ? [i % 4 === 0 ? 'grant.ended' : 'grant.revoked'] : []), ...(i === 1 ? ['grant.denied'] : [])]);
        }
        expect(asc.map((e) => e.type)).toEqual(expect.arrayContaining(['grant.ended', 'grant.revoked', 'grant.denied', 'key.published', 'operator.action']));
        expect(asc.find((e) => e.type === 'key.published')).toMatchObject({ kid, alg: 'ES256', instance: 'test:1', retire_at: t0 + HOUR });
        const sorted = [...asc].sort((a, b) => comparePositions(parsePosition(a.id)!, parsePosition(b.id)!));
        expect(sorted.map((e) => e.id)).toEqual(asc.map((e) => e.id));

        // Pages of 2, continuing after each page's last position: every event exactly once.
        for (const order of ['asc', 'desc'] as const) {
          const seen: LogEvent[] = [];
          let after: LogPosition | undefined;
          for (let i = 0; i < 10_000; i++) {
            const page: AuditLogPage = await store.readAuditLog({ scope: { kind: 'global' }, order, limit: 2, maxExamined: 1000, ...(after ? { after } : {}) });
            seen.push(...page.events);
            expect(page.events.length).toBeLessThanOrEqual(2);
            if (page.exhausted) break;
            after = page.last;
          }
          expect(mine(seen, ws, kid).map((e) => e.id)).toEqual((order === 'asc' ? asc : desc).map((e) => e.id));
          expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);
        }
      });

      it('filters by type, by workload (its own streams) and by grant, with bounded work per call', async () => {
        const [a, b] = [uniqueWorkload('la'), uniqueWorkload('lb')];
        const ga = await store.createGrant(makeGrant(a, t0), opts(t0));
        await store.createGrant(makeGrant(b, t0), opts(t0));
        await store.closeGrant(ga.id, a, { now: t0 + 1, status: 'ended' });
        await store.appendAudit({ type: 'grant.denied', at: t0, workload: a, reason: 'no' }, { retentionMs: HOUR });
        await sleep(2);
        const ofA = await store.readAuditLog({ scope: { kind: 'workload', workload: a }, order: 'asc', ...everything });
        expect(ofA.events.map((e) => e.type).sort()).toEqual(['grant.denied', 'grant.ended', 'grant.issued']);
        expect(ofA.exhausted).toBe(true);
        const ofGrant = await store.readAuditLog({ scope: { kind: 'grant', grant: ga.id }, order: 'asc', ...everything });
        expect(ofGrant.events.map((e) => e.type)).toEqual(['grant.issued', 'grant.ended']);
        const typed = await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', types: new Set(['grant.ended']), ...everything });
        expect(typed.events.every((e) => e.type === 'grant.ended')).toBe(true);
        expect(typed.events.some((e) => 'grant' in e && e.grant === ga.id)).toBe(true);
        // At most maxExamined entries per call: a short page, with where to continue.
        const bounded = await store.readAuditLog({ scope: { kind: 'workload', workload: a }, order: 'asc', limit: 10, maxExamined: 1 });
        expect(bounded.events.length).toBeLessThanOrEqual(1);
        expect(bounded.exhausted).toBe(false);
        expect(bounded.last).toBeDefined();
        expect(await store.readAuditLog({ scope: { kind: 'workload', workload: uniqueWorkload('none') }, order: 'desc', ...everything })).toMatchObject({ events: [] });
      });

      it('refuses an invalid key event', async () => {
        await expect(store.appendKeyAudit({ type: 'key.published', at: t0, kid: '' }, { retentionMs: HOUR })).rejects.toThrow();
      });
    });

    describe('audit', () => {
      it('round-trips appended events, oldest first, per workload', async () => {
        const w = uniqueWorkload();
        const other = uniqueWorkload('other');
        const full: AuditEvent = {
          type: 'grant.denied',
          at: t0,
          workload: w,
          grant: newGrantId(w),
          rule: 'r1',
          reason: 'no policy rule allows "this"',
          audience: 'https://aud.example',
          actions: ['x', 'y'],
          task: 't-1',
        };
        const minimal: AuditEvent = { type: 'grant.revoked', at: t0 + 5, workload: w };
        await store.appendAudit(full, { retentionMs: HOUR });
        await store.appendAudit(minimal, { retentionMs: HOUR });
        await store.appendAudit({ type: 'grant.ended', at: t0, workload: other }, { retentionMs: HOUR });

        const events = await store.readAudit(w);
        expect(events).toHaveLength(2);
        const [e1, e2] = events;
        expect(e1).toEqual({ ...full, id: e1?.id });
        expect(e2).toEqual({ ...minimal, id: e2?.id });
        expect(typeof e1?.id).toBe('string');
        expect(e1?.id).not.toBe(e2?.id);
        expect(await store.readAudit(w, { limit: 1 })).toEqual([e1]);
        expect((await store.readAudit(other)).map((e) => e.type)).toEqual(['grant.ended']);
        expect(await store.readAudit(uniqueWorkload('nobody'))).toEqual([]);
      });

      it('keeps denials of workloads no rule names in one shared stream, not a stream per workload', async () => {
        const before = await store.readUnmatchedAudit({ limit: 10_000 });
        const ids = [uniqueWorkload('stranger'), uniqueWorkload('stranger')];
        // Partitions merge by time: events of one millisecond in two partitions have no order.
        for (const [i, w] of ids.entries()) await store.appendAudit({ type: 'grant.denied', at: t0 + i, workload: w, reason: 'no rule' }, { retentionMs: HOUR, unmatched: true });
        for (const w of ids) expect(await store.readAudit(w)).toEqual([]);
        const after = await store.readUnmatchedAudit({ limit: 10_000 });
        expect(after.slice(-2).map((e) => e.workload)).toEqual(ids);
        expect(after.at(-1)).toMatchObject({ type: 'grant.denied', reason: 'no rule' });
        // The latest come back, however long the shared stream is.
        expect((await store.readUnmatchedAudit({ limit: 1 })).map((e) => e.workload)).toEqual([ids[1]]);
        expect(after.length).toBeGreaterThanOrEqual(Math.min(before.length + 2, 10_000));
      });

      it('keeps denials apart from lifecycle events: a flood of denials evicts none, and stays capped', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        await store.closeGrant(g.id, w, { now: t0 + 1, status: 'ended' });
        for (let i = 0; i < 1500; i += 100) {
          await Promise.all(
            Array.from({ length: 100 }, (_, j) => store.appendAudit({ type: 'grant.denied', at: t0 + 2 + i + j, workload: w, reason: `denied ${i + j}` }, { retentionMs: HOUR })),
          );
        }
        const events = await store.readAudit(w, { limit: 10_000 });
        expect(events.filter((e) => e.type !== 'grant.denied').map((e) => e.type)).toEqual(['grant.issued', 'grant.ended']);
        const denied = events.filter((e) => e.type === 'grant.denied');
        expect(denied.length).toBeGreaterThanOrEqual(1000);
        expect(denied.length).toBeLessThanOrEqual(1100);
        // Merged oldest first: the latest denial is the last event.
        expect(events.at(-1)).toMatchObject({ reason: 'denied 1499' });
      });

      it('clips the long fields of a denial to at most 2 KB', async () => {
        const w = uniqueWorkload();
        const long = (c: string, n: number) => c.repeat(n);
        await store.appendAudit(
          {
            type: 'grant.denied',
            at: t0,
            workload: w,
            rule: long('r', 256),
            reason: long('why ', 1024),
            audience: long('a', 1024),
            actions: Array.from({ length: 64 }, (_, i) => `${long('x', 250)}${i}`),
            task: long('t', 256),
          },
          { retentionMs: HOUR },
        );
        const [e] = await store.readAudit(w);
        expect(e).toMatchObject({ type: 'grant.denied', workload: w, reason: expect.stringMatching(/^why why/) });
        expect(JSON.stringify(e).length).toBeLessThanOrEqual(2048);
      });

      it("partitions denials of workloads no rule names by source: one source's flood leaves another's", async () => {
        const victim = uniqueWorkload('victim');
        await store.appendAudit({ type: 'grant.denied', at: t0, workload: victim, reason: 'no rule' }, { retentionMs: HOUR, unmatched: true, source: '192.0.2.1' });
        // A source whose partition differs from the victim's.
        const attacker = ['192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.5'].find((a) => unmatchedPartition(a) !== unmatchedPartition('192.0.2.1'))!;
        const flood = uniqueWorkload('flood');
        for (let i = 0; i < 1500; i += 100) {
          await Promise.all(
            Array.from({ length: 100 }, () => store.appendAudit({ type: 'grant.denied', at: t0, workload: flood, reason: 'no rule' }, { retentionMs: HOUR, unmatched: true, source: attacker })),
          );
        }
        const all = await store.readUnmatchedAudit({ limit: 10_000 });
        expect(all.some((e) => e.workload === victim)).toBe(true);
        const flooded = all.filter((e) => e.workload === flood).length;
        expect(flooded).toBeGreaterThanOrEqual(1000);
        expect(flooded).toBeLessThanOrEqual(1100);
      });

      it('voids a grant whose create reply never came: ends it if written, bars it if not', async () => {
        const w = uniqueWorkload();
        const written = makeGrant(w, t0);
        await store.createGrant(written, opts(t0, 1));
        expect(await store.voidGrant(written.id, w, { now: t0 + 5 })).toBe('ended');
        expect(await store.getGrant(written.id)).toMatchObject({ status: 'ended', expires_at: t0 + 5 });
        expect(await store.listWorkloadGrants(w, { now: t0 + 6, liveOnly: true })).toEqual([]);
        expect((await store.readAudit(w)).at(-1)).toMatchObject({ type: 'grant.ended', grant: written.id, reason: NOT_DELIVERED_REASON });
        // Its cap slot is free again, and a second void changes nothing.
        await store.createGrant(makeGrant(w, t0 + 6), opts(t0 + 6, 1));
        expect(await store.voidGrant(written.id, w, { now: t0 + 7 })).toBe('noop');

        // A grant whose lifetime already ran out keeps its own end when voided.
        const short = makeGrant(w, t0 + 7, { expires_at: t0 + 60_000 });
        await store.createGrant(short, opts(t0 + 7, 5));
        expect(await store.voidGrant(short.id, w, { now: t0 + 120_000 })).toBe('ended');
        expect(await store.getGrant(short.id)).toMatchObject({ status: 'ended', expires_at: t0 + 60_000 });

        // Voided before it arrived: a late create writes nothing at all.
        const late = makeGrant(w, t0 + 8);
        expect(await store.voidGrant(late.id, w, { now: t0 + 8 })).toBe('marked');
        const auditBefore = await store.readAudit(w);
        await expect(store.createGrant(late, opts(t0 + 9))).rejects.toMatchObject({ status: 503 });
        expect(await store.getGrant(late.id)).toBeNull();
        expect(await store.readAudit(w)).toEqual(auditBefore);
        await expect(store.voidGrant(late.id, uniqueWorkload('other'), { now: t0 })).rejects.toMatchObject({ status: 400 });
      });

      it('writes a grant.issued event with the grant', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        const [e, ...rest] = await store.readAudit(w);
        expect(rest).toEqual([]);
        expect(e).toEqual({
          id: e?.id,
          type: 'grant.issued',
          at: t0,
          workload: w,
          grant: g.id,
          rule: g.rule,
          audience: g.audience,
          actions: g.actions,
          task: g.task,
        });
      });

      it('refuses malformed events', async () => {
        const w = uniqueWorkload();
        const bad = [
          { type: 'grant.bogus', at: t0, workload: w },
          { type: 'grant.ended', at: -1, workload: w },
          { type: 'grant.ended', at: t0, workload: '' },
          { type: 'grant.ended', at: t0, workload: w, token: 'secret' },
        ] as unknown as AuditEvent[];
        for (const e of bad) await expect(store.appendAudit(e, { retentionMs: HOUR })).rejects.toBeInstanceOf(InvalidRequest);
        await expect(store.appendAudit({ type: 'grant.ended', at: t0, workload: w }, { retentionMs: 0 })).rejects.toBeInstanceOf(
          InvalidRequest,
        );
        expect(await store.readAudit(w)).toEqual([]);
      });
    });

    describe('renewGrant', () => {
      const renewal = (g: NewGrant, over: Partial<RenewGrant> = {}): RenewGrant => ({
        id: g.id,
        workload: g.workload,
        presentedJti: g.token_jti,
        jti: `jti_${randomBytes(8).toString('hex')}`,
        tokenExp: g.created_at + 6 * MIN,
        ...over,
      });
      const ropts = (now: number, rate?: RateLimit) => ({ now, retentionMs: 24 * HOUR, ...(rate ? { rate } : {}) });

      it('replaces the latest token: new jti and exp, generation + 1, a grant.renewed event', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        const r1 = renewal(g);
        const first = await store.renewGrant(r1, ropts(t0 + 1000));
        expect(first).toEqual({ outcome: 'renewed', grant: { ...g, status: 'active', generation: 2, token_jti: r1.jti, token_exp: r1.tokenExp, prev_jti: g.token_jti, token_iat: t0 + 1000 } });
        const r2 = renewal(g, { presentedJti: r1.jti, tokenExp: t0 + 7 * MIN });
        const second = await store.renewGrant(r2, ropts(t0 + 2000));
        expect(second.outcome).toBe('renewed');
        expect(await store.getGrant(g.id)).toMatchObject({ generation: 3, token_jti: r2.jti, token_exp: t0 + 7 * MIN, expires_at: g.expires_at });
        const audit = await store.readAudit(w);
        expect(audit.map((e) => [e.type, e.generation])).toEqual([
          ['grant.issued', undefined],
          ['grant.renewed', 2],
          ['grant.renewed', 3],
        ]);
        expect(audit[1]).toMatchObject({ at: t0 + 1000, workload: w, grant: g.id });
      });

      it('keeps the latest token\'s digest: written at creation, moved by a renewal, kept by a retry and a closing, dropped by a renewal without one', async () => {
        const w = uniqueWorkload();
        const digest = (c: string) => c.repeat(22);
        const g = makeGrant(w, t0, { token_digest: digest('a') });
        await store.createGrant(g, opts(t0));
        expect(await store.getGrant(g.id)).toMatchObject({ token_digest: digest('a') });
        const r1 = renewal(g, { tokenDigest: digest('b') });
        expect(await store.renewGrant(r1, ropts(t0 + 1000))).toMatchObject({ outcome: 'renewed', grant: { token_digest: digest('b') } });
        // A retry re-signs the latest token: its bytes differ, and the recorded digest stays.
        const retry = { ...renewal(g, { jti: r1.jti, tokenExp: r1.tokenExp, tokenDigest: digest('c') }), presentedJti: g.token_jti };
        expect(await store.renewGrant(retry, { ...ropts(t0 + 2000), retryWindowMs: 10_000 })).toMatchObject({ outcome: 'current', grant: { token_digest: digest('b') } });
        const r2 = renewal(g, { presentedJti: r1.jti });
        const renewed = await store.renewGrant(r2, ropts(t0 + 3000));
        expect(renewed.outcome).toBe('renewed');
        expect(renewed.outcome === 'renewed' && 'token_digest' in renewed.grant).toBe(false);
        await store.renewGrant(renewal(g, { presentedJti: r2.jti, tokenDigest: digest('d') }), ropts(t0 + 4000));
        await store.closeGrant(g.id, w, { now: t0 + 5000, status: 'ended' });
        expect(await store.getGrant(g.id)).toMatchObject({ status: 'ended', token_digest: digest('d') });
        // A malformed digest is refused before anything is written.
        await expect(store.createGrant(makeGrant(w, t0, { token_digest: 'short' }), opts(t0))).rejects.toMatchObject({ detail: expect.stringMatching(/token digest/) });
      });

      it('a superseded token revokes the grant at once and records grant.replay_detected', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0, 1));
        const r1 = renewal(g);
        await store.renewGrant(r1, ropts(t0 + 1000));
        // The old token (generation 1) comes back: two holders.
        const replay = await store.renewGrant(renewal(g), ropts(t0 + 2000));
        expect(replay).toMatchObject({ outcome: 'replay', grant: { status: 'revoked', expires_at: t0 + 2000, generation: 2, token_jti: r1.jti } });
        expect(await store.getGrant(g.id)).toMatchObject({ status: 'revoked', expires_at: t0 + 2000 });
        expect(await store.listWorkloadGrants(w, { now: t0 + 2001, liveOnly: true })).toEqual([]);
        expect((await store.readAudit(w)).at(-1)).toMatchObject({ type: 'grant.replay_detected', grant: g.id, generation: 2, at: t0 + 2000 });
        // The latest token is dead too, and its cap slot is free.
        expect(await store.renewGrant(renewal(g, { presentedJti: r1.jti }), ropts(t0 + 3000))).toMatchObject({ outcome: 'inactive' });
        await store.createGrant(makeGrant(w, t0 + 3000), opts(t0 + 3000, 1));
      });

      it('a renewal retried within the window with the superseded token: the latest token stands, nothing written', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        // One rate token: the renewal takes it, the retries take none.
        const rate = { burst: 1, intervalMs: HOUR };
        await store.createGrant(g, opts(t0));
        const r1 = renewal(g);
        const first = await store.renewGrant(r1, ropts(t0 + 1000, rate));
        expect(first.outcome).toBe('renewed');
        const retried = { ...r1, jti: r1.jti, tokenExp: r1.tokenExp };
        for (const now of [t0 + 1000, t0 + 5000, t0 + 11_000]) {
          const again = await store.renewGrant(retried, { ...ropts(now, rate), retryWindowMs: 10_000 });
          expect(again).toEqual({ outcome: 'current', grant: { ...g, status: 'active', generation: 2, token_jti: r1.jti, token_exp: r1.tokenExp, prev_jti: g.token_jti, token_iat: t0 + 1000 } });
        }
        // Re-signed by another key (rotated meanwhile): the record names it.
        const rekeyed = await store.renewGrant({ ...retried, kid: 'k-next' }, { ...ropts(t0 + 6000, rate), retryWindowMs: 10_000 });
        expect(rekeyed).toMatchObject({ outcome: 'current', grant: { kid: 'k-next', generation: 2, token_jti: r1.jti } });
        expect(await store.getGrant(g.id)).toMatchObject({ kid: 'k-next', generation: 2 });
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued', 'grant.renewed']);
        // Naming another token than the latest is no retry: a replay.
        const other = makeGrant(w, t0);
        await store.createGrant(other, opts(t0));
        const o1 = renewal(other);
        await store.renewGrant(o1, ropts(t0 + 1000));
        const wrong = await store.renewGrant({ ...o1, jti: 'jti-fresh' }, { ...ropts(t0 + 2000), retryWindowMs: 10_000 });
        expect(wrong).toMatchObject({ outcome: 'replay', grant: { status: 'revoked' } });
      });

      it('closing with the token the latest renewal superseded: closed within the retry window, a replay after it or when older', async () => {
        const w = uniqueWorkload();
        const cases = [
          { now: t0 + 5000, window: 10_000, behind: 1, outcome: 'closed', status: 'ended' },
          { now: t0 + 11_001, window: 10_000, behind: 1, outcome: 'replay', status: 'revoked' },
          { now: t0 + 5000, window: 0, behind: 1, outcome: 'replay', status: 'revoked' },
          { now: t0 + 5000, window: 10_000, behind: 2, outcome: 'replay', status: 'revoked' },
        ] as const;
        for (const c of cases) {
          const g = makeGrant(w, t0);
          await store.createGrant(g, opts(t0));
          const r1 = renewal(g);
          await store.renewGrant(r1, ropts(t0 + 500));
          if (c.behind === 2) await store.renewGrant(renewal(g, { presentedJti: r1.jti }), ropts(t0 + 1000));
          const closed = await store.closeGrant(g.id, w, { now: c.now, status: 'ended', presentedJti: g.token_jti, by: 'holder', retryWindowMs: c.window });
          expect(closed, JSON.stringify(c)).toMatchObject({ outcome: c.outcome, grant: { status: c.status } });
        }
      });

      it('a superseded token after the retry window, or without one, is a replay', async () => {
        const w = uniqueWorkload();
        for (const [now, window] of [[t0 + 11_001, 10_000], [t0 + 1001, 0]] as const) {
          const g = makeGrant(w, t0);
          await store.createGrant(g, opts(t0));
          const r1 = renewal(g);
          await store.renewGrant(r1, ropts(t0 + 1000));
          const late = await store.renewGrant(r1, { ...ropts(now), retryWindowMs: window });
          expect(late).toMatchObject({ outcome: 'replay', grant: { status: 'revoked', generation: 2 } });
        }
      });

      it('changes nothing for unknown, foreign, ended, revoked or expired grants', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0, { expires_at: t0 + MIN });
        await store.createGrant(g, opts(t0));
        expect(await store.renewGrant(renewal(makeGrant(w, t0)), ropts(t0))).toEqual({ outcome: 'unknown' });
        const other = uniqueWorkload('other');
        await expect(store.renewGrant({ ...renewal(g), workload: other }, ropts(t0))).rejects.toBeInstanceOf(InvalidRequest);
        const expired = await store.renewGrant(renewal(g), ropts(t0 + MIN));
        expect(expired).toMatchObject({ outcome: 'inactive', grant: { status: 'active', generation: 1, token_jti: g.token_jti } });
        const ended = makeGrant(w, t0);
        await store.createGrant(ended, opts(t0));
        await store.closeGrant(ended.id, w, { now: t0 + 1, status: 'ended' });
        expect(await store.renewGrant(renewal(ended), ropts(t0 + 2))).toMatchObject({ outcome: 'inactive', grant: { status: 'ended' } });
        // Not even a replay is recorded on a dead grant.
        expect(await store.renewGrant(renewal(ended, { presentedJti: 'old' }), ropts(t0 + 3))).toMatchObject({ outcome: 'inactive' });
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued', 'grant.issued', 'grant.ended']);
      });

      it('takes a token from the same per-workload bucket as issuance', async () => {
        const w = uniqueWorkload();
        const rate = { burst: 2, intervalMs: 10_000 };
        const g = makeGrant(w, t0);
        await store.createGrant(g, { ...opts(t0), rate });
        const r1 = renewal(g);
        expect((await store.renewGrant(r1, ropts(t0, rate))).outcome).toBe('renewed');
        const refused = store.renewGrant(renewal(g, { presentedJti: r1.jti }), ropts(t0 + 2500, rate));
        await expect(refused).rejects.toBeInstanceOf(LimitExceeded);
        await expect(refused).rejects.toMatchObject({ status: 429, retryAfter: 8 });
        // Refused renewals change nothing (the caller audits the denial); the bucket refills.
        expect(await store.getGrant(g.id)).toMatchObject({ generation: 2, token_jti: r1.jti });
        expect((await store.readAudit(w)).at(-1)).toMatchObject({ type: 'grant.renewed', grant: g.id, generation: 2 });
        expect((await store.renewGrant(renewal(g, { presentedJti: r1.jti }), ropts(t0 + 10_000, rate))).outcome).toBe('renewed');
      });
    });

    describe('closeGrant', () => {
      it('ends or revokes a live grant now, with its event; a second close changes nothing', async () => {
        const w = uniqueWorkload();
        const a = makeGrant(w, t0);
        const b = makeGrant(w, t0);
        await store.createGrant(a, opts(t0, 2));
        await store.createGrant(b, opts(t0, 2));
        const ended = await store.closeGrant(a.id, w, { now: t0 + 10, status: 'ended' });
        expect(ended).toEqual({ outcome: 'closed', grant: { ...a, status: 'ended', expires_at: t0 + 10, generation: 1 } });
        const revoked = await store.closeGrant(b.id, w, { now: t0 + 20, status: 'revoked', reason: 'RFC 7009 by rs-1' });
        expect(revoked).toMatchObject({ outcome: 'closed', grant: { status: 'revoked', expires_at: t0 + 20 } });
        expect(await store.closeGrant(b.id, w, { now: t0 + 30, status: 'ended' })).toMatchObject({ outcome: 'inactive', grant: { status: 'revoked', expires_at: t0 + 20 } });
        expect(await store.listWorkloadGrants(w, { now: t0 + 30, liveOnly: true })).toEqual([]);
        const audit = await store.readAudit(w);
        expect(audit.slice(2).map((e) => [e.type, e.grant, e.reason])).toEqual([
          ['grant.ended', a.id, undefined],
          ['grant.revoked', b.id, 'RFC 7009 by rs-1'],
        ]);
        // Both cap slots are free again.
        await store.createGrant(makeGrant(w, t0 + 40), opts(t0 + 40, 2));
        await store.createGrant(makeGrant(w, t0 + 40), opts(t0 + 40, 2));
      });

      it('a superseded token presented by its holder revokes the grant as a replay, as on renewal', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        const jti = 'jti-generation-2';
        await store.renewGrant({ id: g.id, workload: w, presentedJti: g.token_jti, jti, tokenExp: t0 + MIN }, { now: t0 + 1, retentionMs: HOUR });
        const replay = await store.closeGrant(g.id, w, { now: t0 + 2, status: 'ended', presentedJti: g.token_jti });
        expect(replay).toMatchObject({ outcome: 'replay', grant: { status: 'revoked', expires_at: t0 + 2 } });
        expect((await store.readAudit(w)).at(-1)).toMatchObject({ type: 'grant.replay_detected', grant: g.id, generation: 2 });
        // The latest token ends its grant as usual.
        const h = makeGrant(w, t0);
        await store.createGrant(h, opts(t0));
        expect(await store.closeGrant(h.id, w, { now: t0 + 3, status: 'ended', presentedJti: h.token_jti })).toMatchObject({ outcome: 'closed', grant: { status: 'ended' } });
      });

      it('answers unknown for a missing or foreign grant, and inactive past its end, writing nothing', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0, { expires_at: t0 + MIN });
        await store.createGrant(g, opts(t0));
        expect(await store.closeGrant(makeGrant(w, t0).id, w, { now: t0, status: 'revoked' })).toEqual({ outcome: 'unknown' });
        await expect(store.closeGrant(g.id, uniqueWorkload('x'), { now: t0, status: 'revoked' })).rejects.toBeInstanceOf(InvalidRequest);
        expect(await store.closeGrant(g.id, w, { now: t0 + MIN, status: 'revoked' })).toMatchObject({ outcome: 'inactive', grant: { status: 'active', expires_at: t0 + MIN } });
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued']);
      });
    });

    describeWhere(contractOpts.plantUnreadable)('a record that is there but does not decode', () => {
      it('is never "unknown": get, renew, close and void throw UnreadableGrant and change nothing; listings skip it', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0);
        const fine = makeGrant(w, t0);
        await store.createGrant(g, opts(t0));
        await store.createGrant(fine, opts(t0));
        await contractOpts.plantUnreadable?.(store, g.id);
        const events = await store.readAudit(w);

        await expect(store.getGrant(g.id)).rejects.toBeInstanceOf(UnreadableGrant);
        await expect(store.closeGrant(g.id, w, { now: t0 + 1, status: 'ended' })).rejects.toMatchObject({ status: 500, code: 'server_error', grantId: g.id });
        await expect(store.closeGrant(g.id, w, { now: t0 + 1, status: 'revoked', presentedJti: 'other' })).rejects.toBeInstanceOf(UnreadableGrant);
        await expect(store.voidGrant(g.id, w, { now: t0 + 1 })).rejects.toBeInstanceOf(UnreadableGrant);
        const renewal = { id: g.id, workload: w, presentedJti: g.token_jti, jti: 'jti-next', tokenExp: t0 + MIN };
        await expect(store.renewGrant(renewal, { now: t0 + 1, retentionMs: HOUR })).rejects.toBeInstanceOf(UnreadableGrant);

        // One bad record hides no other.
        const now = t0 + 2;
        expect(ids(await store.listWorkloadGrants(w, { now }))).toEqual([fine.id]);
        expect(ids(await store.listWorkloadGrants(w, { now, liveOnly: true }))).toEqual([fine.id]);
        expect(ids(await store.listTaskGrants(w, g.task, { now }))).toEqual([]);
        expect(await store.readAudit(w)).toEqual(events);
      });
    });

    describe('issuance rate', () => {
      it('refuses beyond the burst with Retry-After until a token is earned, writing nothing', async () => {
        const w = uniqueWorkload();
        const rate = { burst: 3, intervalMs: 2000 };
        for (let i = 0; i < 3; i++) await store.createGrant(makeGrant(w, t0), { ...opts(t0), rate });
        const refused = store.createGrant(makeGrant(w, t0 + 500), { ...opts(t0 + 500), rate });
        await expect(refused).rejects.toMatchObject({ status: 429, code: 'rate_limited', retryAfter: 2 });
        expect((await store.readAudit(w)).map((e) => e.type)).toEqual(['grant.issued', 'grant.issued', 'grant.issued']);
        expect(await store.listWorkloadGrants(w, { now: t0 + 500 })).toHaveLength(3);
        await store.createGrant(makeGrant(w, t0 + 2000), { ...opts(t0 + 2000), rate });
        await expect(store.createGrant(makeGrant(w, t0 + 2000), { ...opts(t0 + 2000), rate })).rejects.toBeInstanceOf(LimitExceeded);
        // Buckets are per workload, and a cap refusal spends no token.
        const v = uniqueWorkload();
        await store.createGrant(makeGrant(v, t0), { ...opts(t0, 1), rate });
        await expect(store.createGrant(makeGrant(v, t0), { ...opts(t0, 1), rate })).rejects.toMatchObject({ code: 'rate_limited', description: expect.stringContaining('active grants') });
        await store.createGrant(makeGrant(v, t0), { ...opts(t0, 3), rate });
        await store.createGrant(makeGrant(v, t0), { ...opts(t0, 3), rate });
        await expect(store.createGrant(makeGrant(v, t0), { ...opts(t0, 10), rate })).rejects.toMatchObject({ description: expect.stringContaining('too many tokens') });
      });

      it('holds exactly under 100 concurrent creates (burst 17)', async () => {
        const w = uniqueWorkload();
        const rate = { burst: 17, intervalMs: 3_600_000 };
        const results = await Promise.allSettled(Array.from({ length: 100 }, () => store.createGrant(makeGrant(w, t0), { ...opts(t0, 1000), rate })));
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(17);
        const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(refused).toHaveLength(83);
        for (const r of refused) expect(r.reason).toBeInstanceOf(LimitExceeded);
        const audit = await store.readAudit(w);
        expect(audit.filter((e) => e.type === 'grant.issued')).toHaveLength(17);
        expect(audit.filter((e) => e.type === 'grant.denied')).toHaveLength(0);
      });
    });

    describe('published keys', () => {
      const key = (kid: string, now: number, over: Partial<PublishedKey> = {}): PublishedKey => ({
        kid,
        jwk: { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', kid, alg: 'ES256', use: 'sig' },
        created_at: now,
        retire_at: now + HOUR,
        expires_at: now + 2 * HOUR,
        ...over,
      });
      const kids = (ks: PublishedKey[], mine: string[]) => ks.map((k) => k.kid).filter((k) => mine.includes(k)).sort();

      it('publishes, overwrites by kid, and prunes expired keys', async () => {
        const sfx = randomBytes(4).toString('hex');
        const k1 = key(`k1-${sfx}`, t0, { expires_at: t0 + 1000 });
        const k2 = key(`k2-${sfx}`, t0);
        const mine = [k1.kid, k2.kid];
        await store.publishKey(k1);
        await store.publishKey(k2);
        const now = await store.publishedKeys(t0);
        expect(kids(now, mine)).toEqual(mine.sort());
        expect(now.find((k) => k.kid === k2.kid)).toEqual(k2);

        // Re-publishing a kid replaces it (e.g. an earlier retire time).
        const k2b = { ...k2, retire_at: t0 + 10, expires_at: t0 + HOUR };
        await store.publishKey(k2b);
        expect((await store.publishedKeys(t0)).find((k) => k.kid === k2.kid)).toEqual(k2b);

        expect(kids(await store.publishedKeys(t0 + 1000), mine)).toEqual([k2.kid]);
        // Pruned, not merely filtered: an earlier clock does not bring it back.
        expect(kids(await store.publishedKeys(t0), mine)).toEqual([k2.kid]);
      });

      it('refuses private or malformed JWKs', async () => {
        const sfx = randomBytes(4).toString('hex');
        const withD = key(`priv-${sfx}`, t0);
        withD.jwk = { ...withD.jwk, d: 'jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI' };
        const symmetric = key(`oct-${sfx}`, t0, { jwk: { kty: 'oct', k: 'c2VjcmV0' } });
        const noKty = key(`nokty-${sfx}`, t0, { jwk: { x: 'y' } });
        for (const k of [withD, symmetric, noKty]) await expect(store.publishKey(k)).rejects.toBeInstanceOf(InvalidRequest);
        expect(kids(await store.publishedKeys(t0), [withD.kid, symmetric.kid, noKty.kid])).toEqual([]);
      });
    });

    describe('operator queries (issue 13)', () => {
      /** A window of created_at times no other test uses (stores may be shared under one prefix). */
      const window = () => t0 + 2 * HOUR + Math.floor(Math.random() * HOUR);
      const walkAll = async (o: Omit<WalkOptions, 'want' | 'maxExamined' | 'now' | 'retentionMs'>, want: number, maxExamined = 1000) => {
        const seen: string[] = [];
        let after: IndexPosition | undefined;
        for (let calls = 0; calls < 1000; calls++) {
          const r = await store.walkGrants({ now: t0, retentionMs: 24 * HOUR, ...o, ...(after ? { after } : {}), want, maxExamined });
          seen.push(...ids(r.grants));
          if (!r.next) return { seen, calls: calls + 1 };
          after = r.next;
        }
        throw new Error('walk did not end');
      };

      it('records the signing key of the latest token and who closed the grant; old records decode without them', async () => {
        const w = uniqueWorkload();
        const g = makeGrant(w, t0, { kid: 'kid-one' });
        await store.createGrant(g, opts(t0));
        expect(await store.getGrant(g.id)).toMatchObject({ kid: 'kid-one' });
        const renewed = await store.renewGrant({ id: g.id, workload: w, presentedJti: g.token_jti, jti: 'jti-two', tokenExp: t0 + 6 * MIN, kid: 'kid-two' }, { now: t0 + 1, retentionMs: 24 * HOUR });
        expect(renewed).toMatchObject({ outcome: 'renewed', grant: { kid: 'kid-two', generation: 2 } });
        const closed = await store.closeGrant(g.id, w, { now: t0 + 2, status: 'revoked', reason: 'revoked by operator root: incident', by: 'operator:root', operator: 'root' });
        expect(closed).toMatchObject({ outcome: 'closed', grant: { status: 'revoked', closed_by: 'operator:root', kid: 'kid-two' } });
        expect(await store.getGrant(g.id)).toMatchObject({ closed_by: 'operator:root' });
        const events = await store.readGrantEvents(g);
        expect(events.map((e) => e.type)).toEqual(['grant.issued', 'grant.renewed', 'grant.revoked']);
        expect(events[2]).toMatchObject({ operator: 'root', reason: 'revoked by operator root: incident', grant: g.id });
        // Another grant's events are not this one's.
        const other = makeGrant(w, t0 + 3);
        await store.createGrant(other, opts(t0 + 3));
        expect((await store.readGrantEvents(other)).map((e) => e.type)).toEqual(['grant.issued']);
      });

      it("walks one workload's grants newest first: every grant exactly once across pages, filters applied, bounded per call", async () => {
        const w = uniqueWorkload();
        const base = t0;
        const made: NewGrant[] = [];
        for (let i = 0; i < 25; i++) {
          // Three grants share each created_at: ties are ordered by id and never repeat or vanish.
          const g = makeGrant(w, base, { created_at: base - Math.floor(i / 3), task: i % 2 ? 'odd' : 'even' });
          await store.createGrant(g, opts(base, 100));
          made.push(g);
        }
        const expected = [...made].sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1)).map((g) => g.id);
        for (const want of [1, 4, 7, 25, 100]) expect((await walkAll({ workload: w }, want)).seen, `want ${want}`).toEqual(expected);
        const odd = await walkAll({ workload: w, match: (g) => g.task === 'odd' }, 5);
        expect(odd.seen).toEqual(expected.filter((id) => made.find((g) => g.id === id)!.task === 'odd'));
        // At most maxExamined entries per call: a filter that matches nothing still ends, in bounded steps.
        const none = await walkAll({ workload: w, match: () => false }, 10, 4);
        expect(none).toEqual({ seen: [], calls: 7 });
        // since / until bound the walk by created_at.
        expect((await walkAll({ workload: w, since: base - 2, until: base - 1 }, 100)).seen).toEqual(expected.slice(3, 9));
      });

      it('walks the global index across workloads newest first; grants created during the walk do not disturb it', async () => {
        const base = window();
        const within = { since: base - 1000, until: base + 10_000 };
        const workloads = Array.from({ length: 6 }, () => uniqueWorkload('gi'));
        const made: NewGrant[] = [];
        for (let i = 0; i < 40; i++) {
          const g = makeGrant(workloads[i % workloads.length]!, t0, { created_at: base - Math.floor(i / 2) });
          await store.createGrant(g, opts(t0, 100));
          made.push(g);
        }
        const expected = [...made].sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1)).map((g) => g.id);
        await expect.poll(async () => (await walkAll(within, 1000)).seen.length).toBe(40);
        expect((await walkAll(within, 1000)).seen).toEqual(expected);
        // A walk in pages of 7; after the first page, more grants arrive (newer, as grants do).
        const seen: string[] = [];
        let after: IndexPosition | undefined;
        for (let page = 0; ; page++) {
          const r = await store.walkGrants({ now: t0, retentionMs: 24 * HOUR, ...within, ...(after ? { after } : {}), want: 7, maxExamined: 1000 });
          seen.push(...ids(r.grants));
          if (page === 0) for (let j = 0; j < 5; j++) await store.createGrant(makeGrant(workloads[j]!, t0, { created_at: base + 100 + j }), opts(t0, 100));
          if (!r.next) break;
          after = r.next;
        }
        expect(seen).toEqual(expected);
        // A new walk sees them first.
        await expect.poll(async () => (await walkAll(within, 1000)).seen.length).toBe(45);
        // The filter runs on the records: one workload's grants, from the global index.
        const one = workloads[2]!;
        expect((await walkAll({ ...within, until: base, match: (g) => g.workload === one }, 3)).seen).toEqual(expected.filter((id) => made.find((g) => g.id === id)!.workload === one));
      });

      it('lists workloads with their live grant counts, paged', async () => {
        const a = uniqueWorkload('wl');
        const b = uniqueWorkload('wl');
        for (const [w, n] of [
          [a, 3],
          [b, 1],
        ] as const) {
          for (let i = 0; i < n; i++) await store.createGrant(makeGrant(w, t0), opts(t0));
        }
        const endMe = makeGrant(a, t0);
        await store.createGrant(endMe, opts(t0));
        await store.closeGrant(endMe.id, a, { now: t0 + 1, status: 'ended', by: 'holder' });
        const found = new Map<string, WorkloadSummary>();
        let after: IndexPosition | undefined;
        await expect
          .poll(async () => {
            found.clear();
            after = undefined;
            for (let i = 0; i < 1000; i++) {
              const page = await store.listWorkloads({ now: t0 + 2, retentionMs: 24 * HOUR, limit: 1, ...(after ? { after } : {}) });
              for (const s of page.workloads) found.set(s.id, s);
              if (!page.next) break;
              after = page.next;
            }
            return [found.get(a)?.live, found.get(b)?.live];
          })
          .toEqual([3, 1]);
        expect(found.get(a)!.last_activity).toBeGreaterThanOrEqual(found.get(a)!.last_seen);
      });

      it('counts live grants (the metrics gauge): created ones count, ended ones not; a bound on workloads gives at most the full count', async () => {
        const count = (maxWorkloads = 10_000) => store.countLiveGrants({ now: t0 + 2, maxLifetimeMs: HOUR, maxWorkloads });
        const before = (await count()).count;
        const a = uniqueWorkload('live');
        const b = uniqueWorkload('live');
        const made = [makeGrant(a, t0), makeGrant(a, t0), makeGrant(b, t0)];
        for (const g of made) await store.createGrant(g, opts(t0));
        await store.closeGrant(made[0]!.id, a, { now: t0 + 1, status: 'ended', by: 'holder' });
        // The workloads index is written beside the grant, best effort: poll until it is there.
        await expect.poll(async () => (await count()).count - before).toBe(2);
        const full = await count();
        expect(full.complete).toBe(true);
        const bounded = await count(1);
        expect(bounded.count).toBeLessThanOrEqual(full.count);
        if (bounded.complete) expect(bounded.count).toBe(full.count);
      });

      it('keeps authenticated key revocation marks and leaves revoked keys out of the published ones', async () => {
        const kid = `revoked-${randomBytes(4).toString('hex')}`;
        const jwk = { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', kid, alg: 'ES256' };
        await store.publishKey({ kid, jwk, created_at: t0, retire_at: t0 + HOUR, expires_at: t0 + 2 * HOUR });
        expect((await store.publishedKeys(t0)).some((k) => k.kid === kid)).toBe(true);
        await store.revokeKey({ kid, revoked_at: t0, by: 'root', until: t0 + 3 * HOUR });
        expect((await store.revokedKeys(t0)).find((m) => m.kid === kid)).toEqual({ kid, revoked_at: t0, by: 'root', until: t0 + 3 * HOUR });
        expect((await store.publishedKeys(t0)).some((k) => k.kid === kid)).toBe(false);
      });

      it("records operators' actions: changes and reads, each naming the operator", async () => {
        const name = `op-${randomBytes(3).toString('hex')}`;
        await store.appendOperatorAudit({ type: 'operator.action', at: t0, action: 'grants.revoke', operator: name, role: 'admin', reason: 'incident 7', selector: '{"task":"t"}', count: 3, done: true }, { retentionMs: HOUR });
        await store.appendOperatorAudit({ type: 'operator.action', at: t0 + 1, action: 'grants.query', operator: name, role: 'auditor', count: 10 }, { retentionMs: HOUR, read: true });
        const mine = (await store.readOperatorAudit()).filter((e) => e.operator === name);
        expect(mine.map((e) => [e.action, e.role])).toEqual([
          ['grants.revoke', 'admin'],
          ['grants.query', 'auditor'],
        ]);
        expect(mine[0]).toMatchObject({ reason: 'incident 7', selector: '{"task":"t"}', count: 3, done: true });
      });
    });

    it('useProofJti: a DPoP proof is used once per workload and key, until it stops being acceptable', async () => {
      const w = uniqueWorkload();
      const proof = { jkt: '0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I', jti: `jti-${t0}-${Math.random()}` };
      const window = { now: t0, until: t0 + 60_000 };
      expect(await store.useProofJti(w, proof, window)).toBe(true);
      expect(await store.useProofJti(w, proof, { ...window, now: t0 + 1 })).toBe(false);
      expect(await store.useProofJti(uniqueWorkload(), proof, window)).toBe(true);
      expect(await store.useProofJti(w, { ...proof, jkt: 'another-key-thumbprint' }, window)).toBe(true);
    });

    it('useOnce: true the first time, false while remembered, true again once forgotten', async () => {
      const key = `client_assertion:${randomBytes(8).toString('hex')}`;
      expect(await store.useOnce(key, { now: t0, ttlMs: 200 })).toBe(true);
      expect(await store.useOnce(key, { now: t0 + 1, ttlMs: 200 })).toBe(false);
      expect(await store.useOnce(`${key}-other`, { now: t0 + 1, ttlMs: 200 })).toBe(true);
      // Redis forgets by its own clock (PX), the memory store by the caller's `now`.
      await sleep(250);
      expect(await store.useOnce(key, { now: t0 + 250, ttlMs: 200 })).toBe(true);
    });

    it('ping resolves on a healthy store', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
