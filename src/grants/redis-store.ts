import { readFileSync } from 'node:fs';
import { Redis, type Result } from 'ioredis';
import { BrokerError, Unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import {
  AUDIT_MAXLEN,
  CAP_DENIAL_REASON,
  DuplicateGrantId,
  auditFromFields,
  auditLimit,
  auditToFields,
  capExceeded,
  decodePublishedKey,
  grantFromHash,
  grantToHash,
  holdsPrivateMaterial,
  isLive,
  listLimit,
  newestFirst,
  validateAudit,
  validateNewGrant,
  validatePublishedKey,
  validateRetention,
} from './codec.js';
import { grantKeys, tagOfGrantId, workloadTag } from './ids.js';
import type { AuditEvent, CreateGrantOptions, Grant, GrantStore, ListOptions, NewGrant, PublishedKey } from './store.js';

/**
 * The Lua scripts, read once at module load. They live next to this file in `lua/`; the build
 * must copy `src/grants/lua/*.lua` to `dist/grants/lua/` (tsc does not copy them).
 */
export const LUA_SCRIPTS = {
  createGrant: readFileSync(new URL('./lua/create-grant.lua', import.meta.url), 'utf8'),
  appendAudit: readFileSync(new URL('./lua/append-audit.lua', import.meta.url), 'utf8'),
  publishKey: readFileSync(new URL('./lua/publish-key.lua', import.meta.url), 'utf8'),
} as const;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    jitCreateGrant(...args: (string | number)[]): Result<(string | number)[], Context>;
    jitAppendAudit(...args: (string | number)[]): Result<string, Context>;
    jitPublishKey(...args: (string | number)[]): Result<number, Context>;
  }
}

export interface RedisGrantStoreOptions {
  url: string;
  /** Prefix of every key; default "jit:". Must not contain a hash tag brace. */
  keyPrefix?: string;
  /** A command without a reply after this long fails (503). Default 1000 ms. */
  commandTimeoutMs?: number;
  /** TCP connect timeout. Default 2000 ms. */
  connectTimeoutMs?: number;
  log: Logger;
}

export type RedisGrantStore = GrantStore & { readonly kind: 'redis'; readonly redis: Redis };

const UNAVAILABLE = 'grant store is unavailable';

/** The URL without its password (for logs and error detail). */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable redis url)';
  }
}

/**
 * The Redis grant store. It fails fast and closed: commands never wait in an offline queue (a
 * queued write could run after the caller was told it failed, leaving a grant without a token),
 * unfulfilled commands are never resent after a reconnect, and any Redis error is `Unavailable`.
 * The client reconnects for ever with a short capped backoff, so the service recovers by itself.
 */
export function createRedisGrantStore(opts: RedisGrantStoreOptions): RedisGrantStore {
  const prefix = opts.keyPrefix ?? 'jit:';
  if (/[{}]/.test(prefix)) throw new Error('grant store key prefix must not contain "{" or "}"');
  const commandTimeoutMs = opts.commandTimeoutMs ?? 1000;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 2000;
  const log = opts.log.child({ component: 'grant-store', redis: redactRedisUrl(opts.url) });

  const redis = new Redis(opts.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: commandTimeoutMs,
    connectTimeout: connectTimeoutMs,
    enableReadyCheck: true,
    // Reconnect for ever: 50 ms, 100 ms, ... capped at 1 s.
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 10), 1000),
    reconnectOnError: null,
  });
  redis.defineCommand('jitCreateGrant', { numberOfKeys: 5, lua: LUA_SCRIPTS.createGrant });
  redis.defineCommand('jitAppendAudit', { numberOfKeys: 1, lua: LUA_SCRIPTS.appendAudit });
  redis.defineCommand('jitPublishKey', { numberOfKeys: 1, lua: LUA_SCRIPTS.publishKey });

  // Connection state is logged on transitions only (ioredis emits an error per reconnect attempt).
  let healthy = true;
  let closed = false;
  redis.on('error', (err: Error) => {
    if (healthy) log.warn({ err: err.message }, 'grant store connection failed; reconnecting');
    healthy = false;
  });
  redis.on('close', () => {
    if (healthy && !closed) log.warn('grant store connection lost; reconnecting');
    healthy = false;
  });
  redis.on('ready', () => {
    if (!healthy) log.info('grant store connection restored');
    healthy = true;
  });
  redis.connect().catch(() => {
    /* reported by the 'error' listener; ioredis keeps reconnecting */
  });

  /** One shared wait per connection attempt, so concurrent callers add no listeners each. */
  let pendingReady: Promise<void> | undefined;

  /** Resolves when the connection is ready; during a (re)connect waits briefly, else fails now. */
  function ready(): Promise<void> {
    if (closed) return Promise.reject(new Unavailable(UNAVAILABLE, { detail: 'grant store is closed' }));
    const status = redis.status;
    if (status === 'ready') return Promise.resolve();
    if (status === 'wait') redis.connect().catch(() => undefined);
    if (status !== 'wait' && status !== 'connecting' && status !== 'connect') {
      return Promise.reject(new Unavailable(UNAVAILABLE, { detail: `redis connection is ${status}` }));
    }
    pendingReady ??= new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        redis.off('ready', onReady);
        redis.off('close', onClose);
        pendingReady = undefined;
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      const onClose = () => done(new Unavailable(UNAVAILABLE, { detail: 'redis connection closed while connecting' }));
      const timer = setTimeout(
        () => done(new Unavailable(UNAVAILABLE, { detail: `redis not ready after ${commandTimeoutMs} ms` })),
        commandTimeoutMs,
      );
      redis.once('ready', onReady);
      redis.once('close', onClose);
    });
    return pendingReady;
  }

  /** Runs `fn` against a ready connection; every Redis failure becomes Unavailable. */
  async function guarded<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      await ready();
      return await fn();
    } catch (e) {
      if (e instanceof BrokerError || e instanceof DuplicateGrantId) {
        if (e instanceof Unavailable) log.warn({ op, detail: e.detail }, UNAVAILABLE);
        throw e;
      }
      const message = e instanceof Error ? e.message : String(e);
      log.warn({ op, err: message }, UNAVAILABLE);
      throw new Unavailable(UNAVAILABLE, { detail: `${op}: ${message}`, cause: e });
    }
  }

  const keysOf = (workload: string) => grantKeys(prefix, workloadTag(workload));
  const workloadsKey = `${prefix}workloads`;
  /** When this instance last refreshed a workload's entry in the hint index (bounded memo). */
  const hinted = new Map<string, number>();
  const HINT_EVERY_MS = 60_000;
  const HINT_MEMO_MAX = 10_000;
  const publishedKeysKey = `${prefix}keys`;

  /** Fetches records by id in one pipeline; missing or undecodable ones are dropped. */
  async function fetchGrants(workload: string, ids: string[]): Promise<Grant[]> {
    if (ids.length === 0) return [];
    const keys = keysOf(workload);
    const pipe = redis.pipeline();
    for (const id of ids) pipe.hgetall(keys.grant(id));
    const replies = (await pipe.exec()) ?? [];
    const out: Grant[] = [];
    for (const [i, reply] of replies.entries()) {
      const [err, value] = reply;
      if (err) throw err;
      const h = value as Record<string, string>;
      if (Object.keys(h).length === 0) continue;
      const decoded = grantFromHash(h);
      if (decoded.ok) out.push(decoded.value);
      else log.error({ grant: ids[i], problem: decoded.problem }, 'grant record does not decode; ignored');
    }
    return out;
  }

  async function listIndex(workload: string, indexKey: string, o: ListOptions, taskFilter?: string): Promise<Grant[]> {
    const limit = listLimit(o.limit);
    if (o.liveOnly) {
      // The live set is bounded by the active cap; read it whole, then filter on the records.
      const keys = keysOf(workload);
      const ids = await redis.zrangebyscore(keys.live, `(${o.now}`, '+inf');
      const grants = await fetchGrants(workload, ids);
      return grants
        .filter((g) => isLive(g, o.now) && (taskFilter === undefined || g.task === taskFilter))
        .sort(newestFirst)
        .slice(0, limit);
    }
    const ids = await redis.zrevrange(indexKey, 0, limit - 1);
    const grants = await fetchGrants(workload, ids);
    return grants.sort(newestFirst);
  }

  const store: RedisGrantStore = {
    kind: 'redis',
    redis,

    async createGrant(input: NewGrant, options: CreateGrantOptions): Promise<Grant> {
      const { grant, opts: o } = validateNewGrant(input, options);
      const keys = keysOf(grant.workload);
      const hash = grantToHash(grant);
      const hashArgs = Object.entries(hash).flat();
      const issued = auditToFields({
        type: 'grant.issued',
        at: o.now,
        workload: grant.workload,
        grant: grant.id,
        rule: grant.rule,
        audience: grant.audience,
        actions: grant.actions,
        task: grant.task,
      });
      const denied = auditToFields({
        type: 'grant.denied',
        at: o.now,
        workload: grant.workload,
        rule: grant.rule,
        reason: CAP_DENIAL_REASON,
        audience: grant.audience,
        actions: grant.actions,
        task: grant.task,
      });
      return guarded('createGrant', async () => {
        // Operators' hint index of workloads, outside the atomic script on purpose: it lives in
        // its own slot, and a cluster cannot run one script across slots. Written first, so every
        // workload that has grants is listed; a listed workload without grants is harmless.
        // Sent without waiting: one connection keeps the order, so this costs no extra round trip.
        // Refreshed at most once a minute per workload per instance: the index only has to say
        // which workloads had grants within the retention window, not when exactly.
        let hint: Promise<unknown> = Promise.resolve();
        const last = hinted.get(grant.workload);
        if (last === undefined || o.now - last >= HINT_EVERY_MS || o.now < last) {
          if (hinted.size >= HINT_MEMO_MAX) hinted.clear();
          hinted.set(grant.workload, o.now);
          hint = redis
            .multi()
            .zadd(workloadsKey, o.now, grant.workload)
            .zremrangebyscore(workloadsKey, '-inf', `(${o.now - o.retentionMs}`)
            .exec()
            .catch((e: unknown) => {
              hinted.delete(grant.workload); // try again next time
              throw e;
            });
          hint.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
        }
        const script = redis.jitCreateGrant(
          keys.grant(grant.id),
          keys.live,
          keys.all,
          keys.task(grant.task),
          keys.audit,
          o.now,
          o.maxActive,
          o.retentionMs,
          grant.id,
          grant.created_at,
          grant.expires_at,
          AUDIT_MAXLEN,
          hashArgs.length,
          issued.length,
          ...hashArgs,
          ...issued,
          ...denied,
        );
        const [reply] = await Promise.all([script, hint]);
        const [status, count, earliest] = reply;
        if (status === 'ok') return grant;
        if (status === 'dup') throw new DuplicateGrantId(grant.id);
        if (status === 'cap') {
          const first = earliest === undefined || earliest === '' ? undefined : Number(earliest);
          throw capExceeded(grant.workload, Number(count), o.maxActive, o.now, first);
        }
        throw new Error(`unexpected create-grant reply ${JSON.stringify(reply)}`);
      });
    },

    async getGrant(id: string): Promise<Grant | null> {
      const tag = tagOfGrantId(id);
      if (tag === undefined) return null;
      return guarded('getGrant', async () => {
        const h = await redis.hgetall(grantKeys(prefix, tag).grant(id));
        if (Object.keys(h).length === 0) return null;
        const decoded = grantFromHash(h);
        if (!decoded.ok) {
          log.error({ grant: id, problem: decoded.problem }, 'grant record does not decode; treated as absent');
          return null;
        }
        // A record only answers for its own id (and so its own slot).
        return decoded.value.id === id ? decoded.value : null;
      });
    },

    listWorkloadGrants(workload: string, o: ListOptions): Promise<Grant[]> {
      return guarded('listWorkloadGrants', () => listIndex(workload, keysOf(workload).all, o));
    },

    listTaskGrants(workload: string, task: string, o: ListOptions): Promise<Grant[]> {
      return guarded('listTaskGrants', () => listIndex(workload, keysOf(workload).task(task), o, task));
    },

    async appendAudit(event: AuditEvent, o: { retentionMs: number }): Promise<void> {
      const e = validateAudit(event);
      const retention = validateRetention(o);
      await guarded('appendAudit', async () => {
        await redis.jitAppendAudit(keysOf(e.workload).audit, retention, AUDIT_MAXLEN, ...auditToFields(e));
      });
    },

    async readAudit(workload: string, o: { limit?: number } = {}): Promise<AuditEvent[]> {
      const limit = auditLimit(o.limit);
      return guarded('readAudit', async () => {
        const entries = await redis.xrange(keysOf(workload).audit, '-', '+', 'COUNT', limit);
        const out: AuditEvent[] = [];
        for (const [id, fields] of entries) {
          const decoded = auditFromFields(id, fields);
          if (decoded.ok) out.push(decoded.value);
          else log.error({ entry: id, problem: decoded.problem }, 'audit entry does not decode; skipped');
        }
        return out;
      });
    },

    async publishKey(key: PublishedKey): Promise<void> {
      const k = validatePublishedKey(key);
      // The hash outlives its longest-lived key by a margin, so a fleet that stops publishing
      // leaves nothing behind for ever (Date.now: publishKey is given no clock).
      const ttl = Math.max(60_000, k.expires_at - Date.now() + 60_000);
      await guarded('publishKey', async () => {
        await redis.jitPublishKey(publishedKeysKey, k.kid, JSON.stringify(k), ttl);
      });
    },

    async publishedKeys(now: number): Promise<PublishedKey[]> {
      return guarded('publishedKeys', async () => {
        const all = await redis.hgetall(publishedKeysKey);
        const out: PublishedKey[] = [];
        const purge: string[] = [];
        for (const [kid, json] of Object.entries(all)) {
          const decoded = decodePublishedKey(json);
          if (!decoded.ok) {
            if (holdsPrivateMaterial(json)) {
              log.error({ kid }, 'published key holds private key material; removed');
              purge.push(kid);
            } else {
              log.error({ kid, problem: decoded.problem }, 'published key does not decode; ignored');
            }
            continue;
          }
          if (decoded.value.expires_at <= now) purge.push(kid);
          else out.push(decoded.value);
        }
        if (purge.length > 0) await redis.hdel(publishedKeysKey, ...purge);
        return out;
      });
    },

    async ping(): Promise<void> {
      await guarded('ping', async () => {
        await redis.ping();
      });
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      try {
        if (redis.status === 'ready') await redis.quit();
        else redis.disconnect();
      } catch {
        redis.disconnect();
      }
    },
  };
  return store;
}
