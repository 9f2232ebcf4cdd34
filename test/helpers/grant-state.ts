import type { Redis } from 'ioredis';

/**
 * Everything a broker holds under `prefix` about grants: records, indexes and audit events,
 * except denials (a refusal may add a `grant.denied` event and nothing else) and the global audit
 * and index shards (written after a grant's atomic create and not awaited, they copy the
 * workloads' own streams and indexes a few milliseconds late: a grant in one is in its workload's
 * keys too). A stream that holds
 * denials alone is left out, so a refusal compares equal to the state before it. Rate buckets are
 * left out too: one expires once it would be full again (about a second with the test limits), so
 * a slow refusal would see it vanish; that refusals spend no rate token is the store contract's.
 */
export async function grantState(redis: Redis, prefix: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      if (key.includes('{ga:') || key.includes('{gi:') || key.endsWith(':rate')) continue;
      const type = await redis.type(key);
      if (type === 'string') out[key] = await redis.get(key);
      else if (type === 'hash') out[key] = await redis.hgetall(key);
      else if (type === 'zset') out[key] = await redis.zrange(key, 0, -1, 'WITHSCORES');
      else if (type === 'stream') {
        const events = (await redis.xrange(key, '-', '+')).filter(([, f]) => f[f.indexOf('type') + 1] !== 'grant.denied');
        if (events.length > 0) out[key] = events;
      }
    }
  } while (cursor !== '0');
  return out;
}
