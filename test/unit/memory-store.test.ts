import { describe, expect, it } from 'vitest';
import { Unavailable } from '../../src/errors.js';
import { workloadTag } from '../../src/grants/ids.js';
import { createMemoryGrantStore } from '../../src/grants/memory-store.js';
import { silentLogger } from '../../src/log.js';
import { describeGrantStoreContract, makeGrant, uniqueWorkload } from '../helpers/grant-store-contract.js';

/** `<id>#foreign` shares `<id>`'s slot, as a workload whose tag collides with `<id>`'s would. */
const FOREIGN = '#foreign';
const collidingTag = (id: string) => workloadTag(id.endsWith(FOREIGN) ? id.slice(0, -FOREIGN.length) : id);

describeGrantStoreContract('memory', async () => createMemoryGrantStore({ log: silentLogger, workloadTag: collidingTag }), {
  // Through the store itself: the colliding workload's grant and event land in the victim's slot.
  async plantForeign(store, victim, { now, task }) {
    await store.createGrant(makeGrant(`${victim}${FOREIGN}`, now, { task }), { now, maxActive: 10, retentionMs: 60 * 60_000 });
  },
});

describe('memory grant store', () => {
  it('expires records lazily once a later now passes expires_at + retention', async () => {
    const store = createMemoryGrantStore();
    const w = uniqueWorkload();
    const t0 = 1_000_000;
    const g = makeGrant(w, t0, { expires_at: t0 + 1000 });
    await store.createGrant(g, { now: t0, maxActive: 5, retentionMs: 5000 });
    expect(await store.getGrant(g.id)).not.toBeNull();
    // Another call's clock moves past the record's deadline (t0 + 6000).
    await store.listWorkloadGrants(uniqueWorkload('other'), { now: t0 + 5999 });
    expect(await store.getGrant(g.id)).not.toBeNull();
    await store.listWorkloadGrants(uniqueWorkload('other'), { now: t0 + 6000 });
    expect(await store.getGrant(g.id)).toBeNull();
    expect(await store.listWorkloadGrants(w, { now: t0 + 6000 })).toEqual([]);
    expect(await store.readAudit(w)).toEqual([]);
  });

  it('is unavailable once closed', async () => {
    const store = createMemoryGrantStore();
    await store.close();
    await expect(store.ping()).rejects.toBeInstanceOf(Unavailable);
    await expect(store.getGrant('nope')).rejects.toBeInstanceOf(Unavailable);
  });
});
