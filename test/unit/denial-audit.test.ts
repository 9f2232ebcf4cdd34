/**
 * The denial audit's budget and summaries, on the memory grant store (the same contract as the
 * Redis store): per address and per workload, one summary per stream and window past the
 * budget, and bounded state however many callers there are.
 */
import { describe, expect, it } from 'vitest';
import { createMemoryGrantStore } from '../../src/grants/memory-store.js';
import { DenialAudit } from '../../src/grants/denial-audit.js';
import type { AuditEvent } from '../../src/grants/store.js';
import { silentLogger } from '../../src/log.js';
import { DenialBudget } from '../../src/limits/denial-budget.js';

const MIN = 60_000;
const rate = (burst: number) => ({ burst, intervalMs: MIN });

function setup(o: { perAddress?: number; perWorkload?: number; maxTracked?: number } = {}) {
  const store = createMemoryGrantStore();
  let now = 1_800_000_000_000;
  const audit = new DenialAudit({
    store,
    clock: () => now,
    log: silentLogger,
    retentionMs: 60 * MIN,
    budget: { perAddress: rate(o.perAddress ?? 3), perWorkload: rate(o.perWorkload ?? 5), maxTracked: o.maxTracked ?? 100 },
  });
  const denial = (workload: string): AuditEvent => ({ type: 'grant.denied', at: now, workload, reason: 'no' });
  return { store, audit, denial, advance: (ms: number) => (now += ms) };
}

describe('DenialBudget', () => {
  it('admits while both the address and the workload have tokens, and takes from both', () => {
    const budget = new DenialBudget({ perAddress: rate(2), perWorkload: rate(3), maxTracked: 10 });
    expect([budget.admit('a', 'w', 0), budget.admit('a', 'w', 0), budget.admit('a', 'w', 0)]).toEqual([true, true, false]);
    expect(budget.admit('b', 'w', 0)).toBe(true); // the workload's third
    expect(budget.admit('c', 'w', 0)).toBe(false);
    expect(budget.admit('c', 'v', 0)).toBe(true);
    // Refills at its rate: one a minute.
    expect(budget.admit('a', 'v', MIN)).toBe(true);
  });

  it('forgets the least recently denied beyond maxTracked (its state is bounded)', () => {
    const budget = new DenialBudget({ perAddress: rate(1), perWorkload: rate(1000), maxTracked: 2 });
    expect(budget.admit('a', 'w', 0)).toBe(true);
    expect(budget.admit('a', 'w', 0)).toBe(false);
    budget.admit('b', 'w', 0);
    budget.admit('c', 'w', 0);
    expect(budget.admit('a', 'w', 0)).toBe(true); // forgotten: a fresh bucket
  });
});

describe('DenialAudit', () => {
  it('writes denials within the budget, then one summary per window carrying the count', async () => {
    const { store, audit, denial, advance } = setup();
    const w = 'spiffe://td/denied';
    for (let i = 0; i < 10; i++) await audit.record(denial(w), { source: '192.0.2.1', unmatched: false });
    expect(await store.readAudit(w)).toHaveLength(3);
    advance(MIN);
    await audit.record(denial(w), { source: '192.0.2.1', unmatched: false });
    const events = await store.readAudit(w);
    expect(events).toHaveLength(5);
    expect(events[3]).toMatchObject({ workload: w, count: 7, reason: expect.stringContaining('7 denials of this workload') });
    audit.close();
  });

  it('summarises the denials of workloads no rule names per partition, into that partition', async () => {
    const { store, audit, denial, advance } = setup({ perAddress: 1 });
    for (let i = 0; i < 5; i++) await audit.record(denial(`spiffe://td/stranger/${i}`), { source: '198.51.100.1', unmatched: true });
    advance(MIN);
    await audit.record(denial('spiffe://td/stranger/last'), { source: '198.51.100.1', unmatched: true });
    const shared = await store.readUnmatchedAudit();
    const summary = shared.find((e) => e.count !== undefined);
    expect(summary).toMatchObject({ count: 4, workload: 'spiffe://td/stranger/4' });
    expect(shared.map((e) => e.workload)).toEqual(['spiffe://td/stranger/0', 'spiffe://td/stranger/4', 'spiffe://td/stranger/last']);
    audit.close();
  });

  it('keeps at most maxTracked tallies: beyond, one summary counts the denials of many workloads', async () => {
    const { store, audit, denial, advance } = setup({ perAddress: 0.5, maxTracked: 3 });
    // perAddress 0.5: never a whole token, so every denial is counted, none written.
    for (let i = 0; i < 20; i++) await audit.record(denial(`spiffe://td/w/${i}`), { source: `203.0.113.${i}`, unmatched: false });
    advance(MIN);
    await audit.record(denial('spiffe://td/w/0'), { source: '203.0.113.0', unmatched: false });
    const many = (await store.readUnmatchedAudit()).filter((e) => e.workload === '*');
    expect(many).toEqual([expect.objectContaining({ count: 17, reason: expect.stringContaining('of many workloads') })]);
    expect((await store.readAudit('spiffe://td/w/1')).map((e) => e.count)).toEqual([1]);
    audit.close();
  });
});
