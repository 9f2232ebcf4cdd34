/**
 * The Redis grant store on a real Sentinel group (test/helpers/redis-sentinel.ts: one primary,
 * two replicas, three sentinels): the whole store contract suite, logged in as the shipped ACL's
 * jit-broker user on the data nodes (key pattern moved to the test prefix) and as a user with
 * only the sentinel rights deploy/redis/README.md lists on the sentinels; nothing refused on any.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisConnectionSpec } from '../../src/grants/redis-connection.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { silentLogger } from '../../src/log.js';
import { brokerAclRules } from '../helpers/broker-acl.js';
import { describeGrantStoreContract, makeGrant, uniqueWorkload } from '../helpers/grant-store-contract.js';
import { redisPlants } from '../helpers/redis-plants.js';
import { until } from '../helpers/redis-group.js';
import { startRedisSentinel, type RedisSentinelGroup } from '../helpers/redis-sentinel.js';
import { TEST_KEY_PUBLICATION_SECRETS, uniquePrefix } from '../helpers/redis.js';

const PASSWORD = randomBytes(16).toString('hex');
const SENTINEL_PASSWORD = randomBytes(16).toString('hex');
const prefix = uniquePrefix('sentinel');
let group: RedisSentinelGroup;

/** The sentinel user's rules as deploy/redis/README.md prints them (its password given in clear here). */
function sentinelAclRules(): string[] {
  const line = /`user jit-broker on #<sha256> (resetchannels [^`]+)`/.exec(readFileSync('deploy/redis/README.md', 'utf8'))?.[1];
  if (!line) throw new Error('deploy/redis/README.md lost its sentinel ACL line');
  return [`>${SENTINEL_PASSWORD}`, 'on', ...line.split(' ')];
}

beforeAll(async () => {
  group = await startRedisSentinel();
  const rules = brokerAclRules(PASSWORD, prefix);
  await Promise.all(group.dataNodes.map((n) => group.command(n, 'ACL', 'SETUSER', 'jit-broker', 'reset', ...rules)));
  await Promise.all(group.sentinels.map((s) => group.command(s, 'ACL', 'SETUSER', 'jit-broker', 'reset', ...sentinelAclRules())));
});

afterAll(async () => {
  await group?.stop();
});

const connection = (): RedisConnectionSpec => ({
  target: { kind: 'sentinel', sentinels: [...group.sentinelAddrs], masterName: group.masterName, sentinelUsername: 'jit-broker', sentinelPassword: SENTINEL_PASSWORD, sentinelTls: false },
  username: 'jit-broker',
  password: PASSWORD,
});
const makeStore = () => createRedisGrantStore({ connection: connection(), keyPrefix: prefix, keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
/** A raw client of the test's own on the primary (the default user). */
const admin = () => new Redis({ sentinels: [...group.sentinelAddrs], name: group.masterName, disableClientInfo: true });

describeGrantStoreContract('redis sentinel', async () => makeStore(), redisPlants(admin, prefix));

describe('redis store through Sentinel', () => {
  it('writes to the primary, hears of failovers from the sentinels, and the ACLs refuse nothing it sends', async () => {
    await Promise.all([...group.dataNodes, ...group.sentinels].map((n) => group.command(n, 'ACL', 'LOG', 'RESET')));
    const store = makeStore();
    const subscribed = new Promise<void>((resolve) => store.redis.once('failoverSubscribed', () => resolve()));
    try {
      const t0 = Date.now();
      const g = await store.createGrant(makeGrant(uniqueWorkload('sentinel'), t0), { now: t0, maxActive: 10, retentionMs: 60_000 });
      expect((await store.getGrant(g.id))?.id).toBe(g.id);
      await subscribed; // +switch-master on every sentinel: a failover moves the store at once
      const key = `${prefix}{w:`;
      const primaryKeys = (await group.command(group.primary, 'KEYS', `${key}*`)) as string[];
      expect(primaryKeys.some((k) => k.includes(g.id))).toBe(true);
    } finally {
      await store.close();
    }
    const refused = await Promise.all([...group.dataNodes, ...group.sentinels].map(async (n) => (await group.command(n, 'ACL', 'LOG')) as unknown[][]));
    expect(refused.flat().map((entry) => JSON.stringify(entry))).toEqual([]);
  });
});

describe('closing a store on Sentinel', () => {
  /** Connections subscribed on each sentinel (the store's failover listeners; sentinels subscribe to none of each other's). */
  const subscribers = () =>
    Promise.all(group.sentinels.map(async (s) => String(await group.command(s, 'CLIENT', 'LIST')).split('\n').filter((l) => / sub=[1-9]/.test(l)).length));

  it('leaves no connection behind, the sentinels\' failover listeners included', async () => {
    const before = await subscribers();
    const store = makeStore();
    const subscribed = new Promise<void>((resolve) => store.redis.once('failoverSubscribed', () => resolve()));
    await store.ping();
    await subscribed;
    expect((await subscribers()).map((n, i) => n - before[i]!)).toEqual([1, 1, 1]);
    await store.close();
    await until('the failover listeners closed', 5000, async () => (await subscribers()).every((n, i) => n === before[i]));
  });
});
