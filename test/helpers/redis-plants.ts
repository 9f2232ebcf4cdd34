import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { auditToFields, grantToRecord } from '../../src/grants/codec.js';
import { grantKeys, tagOfGrantId, workloadTag } from '../../src/grants/ids.js';
import type { RedisClient } from '../../src/grants/redis-connection.js';
import type { Grant, GrantStore } from '../../src/grants/store.js';
import { makeGrant, type GrantStoreContractOptions } from './grant-store-contract.js';

/**
 * The contract suite's plants for a Redis store (any topology), written with a raw client of
 * the test's (`connect` makes one; it is closed after each plant) under the store's key prefix.
 */
export function redisPlants(connect: () => RedisClient, prefix: string): Required<Pick<GrantStoreContractOptions, 'plantForeign' | 'plantUnreadable'>> {
  const withRaw = async (fn: (raw: RedisClient) => Promise<void>) => {
    const raw = connect();
    try {
      await fn(raw);
    } finally {
      await raw.quit();
    }
  };
  return {
    /**
     * What a workload whose tag collides with the victim's would leave in the victim's slot: a
     * live grant record (its id routes to the victim's slot), its index entries and its audit event.
     */
    plantForeign: (_store: GrantStore, victim: string, at: { now: number; task: string }) =>
      withRaw(async (raw) => {
        const tag = workloadTag(victim);
        const k = grantKeys(prefix, tag);
        const id = `g_${tag}_${randomBytes(16).toString('base64url')}`;
        const foreign = `${victim}#foreign`;
        const g: Grant = { ...makeGrant(foreign, at.now, { task: at.task }), id, status: 'active', generation: 1 };
        await raw
          .multi()
          .set(k.grant(id), grantToRecord(g))
          .zadd(k.live, g.expires_at, id)
          .zadd(k.all, g.created_at, id)
          .xadd(k.audit, '*', ...auditToFields({ type: 'grant.issued', at: at.now, workload: foreign, grant: id, task: g.task }))
          .exec();
      }),
    /** The record as a broker before issue 11 wrote it: a lone surrogate, escaped, that cjson cannot decode. */
    plantUnreadable: (_store: GrantStore, id: string) =>
      withRaw(async (raw) => {
        const key = grantKeys(prefix, tagOfGrantId(id)!).grant(id);
        const record = (await raw.get(key)) ?? '';
        const broken = record.replace('"ship release 1.2.3"', '"ship \\ud800release"');
        expect(broken).not.toBe(record);
        await raw.set(key, broken, 'KEEPTTL');
      }),
  };
}
