import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Unavailable, UnreadableGrant } from '../../src/errors.js';
import { auditToFields, GLOBAL_INDEX_SHARDS, globalShard, grantFromRecord } from '../../src/grants/codec.js';
import { grantKeys, tagOfGrantId, workloadTag } from '../../src/grants/ids.js';
import { AUDIT_SHARDS, shardKey, shardOfTag } from '../../src/grants/audit-log.js';
import { createRedisGrantStore, redactRedisUrl, type RedisGrantStore } from '../../src/grants/redis-store.js';
import type { GrantStore } from '../../src/grants/store.js';
import { silentLogger } from '../../src/log.js';
import { describeGrantStoreContract, makeGrant, uniqueWorkload } from '../helpers/grant-store-contract.js';
import { redisPlants } from '../helpers/redis-plants.js';
import { redisUrl, startRedisServer, TEST_KEY_PUBLICATION_SECRETS, uniquePrefix, type RedisProcess } from '../helpers/redis.js';

const prefix = uniquePrefix('redis-store');

const { plantForeign, plantUnreadable } = redisPlants(() => new Redis(redisUrl()), prefix);

describeGrantStoreContract('redis', async () => createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix: prefix, log: silentLogger }), {
  plantForeign,
  plantUnreadable,
});

/** CRC16/XMODEM, as Redis Cluster uses for key slots (standalone Redis refuses CLUSTER KEYSLOT). */
function crc16(buf: Buffer): number {
  let crc = 0;
  for (const byte of buf) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key, 'utf8')) % 16384;
}

/** A script call as MONITOR shows it (ioredis sends EVAL the first time on a connection, then EVALSHA). */
const isScriptCall = (args: string[]) => /^eval(sha)?$/i.test(args[0] ?? '');

/** [a, b, c, d] as [[a, b], [c, d]]. */
const chunks = (flat: string[]): [string, string][] => Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i]!, flat[2 * i + 1]!]);

/** Rejects if `p` has not settled within `ms` (fail-fast is a correctness property here). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

async function eventually(fn: () => Promise<void>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      await fn();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe('redis grant store: Redis specifics', () => {
  let store: RedisGrantStore;
  let raw: Redis;

  beforeAll(async () => {
    store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix: prefix, log: silentLogger });
    raw = new Redis(redisUrl());
  });
  afterAll(async () => {
    // Leave nothing behind on a shared REDIS_URL.
    let cursor = '0';
    do {
      const [next, keys] = await raw.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await raw.del(...keys);
    } while (cursor !== '0');
    await store.close();
    await raw.quit();
  });

  it('CRC16 slot function matches the Redis Cluster specification', () => {
    expect(crc16(Buffer.from('123456789'))).toBe(0x31c3);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('{user1000}.following')).toBe(keySlot('{user1000}.followers'));
    expect(keySlot('foo{}{bar}')).toBe(crc16(Buffer.from('foo{}{bar}')) % 16384);
  });

  it('writes the record and each index with the right TTL', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const retention = 60 * 60_000;
    const g = makeGrant(w, now, { expires_at: now + 10 * 60_000 });
    await store.createGrant(g, { now, maxActive: 5, retentionMs: retention });
    const k = grantKeys(prefix, workloadTag(w));
    const tol = 2000;
    const keep = g.expires_at + retention - now;

    expect(await raw.type(k.grant(g.id))).toBe('string');
    const record = (await raw.get(k.grant(g.id))) as string;
    expect(record.split('\n').slice(0, 6)).toEqual(['active', String(g.expires_at), '1', g.token_jti, String(g.token_exp), w]);
    expect(grantFromRecord(g.id, record)).toEqual({ ok: true, value: { ...g, status: 'active', generation: 1 } });
    // Compact encodings: every member and value stays under Redis's 64-byte listpack bound.
    expect(await raw.object('ENCODING', k.live)).toBe('listpack');
    expect(await raw.object('ENCODING', k.all)).toBe('listpack');
    const pttl = {
      grant: await raw.pttl(k.grant(g.id)),
      live: await raw.pttl(k.live),
      all: await raw.pttl(k.all),
      audit: await raw.pttl(k.audit),
    };
    expect(pttl.grant).toBeGreaterThan(keep - tol);
    expect(pttl.grant).toBeLessThanOrEqual(keep);
    expect(pttl.live).toBeGreaterThan(g.expires_at - now - tol);
    expect(pttl.live).toBeLessThanOrEqual(g.expires_at - now);
    for (const key of ['all', 'audit'] as const) {
      expect(pttl[key], key).toBeGreaterThan(keep - tol);
      expect(pttl[key], key).toBeLessThanOrEqual(keep);
    }
    expect(await raw.zscore(k.live, g.id)).toBe(String(g.expires_at));
    expect(await raw.zscore(k.all, g.id)).toBe(String(g.created_at));
    expect(await raw.xlen(k.audit)).toBe(1);
    // The operators' hint index of workloads.
    expect(await raw.zscore(`${prefix}workloads`, w)).toBe(String(now));

    // A shorter-lived grant never shortens an index's TTL.
    const short = makeGrant(w, now, { expires_at: now + 60_000 });
    await store.createGrant(short, { now, maxActive: 5, retentionMs: retention });
    expect(await raw.pttl(k.live)).toBeGreaterThan(g.expires_at - now - tol);
    expect(await raw.pttl(k.all)).toBeGreaterThan(keep - tol);
    const shortKeep = short.expires_at + retention - now;
    expect(await raw.pttl(k.grant(short.id))).toBeLessThanOrEqual(shortKeep);
    expect(await raw.pttl(k.grant(short.id))).toBeGreaterThan(shortKeep - tol);

    // A denial alone keeps the stream for the retention window.
    const denyW = uniqueWorkload('deny');
    await store.appendAudit({ type: 'grant.denied', at: now, workload: denyW, reason: 'x' }, { retentionMs: 30_000 });
    const denyTtl = await raw.pttl(grantKeys(prefix, workloadTag(denyW)).denials);
    expect(denyTtl).toBeGreaterThan(30_000 - tol);
    expect(denyTtl).toBeLessThanOrEqual(30_000);
  });

  it('trims lifecycle events by age (audit retention), never by count', async () => {
    const w = uniqueWorkload();
    const k = grantKeys(prefix, workloadTag(w));
    const now = Date.now();
    // 250 events older than the retention (ids are Redis's clock: a second after the epoch).
    const old = auditToFields({ type: 'grant.ended', at: 1000, workload: w });
    for (let i = 1; i <= 250; i++) await raw.xadd(k.audit, `1000-${i}`, ...old);
    await store.createGrant(makeGrant(w, now), { now, maxActive: 5, retentionMs: 60_000 });
    // Trimmed by whole stream nodes (MINID ~): at most the last node of old events is left.
    const left = (await raw.xrange(k.audit, '-', '+')).filter(([id]) => id.startsWith('1000-')).length;
    expect(left).toBeLessThan(150);
    expect((await store.readAudit(w, { limit: 10_000 })).at(-1)).toMatchObject({ type: 'grant.issued' });
    // Recent events stay whatever their number: 1,500 renewals of one grant.
    const v = uniqueWorkload();
    const g = makeGrant(v, now, { expires_at: now + 600_000 });
    await store.createGrant(g, { now, maxActive: 5, retentionMs: 3_600_000 });
    let jti = g.token_jti;
    for (let i = 0; i < 1500; i++) {
      const next = `jti_${i}`;
      await store.renewGrant({ id: g.id, workload: v, presentedJti: jti, jti: next, tokenExp: now + 60_000 }, { now: now + i, retentionMs: 3_600_000 });
      jti = next;
    }
    expect(await raw.xlen(grantKeys(prefix, workloadTag(v)).audit)).toBe(1501);
  });

  it('copies events to the shard streams of the global log, trimmed by age by the writers told the retention only', async () => {
    // A prefix of its own: other tests' copies (Redis's clock) would sort after the planted ids.
    const own = uniquePrefix('shard-log');
    const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix: own, log: silentLogger });
    const w = uniqueWorkload('shard');
    const shard = shardKey(own, shardOfTag(workloadTag(w)));
    const now = Date.now();
    // 250 copies older than the retention (ids are Redis's clock: a second after the epoch).
    const old = auditToFields({ type: 'grant.ended', at: 1000, workload: w });
    for (let i = 1; i <= 250; i++) await raw.xadd(shard, `1000-${i}`, ...old);
    const grants: string[] = [];
    for (let i = 0; i < 250; i++) grants.push((await store.createGrant(makeGrant(w, now, { expires_at: now + 3 * 3_600_000 }), { now, maxActive: 1000, retentionMs: 60_000 })).id);
    await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', limit: 1, maxExamined: 1 }); // flushes the pending copies
    expect((await raw.xrange(shard, '-', '+')).filter(([id]) => id.startsWith('1000-')).length).toBeLessThan(150);
    // A closing is not told the retention: its copy must not trim recent entries, even at a far later "now".
    expect((await store.closeGrant(grants[0]!, w, { now: now + 7_200_000, status: 'ended' })).outcome).toBe('closed');
    await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', limit: 1, maxExamined: 1 });
    const mine = (await raw.xrange(shard, '-', '+')).filter(([id, f]) => !id.startsWith('1000-') && f.includes(w));
    expect(mine.length).toBe(251);
    expect(await raw.ttl(shard)).toBe(-1); // 16 fixed keys: trimmed by age, never expired whole
    await store.close();
    await raw.del(...(await raw.keys(`${own}*`)));
  });

  it("caps the global log's copies of denials by count, as the streams they copy are: many sources cannot grow it", async () => {
    // Each source spends only its own audit budget, so 1,000 sources x 100 denials all count as
    // "under budget": the workload streams and unmatched partitions they go to are capped, and
    // the copies in the global log must be too (found by bench/audit-memory.ts: 100,000 denials
    // from 1,000 sources kept 116,000 entries, 77 MB, with the copies trimmed only by age).
    const own = uniquePrefix('shard-denials');
    const cap = 20;
    const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix: own, log: silentLogger, denialShardMaxlen: cap });
    const now = Date.now();
    const sources = Array.from({ length: 1000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
    await Promise.all(
      sources.map((source, i) =>
        store.appendAudit({ type: 'grant.denied', at: now, workload: `k8s://x/ns/n/sa/stranger-${i}`, reason: 'no rule names this workload' }, { retentionMs: 3_600_000, unmatched: true, source }),
      ),
    );
    const page = await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', limit: 1000, maxExamined: 100_000 });
    const copies = page.events.filter((e) => e.type === 'grant.denied').length;
    expect(copies).toBeGreaterThan(0);
    expect(copies).toBeLessThanOrEqual(AUDIT_SHARDS * cap);
    await store.close();
    await raw.del(...(await raw.keys(`${own}*`)));
  });

  it('keeps every key of a workload in one cluster slot, whatever the task id', async () => {
    const w = 'spiffe://td/{tricky}/ns/{x}';
    const now = Date.now();
    const g1 = makeGrant(w, now, { task: 'a}{b' });
    const g2 = makeGrant(w, now, { task: '{other}' });
    await store.createGrant(g1, { now, maxActive: 5, retentionMs: 60_000 });
    await store.createGrant(g2, { now, maxActive: 5, retentionMs: 60_000 });
    const tag = workloadTag(w);
    expect(tagOfGrantId(g1.id)).toBe(tag);
    const slot = keySlot(`{w:${tag}}`);
    const written: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await raw.scan(cursor, 'MATCH', `${prefix}{w:${tag}}*`, 'COUNT', 1000);
      cursor = next;
      written.push(...keys);
    } while (cursor !== '0');
    const k = grantKeys(prefix, tag);
    expect(written.sort()).toEqual([k.grant(g1.id), k.grant(g2.id), k.live, k.all, k.audit].sort());
    for (const key of written) expect(keySlot(key), key).toBe(slot);
  });

  it('drops an index entry whose record is gone, and never takes an undecodable record for an absent one', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const a = makeGrant(w, now, { task: 't' });
    const b = makeGrant(w, now + 1, { task: 't' });
    await store.createGrant(a, { now, maxActive: 5, retentionMs: 60_000 });
    await store.createGrant(b, { now: now + 1, maxActive: 5, retentionMs: 60_000 });
    const k = grantKeys(prefix, workloadTag(w));
    await raw.del(k.grant(a.id));
    const record = (await raw.get(k.grant(b.id))) as string;
    await raw.set(k.grant(b.id), record.replace(JSON.stringify(b.actions), `"not a list"`), 'KEEPTTL');
    expect(await store.listTaskGrants(w, 't', { now })).toEqual([]);
    // Walking by task never prunes (it would shift the ranks under the walk).
    expect(await raw.zrange(k.all, 0, -1)).toEqual([a.id, b.id]);
    expect(await store.listWorkloadGrants(w, { now })).toEqual([]);
    expect(await store.getGrant(a.id)).toBeNull();
    // There but undecodable is an error, not "no grant" (issue 11).
    await expect(store.getGrant(b.id)).rejects.toBeInstanceOf(UnreadableGrant);
    // The read pruned the index it read (only): the undecodable record is still there.
    expect(await raw.zrange(k.all, 0, -1)).toEqual([b.id]);
    expect(await raw.zrange(k.live, 0, -1)).toEqual([a.id, b.id]);
    expect(await store.listWorkloadGrants(w, { now, liveOnly: true })).toEqual([]);
    // A record that is not one at all (not six lines and JSON) is unreadable to the scripts too.
    await raw.set(k.grant(b.id), 'garbage', 'KEEPTTL');
    await expect(store.closeGrant(b.id, w, { now, status: 'revoked' })).rejects.toBeInstanceOf(UnreadableGrant);
    expect(await raw.get(k.grant(b.id))).toBe('garbage');
    // Never the live index: it drives the cap, and its entries leave by their own score.
    expect(await raw.zrange(k.live, 0, -1)).toEqual([a.id, b.id]);
  });

  it('decodes records written before kid and closed_by were recorded, and writes them back in the new shape', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const k = grantKeys(prefix, workloadTag(w));
    const g = makeGrant(w, now);
    await store.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 });
    const current = (await raw.get(k.grant(g.id))) as string;
    expect(current.split('\n')).toHaveLength(9);
    // The old shape: the first seven lines only.
    const old = current.split('\n').slice(0, 7).join('\n');
    await raw.set(k.grant(g.id), old, 'KEEPTTL');
    const decoded = await store.getGrant(g.id);
    expect(decoded).toEqual({ ...g, status: 'active', generation: 1 });
    expect(decoded).not.toHaveProperty('kid');
    const closed = await store.closeGrant(g.id, w, { now: now + 1, status: 'revoked', by: 'operator:root' });
    expect(closed).toMatchObject({ outcome: 'closed', grant: { status: 'revoked', closed_by: 'operator:root' } });
    expect(((await raw.get(k.grant(g.id))) as string).split('\n')).toHaveLength(9);
  });

  it('a renewal adds prev_jti and token_iat as two lines; records of grants renewed before them still renew, without a retry window', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const k = grantKeys(prefix, workloadTag(w));
    const g = makeGrant(w, now);
    await store.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 });
    const r1 = { id: g.id, workload: w, presentedJti: g.token_jti, jti: 'jti-r1', tokenExp: now + 60_000 };
    await store.renewGrant(r1, { now: now + 1, retentionMs: 60_000 });
    const lines = ((await raw.get(k.grant(g.id))) as string).split('\n');
    expect(lines).toHaveLength(11);
    expect(lines.slice(9)).toEqual([g.token_jti, String(now + 1)]);
    // One of the pair without the other is no record the broker wrote: unreadable, unchanged.
    for (const half of [[...lines.slice(0, 9), '', String(now + 1)], [...lines.slice(0, 9), g.token_jti, ''], [...lines.slice(0, 9), g.token_jti, 'x']]) {
      await raw.set(k.grant(g.id), half.join('\n'), 'KEEPTTL');
      await expect(store.getGrant(g.id)).rejects.toBeInstanceOf(UnreadableGrant);
      await expect(store.renewGrant({ ...r1, presentedJti: 'jti-r1', jti: 'jti-r2' }, { now: now + 2, retentionMs: 60_000 })).rejects.toBeInstanceOf(UnreadableGrant);
      expect(await raw.get(k.grant(g.id))).toBe(half.join('\n'));
    }
    // Renewed by a broker before these lines (nine lines): its superseded token is a replay, even at once.
    await raw.set(k.grant(g.id), lines.slice(0, 9).join('\n'), 'KEEPTTL');
    expect(await store.getGrant(g.id)).not.toHaveProperty('prev_jti');
    const retry = await store.renewGrant(r1, { now: now + 2, retentionMs: 60_000, retryWindowMs: 10_000 });
    expect(retry).toMatchObject({ outcome: 'replay', grant: { status: 'revoked' } });
  });

  it('a token digest is a twelfth line (the renewal lines empty before one); both decoders refuse a malformed one, and records without it renew', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const k = grantKeys(prefix, workloadTag(w));
    const digest = (c: string) => c.repeat(22);
    const g = makeGrant(w, now, { token_digest: digest('a') });
    await store.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 });
    const lines = ((await raw.get(k.grant(g.id))) as string).split('\n');
    expect(lines.slice(9)).toEqual(['', '', digest('a')]);
    for (const bad of ['short', `${digest('a')}b`, `${'a'.repeat(21)}=`]) {
      const record = [...lines.slice(0, 11), bad].join('\n');
      await raw.set(k.grant(g.id), record, 'KEEPTTL');
      await expect(store.getGrant(g.id)).rejects.toBeInstanceOf(UnreadableGrant);
      await expect(store.renewGrant({ id: g.id, workload: w, presentedJti: g.token_jti, jti: 'jti-x', tokenExp: now + 60_000 }, { now: now + 1, retentionMs: 60_000 })).rejects.toBeInstanceOf(UnreadableGrant);
      expect(await raw.get(k.grant(g.id))).toBe(record);
    }
    await raw.set(k.grant(g.id), lines.join('\n'), 'KEEPTTL');
    const r1 = { id: g.id, workload: w, presentedJti: g.token_jti, jti: 'jti-r1', tokenExp: now + 60_000, tokenDigest: digest('b') };
    await store.renewGrant(r1, { now: now + 1, retentionMs: 60_000 });
    expect(((await raw.get(k.grant(g.id))) as string).split('\n').slice(9)).toEqual([g.token_jti, String(now + 1), digest('b')]);
    // Without the digest (as a broker before it wrote the record): renewed, and the digest is the new token's.
    await raw.set(k.grant(g.id), ((await raw.get(k.grant(g.id))) as string).split('\n').slice(0, 11).join('\n'), 'KEEPTTL');
    expect(await store.getGrant(g.id)).not.toHaveProperty('token_digest');
    await store.renewGrant({ ...r1, presentedJti: 'jti-r1', jti: 'jti-r2', tokenDigest: digest('c') }, { now: now + 2, retentionMs: 60_000 });
    expect(await store.getGrant(g.id)).toMatchObject({ token_jti: 'jti-r2', token_digest: digest('c') });
  });

  it('never changes a record it would not decode: broken JSON, bad numbers or status, another type', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const k = grantKeys(prefix, workloadTag(w));
    const g = makeGrant(w, now);
    await store.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 });
    const good = (await raw.get(k.grant(g.id))) as string;
    const lines = good.split('\n');
    const variant = (i: number, value: string) => lines.map((l, j) => (j === i ? value : l)).join('\n');
    const broken = [
      variant(6, '[not json'),
      variant(6, '"a string"'),
      variant(2, 'x'),
      variant(2, '0'),
      variant(1, 'inf'),
      variant(1, '1e3'),
      variant(0, 'paused'),
      variant(3, ''),
    ];
    const renewal = { id: g.id, workload: w, presentedJti: g.token_jti, jti: 'renewed-jti', tokenExp: now + 60_000 };
    for (const record of broken) {
      await raw.set(k.grant(g.id), record, 'KEEPTTL');
      const events = await raw.xlen(k.audit);
      await expect(store.renewGrant(renewal, { now: now + 1, retentionMs: 60_000 }), record).rejects.toBeInstanceOf(UnreadableGrant);
      await expect(store.closeGrant(g.id, w, { now: now + 1, status: 'revoked' }), record).rejects.toBeInstanceOf(UnreadableGrant);
      await expect(store.getGrant(g.id), record).rejects.toBeInstanceOf(UnreadableGrant);
      expect(await raw.get(k.grant(g.id))).toBe(record);
      expect(await raw.xlen(k.audit)).toBe(events);
    }
    await raw.del(k.grant(g.id));
    await raw.hset(k.grant(g.id), 'status', 'active');
    await expect(store.closeGrant(g.id, w, { now: now + 1, status: 'revoked' })).rejects.toBeInstanceOf(UnreadableGrant);
    await expect(store.renewGrant(renewal, { now: now + 1, retentionMs: 60_000 })).rejects.toBeInstanceOf(UnreadableGrant);
    await expect(store.getGrant(g.id)).rejects.toBeInstanceOf(UnreadableGrant);
    expect(await raw.hget(k.grant(g.id), 'status')).toBe('active');
  });

  it('prunes only ids whose records are gone, not the records of another workload', async () => {
    const w = uniqueWorkload();
    const now = Date.now();
    const own = makeGrant(w, now, { task: 't' });
    await store.createGrant(own, { now, maxActive: 5, retentionMs: 60_000 });
    await plantForeign(store, w, { now: now + 1, task: 't' });
    const k = grantKeys(prefix, workloadTag(w));
    const [foreignId] = await raw.zrevrange(k.all, 0, 0);
    expect(foreignId).not.toBe(own.id);
    expect((await store.listWorkloadGrants(w, { now, limit: 1 })).map((g) => g.id)).toEqual([own.id]);
    expect(await raw.zscore(k.all, foreignId as string)).not.toBeNull();
    expect(await raw.exists(k.grant(foreignId as string))).toBe(1);
  });

  /** A logger whose warnings land in `lines`. */
  function warningsTo(lines: string[]) {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString('utf8'));
        cb();
      },
    });
    return pino({ level: 'warn' }, sink);
  }

  /** createGrant succeeds, the grant and its audit event exist, a warning says why, no token in it. */
  async function expectGrantDespiteHint(s: GrantStore, lines: string[], now: number, why: string): Promise<string> {
    const w = uniqueWorkload();
    const g = makeGrant(w, now);
    await expect(s.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 })).resolves.toMatchObject({ id: g.id });
    expect(await s.getGrant(g.id)).toMatchObject({ id: g.id, status: 'active' });
    expect((await s.readAudit(w)).map((e) => [e.type, e.grant])).toEqual([['grant.issued', g.id]]);
    await s.ping(); // the hint's reply came before this one (one connection)
    const warned = lines.join('');
    expect(warned).toContain('workloads hint index not updated');
    expect(warned).toContain(why);
    expect(warned).not.toContain(g.token_jti);
    return w;
  }

  it('lists a grant in a query without a workload right after its start on the same instance (pending index entries are sent first)', async () => {
    const keyPrefix = uniquePrefix('redis-store-ryw');
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix, log: silentLogger });
    try {
      const now = Date.now();
      for (let i = 0; i < 5; i++) {
        const g = await s.createGrant(makeGrant(uniqueWorkload('ryw'), now + i), { now: now + i, maxActive: 5, retentionMs: 60_000 });
        // No wait, no poll: the entry is still queued (shard-batches.ts) when the walk starts.
        const { grants } = await s.walkGrants({ now: now + i, retentionMs: 60_000, want: 1, maxExamined: 10 });
        expect(grants.map((x) => x.id)).toEqual([g.id]);
      }
    } finally {
      await s.close();
      await raw.del(...(await raw.keys(`${keyPrefix}*`)));
    }
  });

  it('indexes a batch of grants of many workloads in their shards, one script call per shard and batch', async () => {
    const keyPrefix = uniquePrefix('redis-store-batch');
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix, log: silentLogger });
    const monitor = await raw.monitor();
    const calls: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (isScriptCall(args) && args[3]?.startsWith(keyPrefix)) calls.push(args);
    });
    try {
      const now = Date.now();
      const retention = 60 * 60_000;
      // 40 workloads (over most of the 16 shards), 3 grants each, started together.
      const workloads = Array.from({ length: 40 }, () => uniqueWorkload('batch'));
      const made = workloads.flatMap((w, i) => [0, 1, 2].map((j) => makeGrant(w, now - i * 3 - j, { expires_at: now + (j + 1) * 60_000 })));
      await Promise.all(made.map((g) => s.createGrant(g, { now, maxActive: 5, retentionMs: retention })));
      // Sent within SHARD_FLUSH_MS, without a read to flush them.
      const indexed = async () => (await Promise.all(Array.from({ length: GLOBAL_INDEX_SHARDS }, (_, n) => raw.zcard(`${keyPrefix}{gi:${n}}:grants`)))).reduce((a, b) => a + b, 0);
      await expect.poll(indexed, { timeout: 2000, interval: 5 }).toBe(made.length);
      const shards = new Set(workloads.map(globalShard));
      for (const n of shards) {
        const key = `${keyPrefix}{gi:${n}}:grants`;
        const want = made.filter((g) => globalShard(g.workload) === n);
        expect(Object.fromEntries(chunks(await raw.zrange(key, 0, -1, 'WITHSCORES')))).toEqual(Object.fromEntries(want.map((g) => [g.id, String(g.created_at)])));
        // The batch's longest-lived grant sets the shard's TTL.
        const keep = Math.max(...want.map((g) => g.expires_at)) + retention - now;
        expect(await raw.pttl(key)).toBeGreaterThan(keep - 5000);
        expect(await raw.pttl(key)).toBeLessThanOrEqual(keep);
      }
      await s.ping(); // MONITOR's last lines are in
      const indexCalls = calls.filter((c) => c[3]!.includes('{gi:'));
      // Batched: the 120 creates are answered together, so their entries share one or two flushes.
      expect(indexCalls.length).toBeLessThanOrEqual(2 * shards.size);
      expect(indexCalls.reduce((sum, c) => sum + (c.length - 6) / 2, 0)).toBe(made.length);
      for (const c of indexCalls) {
        const ids = chunks(c.slice(6)).map(([, id]) => id);
        expect(new Set(ids.map((id) => globalShard(made.find((g) => g.id === id)!.workload)))).toEqual(new Set([Number(/\{gi:(\d+)\}/.exec(c[3]!)![1])]));
      }
    } finally {
      await monitor.disconnect();
      await s.close();
      await raw.del(...(await raw.keys(`${keyPrefix}*`)));
    }
  });

  it('retries a failed global index write once: a shard writable again by then indexes the grant, and nothing is logged', async () => {
    const lines: string[] = [];
    const keyPrefix = uniquePrefix('redis-store-gi-retry');
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix, log: warningsTo(lines) });
    const monitor = await raw.monitor();
    try {
      const w = uniqueWorkload();
      const key = `${keyPrefix}{gi:${globalShard(w)}}:grants`;
      await raw.set(key, 'not a zset'); // the script's ZADD answers WRONGTYPE
      // Right after the first attempt (MONITOR shows it), the shard is made writable again.
      let attempts = 0;
      const repaired = new Promise<void>((resolve) => {
        monitor.on('monitor', (_time: string, args: string[]) => {
          if (isScriptCall(args) && args[3] === key && ++attempts === 1) void raw.del(key).then(() => resolve());
        });
      });
      const now = Date.now();
      const g = makeGrant(w, now);
      await s.createGrant(g, { now, maxActive: 5, retentionMs: 60_000 });
      await repaired;
      await expect.poll(() => raw.zscore(key, g.id), { timeout: 2000 }).toBe(String(g.created_at));
      expect(attempts).toBe(2);
      expect(lines.join('')).not.toContain('global index');
    } finally {
      await monitor.disconnect();
      await s.close();
      await raw.del(...(await raw.keys(`${keyPrefix}*`)));
    }
  });

  it('creates the grant though its global index write fails; retries once, then logs the grant by id (never silently)', async () => {
    const lines: string[] = [];
    const keyPrefix = uniquePrefix('redis-store-gi');
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix, log: warningsTo(lines) });
    try {
      const w = uniqueWorkload();
      await raw.set(`${keyPrefix}{gi:${globalShard(w)}}:grants`, 'not a zset'); // the script's ZADD answers WRONGTYPE
      const now = Date.now();
      // Two grants in one batch of the shard: each is logged by id.
      const [g, f] = [makeGrant(w, now), makeGrant(w, now)];
      await expect(Promise.all([g, f].map((x) => s.createGrant(x, { now, maxActive: 5, retentionMs: 60_000 })))).resolves.toMatchObject([{ id: g.id }, { id: f.id }]);
      expect(await s.getGrant(g.id)).toMatchObject({ status: 'active' });
      // Its workload's own index still lists it.
      expect((await s.walkGrants({ now, retentionMs: 60_000, workload: w, want: 10, maxExamined: 10 })).grants.map((x) => x.id).sort()).toEqual([g.id, f.id].sort());
      await expect.poll(() => lines.filter((l) => l.includes('grant not added to the global index')).length, { timeout: 5000 }).toBe(2);
      const logged = lines.join('');
      expect(logged).toContain(g.id);
      expect(logged).toContain(f.id);
      expect(logged).toContain('WRONGTYPE');
      expect(logged).not.toContain(g.token_jti);
      // Once the shard is writable again, new grants are indexed.
      await raw.del(`${keyPrefix}{gi:${globalShard(w)}}:grants`);
      const h = makeGrant(w, now + 1);
      await s.createGrant(h, { now: now + 1, maxActive: 5, retentionMs: 60_000 });
      await expect.poll(async () => (await s.walkGrants({ now: now + 1, retentionMs: 60_000, want: 10, maxExamined: 100 })).grants.map((x) => x.id)).toEqual([h.id]);
    } finally {
      await s.close();
    }
  });

  it('creates the grant though the workloads hint write fails inside EXEC, and retries it later', async () => {
    const lines: string[] = [];
    const keyPrefix = uniquePrefix('redis-store-hint');
    const hintKey = `${keyPrefix}workloads`;
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix, log: warningsTo(lines) });
    try {
      await raw.set(hintKey, 'not a zset'); // ZADD answers WRONGTYPE
      const now = Date.now();
      const w = await expectGrantDespiteHint(s, lines, now, 'WRONGTYPE');
      // Within the refresh interval, yet retried: the failure was forgotten.
      await raw.del(hintKey);
      await s.createGrant(makeGrant(w, now + 1), { now: now + 1, maxActive: 5, retentionMs: 60_000 });
      await s.ping();
      expect(await raw.zscore(hintKey, w)).toBe(String(now + 1));
    } finally {
      await s.close();
      const leftovers = await raw.keys(`${keyPrefix}*`);
      if (leftovers.length) await raw.del(...leftovers);
    }
  });

  it('creates the grant though the workloads hint transaction is rejected (EXECABORT)', async () => {
    // Its own server, with a user that may write the workloads' slots but only read the hint index.
    const own = await startRedisServer();
    const lines: string[] = [];
    const keyPrefix = 'jit:';
    let s: GrantStore | undefined;
    try {
      const admin = new Redis(own.url);
      await admin.acl('SETUSER', 'nohint', 'on', '>pw', '+@all', `~${keyPrefix}{*`, `%R~${keyPrefix}workloads`);
      await admin.quit();
      const url = own.url.replace('redis://', 'redis://nohint:pw@');
      const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url, keyPrefix, log: warningsTo(lines) });
      s = store;
      await eventually(() => store.ping());
      await expectGrantDespiteHint(store, lines, Date.now(), 'EXECABORT');
    } finally {
      await s?.close();
      await own.stop();
    }
  });

  it('purges a published key holding private material that reached Redis anyway', async () => {
    const kid = `tampered-${Date.now()}`;
    const bad = { kid, jwk: { kty: 'EC', crv: 'P-256', x: 'a', y: 'b', d: 'secret' }, created_at: 1, retire_at: 2, expires_at: Date.now() + 60_000 };
    await raw.hset(`${prefix}keys`, kid, JSON.stringify(bad));
    const keys = await store.publishedKeys(Date.now());
    expect(keys.map((k) => k.kid)).not.toContain(kid);
    expect(await raw.hexists(`${prefix}keys`, kid)).toBe(0);
  });

  it('serves a published key only while its entry is as its publisher authenticated it (key publication MAC)', async () => {
    const now = Date.now();
    const kid = `mac-${now}`;
    await store.publishKey({ kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: 'abc', kid }, created_at: now, retire_at: now + 1000, expires_at: now + 60 * 60_000 });
    const stored = (await raw.hget(`${prefix}keys`, kid))!;
    expect((await store.publishedKeys(now)).map((k) => k.kid)).toContain(kid);
    // Someone with Redis write access keeps the MAC but moves the key's expiry, or drops the MAC.
    const entry = JSON.parse(stored) as Record<string, unknown>;
    for (const tampered of [{ ...entry, expires_at: now + 10 * 60 * 60_000 }, { ...entry, mac: undefined }, { ...entry, jwk: { kty: 'OKP', crv: 'Ed25519', x: 'abd', kid } }]) {
      await raw.hset(`${prefix}keys`, kid, JSON.stringify(tampered));
      expect((await store.publishedKeys(now)).map((k) => k.kid)).not.toContain(kid);
    }
    // A store with another secret does not trust this store's keys.
    await raw.hset(`${prefix}keys`, kid, stored);
    const other = createRedisGrantStore({ keyPublicationSecrets: ['another-secret-0123456789abcdef01234'], url: redisUrl(), keyPrefix: prefix, log: silentLogger });
    try {
      expect((await other.publishedKeys(now)).map((k) => k.kid)).not.toContain(kid);
    } finally {
      await other.close();
    }
  });

  it('keeps the published-keys hash alive for as long as its longest-lived key', async () => {
    const now = Date.now();
    const kid = `ttl-${now}`;
    await store.publishKey({ kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: 'abc' }, created_at: now, retire_at: now + 1000, expires_at: now + 3 * 60 * 60_000 });
    const ttl = await raw.pttl(`${prefix}keys`);
    expect(ttl).toBeGreaterThan(3 * 60 * 60_000);
    expect(ttl).toBeLessThanOrEqual(3 * 60 * 60_000 + 60_000);
  });

  it('redacts passwords from URLs', () => {
    expect(redactRedisUrl('redis://user:hunter2@example.com:6380/0')).not.toContain('hunter2');
    expect(redactRedisUrl('redis://user:hunter2@example.com:6380/0')).toContain('example.com:6380');
  });
});

describe('redis grant store: failing closed and recovering', () => {
  let server: RedisProcess;
  let store: GrantStore | undefined;
  const logs: string[] = [];
  const log = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString('utf8'));
        cb();
      },
    }),
  );

  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });
  afterAll(async () => {
    await server.stop();
  });

  it('rejects with Unavailable at once when Redis is down, writes nothing, and recovers by itself', async () => {
    // Its own server: it is given a password, which the other tests here do not use.
    const own = await startRedisServer();
    try {
      await outageAndRecovery(own);
    } finally {
      await own.stop();
    }
  });

  async function outageAndRecovery(server: RedisProcess): Promise<void> {
    const url = server.url.replace('redis://', 'redis://:hunter2@');
    const setup = new Redis(server.url);
    await setup.config('SET', 'requirepass', 'hunter2');
    await setup.quit();
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url, keyPrefix: 'jit:', log });
    store = s;
    const w = uniqueWorkload();
    const t0 = Date.now();
    await s.createGrant(makeGrant(w, t0), { now: t0, maxActive: 5, retentionMs: 60_000 });

    await server.stop();
    const g = makeGrant(w, t0 + 1);
    const o = { now: t0 + 1, maxActive: 5, retentionMs: 60_000 };
    const errors = [
      await within(s.createGrant(g, o).catch((e: unknown) => e), 2000),
      await within(s.getGrant(g.id).catch((e: unknown) => e), 2000),
      await within(s.listWorkloadGrants(w, { now: t0 }).catch((e: unknown) => e), 2000),
      await within(s.appendAudit({ type: 'grant.ended', at: t0, workload: w }, { retentionMs: 1000 }).catch((e: unknown) => e), 2000),
      await within(s.readAudit(w).catch((e: unknown) => e), 2000),
      await within(s.publishedKeys(t0).catch((e: unknown) => e), 2000),
      await within(s.ping().catch((e: unknown) => e), 2000),
    ];
    for (const e of errors) {
      expect(e).toBeInstanceOf(Unavailable);
      expect((e as Unavailable).status).toBe(503);
      expect((e as Unavailable).description).toBe('grant store is unavailable');
      expect(String((e as Unavailable).detail)).not.toContain('hunter2');
    }

    // A new server on the same port (empty; scripts not loaded): the same store instance recovers.
    await server.restart();
    const admin = new Redis(server.url);
    await admin.config('SET', 'requirepass', 'hunter2');
    await admin.quit();
    await eventually(() => s.ping());
    // Nothing queued during the outage is replayed on reconnect.
    await new Promise((r) => setTimeout(r, 300));
    expect(await s.getGrant(g.id)).toBeNull();
    expect(await s.readAudit(w)).toEqual([]);
    const again = makeGrant(w, t0 + 2);
    await expect(s.createGrant(again, { now: t0 + 2, maxActive: 5, retentionMs: 60_000 })).resolves.toMatchObject({ id: again.id });
    expect((await s.readAudit(w)).map((e) => e.grant)).toEqual([again.id]);
    expect(logs.join('')).not.toContain('hunter2');
    expect(logs.join('')).toContain('grant store connection restored');
  }

  it('times out a command Redis does not answer (commandTimeoutMs) with Unavailable', async () => {
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: server.url, keyPrefix: 'jit:', commandTimeoutMs: 300, log: silentLogger });
    store = s;
    await eventually(() => s.ping());
    process.kill(server.pid, 'SIGSTOP');
    try {
      const e = await within(s.getGrant(makeGrant(uniqueWorkload(), Date.now()).id).catch((err: unknown) => err), 2000);
      expect(e).toBeInstanceOf(Unavailable);
    } finally {
      process.kill(server.pid, 'SIGCONT');
    }
    await eventually(() => s.ping());
  });

  it('starts while Redis is down and serves once it is up', async () => {
    await server.stop();
    const s = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: server.url, keyPrefix: 'jit:', log: silentLogger });
    store = s;
    await expect(within(s.ping(), 2000)).rejects.toBeInstanceOf(Unavailable);
    await server.restart();
    await eventually(() => s.ping());
    const w = uniqueWorkload();
    const now = Date.now();
    const g = makeGrant(w, now);
    await s.createGrant(g, { now, maxActive: 1, retentionMs: 60_000 });
    expect(await s.getGrant(g.id)).toMatchObject({ id: g.id, status: 'active' });
  });
});
