import { readFileSync } from 'node:fs';
import type { Result } from 'ioredis';
import { BrokerError, InvalidRequest, OutcomeUnknown, Unavailable, UnreadableGrant } from '../errors.js';
import type { Logger } from '../log.js';
import type { StoreMetrics } from '../metrics.js';
import { clip } from '../util/text.js';
import {
  DENIAL_STREAM_MAXLEN,
  UNMATCHED_PARTITIONS,
  UNMATCHED_PARTITION_MAXLEN,
  REPLAY_REASON,
  byEntryId,
  clipDenial,
  qualifiedId,
  deniedWorkload,
  unmatchedPartition,
  DuplicateGrantId,
  closeEventType,
  rateExceeded,
  validateClose,
  validateRenewal,
  auditFromFields,
  auditLimit,
  AUDIT_LIMIT_MAX,
  auditToFields,
  capExceeded,
  decodePublishedKey,
  encodePublishedKey,
  grantFromRecord,
  grantToRecord,
  holdsPrivateMaterial,
  isLive,
  listLimit,
  newestFirst,
  validateAudit,
  validateNewGrant,
  validatePublishedKey,
  validateRetention,
  OPERATOR_READS_MAXLEN,
  operatorEventFromFields,
  operatorEventToFields,
  validateOperatorEvent,
  GLOBAL_INDEX_SHARDS,
  decodeRevokedKey,
  validateRevokedKey,
  LIST_LIMIT_MAX,
  globalShard,
  isAfter,
} from './codec.js';
import { grantKeys, tagOfGrantId, usedProofDigest, workloadTag } from './ids.js';
import { connectRedis, describeRedis, nodesConnecting, type RedisClient, type RedisConnectionSpec } from './redis-connection.js';

export { redactRedisUrl } from './redis-connection.js';
import { redisAuditLog, validateKeyEvent, type AuditLogQuery, type KeyEvent } from './audit-log.js';
import { shardBatches } from './shard-batches.js';
import { NotReplicated, requireReplicas, runGrantWrite, untilReplicated, type Replication } from './replication.js';
import { checkPublicationSecrets, isAuthenticKey, isAuthenticRevocation, publishedKeyMac, revokedKeyMac } from './key-publication.js';
import {
  NOT_DELIVERED_REASON,
  type AppendAuditOptions,
  type AuditEvent,
  type CloseOptions,
  type CloseOutcome,
  type CloseStatus,
  type CreateGrantOptions,
  type Grant,
  type GrantStore,
  type ListOptions,
  type NewGrant,
  type IndexPosition,
  type WalkOptions,
  type WalkResult,
  type WorkloadSummary,
  type OperatorEvent,
  type RevokedKey,
  type PublishedKey,
  type RateLimit,
  type RenewGrant,
  type RenewOptions,
  type RenewOutcome,
  type VoidOutcome,
} from './store.js';

/**
 * The Lua scripts, read once at module load. They live next to this file in `lua/`; the build
 * must copy `src/grants/lua/*.lua` to `dist/grants/lua/` (tsc does not copy them).
 */
const lua = (name: string) => readFileSync(new URL(`./lua/${name}`, import.meta.url), 'utf8');
/**
 * Shared helpers (lib.lua), prepended to the scripts that change grants. A script's flags line
 * (`#!lua flags=...`, Redis 7) must stay its first line, so it is hoisted above the helpers.
 */
const withLib = (name: string, flags?: string) => {
  const source = lua(name);
  const shebang = flags ?? /^#![^\n]*/.exec(source)?.[0];
  const body = source.startsWith('#!') ? source.slice(source.indexOf('\n') + 1) : source;
  return `${shebang ? `${shebang}\n` : ''}${lua('lib.lua')}\n${body}`;
};

/**
 * Every script starts with a flags line (`#!lua`, Redis 7): on a Cluster, Redis then refuses any
 * key a script reaches outside the slot of the keys it declares (a script without one may cross
 * slots, for compatibility), so the one-slot discipline is enforced, not only followed.
 */
export const LUA_SCRIPTS = {
  createGrant: withLib('create-grant.lua'),
  renewGrant: withLib('renew-grant.lua'),
  /** renew-grant.lua run only to revoke a replay, allowed out of memory (see the script). */
  revokeReplay: withLib('renew-grant.lua', '#!lua flags=allow-oom'),
  closeGrant: withLib('close-grant.lua'),
  appendAudit: lua('append-audit.lua'),
  appendShard: lua('append-shard.lua'),
  publishKey: lua('publish-key.lua'),
  readGrants: withLib('read-grants.lua'),
  indexGrants: lua('index-grants.lua'),
} as const;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    jitCreateGrant(...args: (string | number)[]): Result<(string | number)[], Context>;
    /** {outcome} or {outcome, grant record} or {'rate', wait_ms}. */
    jitRenewGrant(...args: (string | number)[]): Result<(string | number)[], Context>;
    jitRevokeReplay(...args: (string | number)[]): Result<(string | number)[], Context>;
    jitCloseGrant(...args: (string | number)[]): Result<string[], Context>;
    jitAppendAudit(...args: (string | number)[]): Result<string, Context>;
    /** The global audit log's shard copies (grants/audit-log.ts): entries added. */
    jitAppendShard(...args: (string | number)[]): Result<number, Context>;
    jitPublishKey(...args: (string | number)[]): Result<number, Context>;
    /** numkeys, then keys and args (the key count varies with the page). */
    jitReadGrants(...args: (string | number)[]): Result<string[], Context>;
    /** One shard of the global index: grants added. */
    jitIndexGrants(...args: (string | number)[]): Result<number, Context>;
  }
}

export interface RedisGrantStoreOptions {
  /** Which Redis, and how to reach it (redis-connection.ts; from config: redisConnectionFromConfig). */
  connection?: RedisConnectionSpec;
  /** Shorthand for one server: `{ target: { kind: 'standalone', url } }`. */
  url?: string;
  /** Prefix of every key; default "jit:". Must not contain a hash tag brace. */
  keyPrefix?: string;
  /** A command without a reply after this long fails (503). Default 1000 ms. */
  commandTimeoutMs?: number;
  /** TCP connect timeout. Default 2000 ms. */
  connectTimeoutMs?: number;
  /**
   * Secrets shared by every broker instance, never stored in Redis: the first authenticates the
   * keys this instance publishes, any of them a published key it reads (two during a rotation).
   * Required: a key in Redis that none authenticates is ignored.
   */
  keyPublicationSecrets: readonly string[];
  log: Logger;
  /**
   * Copy each workload event to its shard of the global audit log (grants/audit-log.ts). Default
   * true; false only for the bench's A/B of what the copy costs a task start.
   */
  globalAuditLog?: boolean;
  /** Denial copies kept per shard of the global audit log (default DENIAL_SHARD_MAXLEN; tests lower it). */
  denialShardMaxlen?: number;
  /**
   * Write each new grant to the global newest-first index (operators' queries without a
   * workload, and the kill switch by anything but a workload). Default true; off only for the
   * bench's A/B of what it adds to a task start.
   */
  globalIndex?: boolean;
  /** Counts Redis failures and records that do not decode (metrics.ts). */
  metrics?: StoreMetrics;
  /** WAIT for this many replicas after every grant write (replication.ts); none when absent. */
  replication?: Replication;
}

export type RedisGrantStore = GrantStore & { readonly kind: 'redis'; readonly redis: RedisClient };

const UNAVAILABLE = 'grant store is unavailable';
/**
 * How long the audit stream outlives a closing event at least. The stream already lives past the
 * grant's own end plus retention (create-grant.lua); this floor only matters for old streams.
 */
const CLOSE_RETENTION_MS = 60 * 60_000;
/** How long a void marker bars a late create: far longer than any command can be in flight. */
const VOID_MARKER_TTL_MS = 10 * 60_000;

/** Redis refused a command (or a script's write) because it is at maxmemory. */
const isOutOfMemory = (e: unknown): boolean => e instanceof Error && /^OOM\b/.test(e.message);
/** A command that got no reply in time (ours, or ioredis's own commandTimeout). */
const isTimeout = (e: unknown): boolean => e instanceof Error && /^no reply within|Command timed out/.test(e.message);
/** Index of the new jti in jitRenewGrant's arguments (4 keys, then now, workload, presented jti). */
const RENEW_NEW_JTI_ARG = 7;

/** Script arguments of a rate limit: burst (0: unlimited) and ms per token. */
const rateArgs = (rate: RateLimit | undefined): [number, number] => [rate?.burst ?? 0, rate?.intervalMs ?? 1];

/**
 * The Redis grant store, on one server, a Sentinel group or a Cluster alike (redis-connection.ts).
 * It fails fast and closed: commands never wait in an offline queue (a queued write could run
 * after the caller was told it failed, leaving a grant without a token), unfulfilled commands are
 * never resent, and any Redis error is `Unavailable`. The client reconnects for ever with a short
 * capped backoff, so the service recovers by itself.
 */
export function createRedisGrantStore(opts: RedisGrantStoreOptions): RedisGrantStore {
  const prefix = opts.keyPrefix ?? 'jit:';
  if (/[{}]/.test(prefix)) throw new Error('grant store key prefix must not contain "{" or "}"');
  const secrets = checkPublicationSecrets(opts.keyPublicationSecrets);
  const commandTimeoutMs = opts.commandTimeoutMs ?? 1000;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 2000;
  const connection = opts.connection ?? (opts.url !== undefined ? { target: { kind: 'standalone' as const, url: opts.url } } : undefined);
  if (!connection) throw new Error('grant store needs a Redis connection (or url)');
  const log = opts.log.child({ component: 'grant-store', redis: describeRedis(connection) });
  const metrics = opts.metrics;
  const replication = opts.replication && opts.replication.minReplicas > 0 ? opts.replication : undefined;

  const redis = connectRedis(connection, { commandTimeoutMs, connectTimeoutMs, reconnect: true, keyCountFirst: ['jitReadGrants'] });
  redis.defineCommand('jitCreateGrant', { numberOfKeys: 6, lua: LUA_SCRIPTS.createGrant });
  redis.defineCommand('jitRenewGrant', { numberOfKeys: 4, lua: LUA_SCRIPTS.renewGrant });
  redis.defineCommand('jitRevokeReplay', { numberOfKeys: 4, lua: LUA_SCRIPTS.revokeReplay });
  redis.defineCommand('jitCloseGrant', { numberOfKeys: 4, lua: LUA_SCRIPTS.closeGrant });
  redis.defineCommand('jitAppendAudit', { numberOfKeys: 1, lua: LUA_SCRIPTS.appendAudit });
  redis.defineCommand('jitAppendShard', { numberOfKeys: 1, lua: LUA_SCRIPTS.appendShard });
  redis.defineCommand('jitPublishKey', { numberOfKeys: 1, lua: LUA_SCRIPTS.publishKey });
  redis.defineCommand('jitReadGrants', { lua: LUA_SCRIPTS.readGrants });
  redis.defineCommand('jitIndexGrants', { numberOfKeys: 1, lua: LUA_SCRIPTS.indexGrants });

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
    if (status === 'ready') return nodesReady();
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
    return pendingReady.then(nodesReady);
  }

  /**
   * A Cluster's node connections still being made for the first time: waited for, within the
   * command timeout (then the command goes out, and fails on its own if its node is not there).
   */
  function nodesReady(): Promise<void> {
    const connecting = nodesConnecting(redis);
    if (!connecting) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, commandTimeoutMs);
      void connecting.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * Runs `fn` against a ready connection; every Redis failure becomes Unavailable. For a `write`,
   * a failure once the command may have been sent is OutcomeUnknown: it may still have happened.
   */
  async function guarded<T>(op: string, fn: () => Promise<T>, o: { write?: boolean; oneCommand?: boolean } = {}): Promise<T> {
    let sent = false;
    try {
      await ready();
      sent = true;
      // A grant write waits for its replicas too (replication.ts): its bound includes the WAIT.
      return await (o.write || o.oneCommand ? withinCommandTimeout(fn(), o.write ? (replication?.timeoutMs ?? 0) : 0) : fn());
    } catch (e) {
      if (e instanceof BrokerError || e instanceof DuplicateGrantId) {
        if (e instanceof Unavailable) {
          log.warn({ op, detail: e.detail }, UNAVAILABLE);
          metrics?.redisFailure('error'); // not connected: nothing was sent
        }
        throw e;
      }
      const message = e instanceof Error ? e.message : String(e);
      metrics?.redisFailure(isTimeout(e) ? 'timeout' : 'error');
      log.warn({ op, err: message }, UNAVAILABLE);
      // Refused for memory: Redis ran nothing (no grant to void later), so the outcome is known.
      const Failure = o.write && sent && !isOutOfMemory(e) ? OutcomeUnknown : Unavailable;
      throw new Failure(UNAVAILABLE, { detail: `${op}: ${message}`, cause: e });
    }
  }

  /**
   * The reply of a one-command operation within commandTimeout of the call. ioredis starts a
   * command's own timeout when it is written, and an auto-pipelined command can wait behind the
   * batch in flight: without this, a paused Redis answered 503 only after twice the timeout.
   */
  function withinCommandTimeout<T>(reply: Promise<T>, extraMs = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply within ${commandTimeoutMs + extraMs} ms`)), commandTimeoutMs + extraMs);
      reply.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  const keysOf = (workload: string) => grantKeys(prefix, workloadTag(workload));
  const workloadsKey = `${prefix}workloads`;
  /** The unmatched-denial partitions (codec.ts unmatchedPartition picks one by source). */
  const unmatchedKeys = Array.from({ length: UNMATCHED_PARTITIONS }, (_, p) => `${prefix}audit:unmatched:${p}`);
  /** When this instance last refreshed a workload's entry in the hint index (bounded memo). */
  const hinted = new Map<string, number>();
  const HINT_EVERY_MS = 60_000;
  const HINT_MEMO_MAX = 10_000;
  const publishedKeysKey = `${prefix}keys`;
  const globalIndex = opts.globalIndex ?? true;
  /** Authenticated revocation marks of signing keys: kid → JSON with its MAC. */
  const revokedKeysKey = `${prefix}keys:revoked`;
  /** The global index's shards, each in a slot of its own (see globalShard). */
  const shardKeys = Array.from({ length: GLOBAL_INDEX_SHARDS }, (_, n) => `${prefix}{gi:${n}}:grants`);
  /** The operators' audit streams: their changes (trimmed by age only) and their reads (capped). */
  const operatorAuditKey = `${prefix}audit:operator`;
  const operatorReadsKey = `${prefix}audit:operator:reads`;
  /** Off-path writes to shard keys (audit shard copies, global index entries), sent together. */
  const batches = shardBatches();
  /** The merged operators' event log: shard copies of workload events, keys and operator streams. */
  const auditLog = redisAuditLog(redis, prefix, log, opts.globalAuditLog ?? true, opts.denialShardMaxlen, batches);
  /** Kids of unauthenticated published keys already logged (bounded): one line each, not one per read. */
  const unauthenticLogged = new Set<string>();

  /** A record that is there but does not decode: logged with its grant id, and an error (never "no grant"). */
  function unreadable(id: string, problem: string): UnreadableGrant {
    log.error({ grant: id, problem }, 'grant record does not decode');
    metrics?.undecodable('grant');
    return new UnreadableGrant(id, problem);
  }

  /**
   * The record, if it answers for its own id (and, when given, this workload); throws
   * UnreadableGrant when it does not decode. Another workload's record can only sit under this
   * workload's keys if their tags collide (or someone wrote it there): never returned.
   */
  function ownRecord(id: string, record: string, workload?: string): Grant | undefined {
    const decoded = grantFromRecord(id, record);
    if (!decoded.ok) throw unreadable(id, decoded.problem);
    if (tagOfGrantId(id) !== workloadTag(decoded.value.workload) || (workload !== undefined && decoded.value.workload !== workload)) {
      log.error({ grant: id }, 'grant record under these keys is not their own; ignored');
      return undefined;
    }
    return decoded.value;
  }

  /** Stream entries as audit events (ids qualified by `stream`); entries that do not decode are logged and skipped. */
  function decodeAudit(entries: [string, string[]][], stream = ''): AuditEvent[] {
    const out: AuditEvent[] = [];
    for (const [id, fields] of entries) {
      const decoded = auditFromFields(qualifiedId(id, stream), fields);
      if (decoded.ok) out.push(decoded.value);
      else {
        log.error({ entry: id, problem: decoded.problem }, 'audit entry does not decode; skipped');
        metrics?.undecodable('audit');
      }
    }
    return out;
  }

  /**
   * Up to `max` of this workload's records among `ids` (index order), in one round trip. The
   * script drops from `indexKey` the ids whose records are gone, so reads prune the index too.
   */
  async function readRecords(workload: string, indexKey: string, ids: string[], max: number, prune: boolean): Promise<Grant[]> {
    if (ids.length === 0) return [];
    const grantKey = keysOf(workload).grant;
    const reply = await redis.jitReadGrants(1 + ids.length, indexKey, ...ids.map(grantKey), workload, max, prune ? '1' : '0', ...ids);
    const out: Grant[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) {
      const [id, record] = [reply[i] as string, reply[i + 1] as string];
      // A listing skips an unreadable record (it is logged): one bad record must not hide the rest.
      if (record === '') {
        unreadable(id, 'read-grants.lua could not decode it');
        continue;
      }
      try {
        const g = ownRecord(id, record, workload);
        if (g) out.push(g);
      } catch (e) {
        if (!(e instanceof UnreadableGrant)) throw e;
      }
    }
    return out;
  }

  /** Ids read per round trip when a listing walks a workload's whole index (by task). */
  const WALK_PAGE = 256;
  /** A listing by task looks at the workload's latest 10,240 grants at most (40 round trips). */
  const WALK_MAX = 40 * WALK_PAGE;

  async function listIndex(workload: string, o: ListOptions, task?: string): Promise<Grant[]> {
    const limit = listLimit(o.limit);
    const keys = keysOf(workload);
    const ofTask = (g: Grant) => task === undefined || g.task === task;
    if (o.liveOnly) {
      // The live set is bounded by the active cap; read it whole, then filter on the records.
      const ids = await redis.zrangebyscore(keys.live, `(${o.now}`, '+inf');
      const grants = await readRecords(workload, keys.live, ids, ids.length, false); // the cap's index: see read-grants.lua
      return grants
        .filter((g) => isLive(g, o.now) && ofTask(g))
        .sort(newestFirst)
        .slice(0, limit);
    }
    if (task === undefined) {
      // Twice the page's ids, so ids whose records are gone (pruned as they are met) do not cut
      // the page short; a read that meets more than that many leaves fewer for the next one.
      const ids = await redis.zrevrange(keys.all, 0, 2 * limit - 1);
      return (await readRecords(workload, keys.all, ids, limit, true)).sort(newestFirst);
    }
    // By task there is no index of its own (it cost more memory than the grant): walk the
    // workload's grants newest first, at most WALK_MAX of them, without pruning (that would shift
    // the ranks under the walk). A grant created meanwhile shifts the ranks too: ids seen twice count once.
    const found = new Map<string, Grant>();
    for (let start = 0; found.size < limit && start < WALK_MAX; start += WALK_PAGE) {
      const ids = await redis.zrevrange(keys.all, start, start + WALK_PAGE - 1);
      if (ids.length === 0) break;
      for (const g of await readRecords(workload, keys.all, ids, ids.length, false)) if (ofTask(g)) found.set(g.id, g);
    }
    return [...found.values()].sort(newestFirst).slice(0, limit);
  }

  /**
   * Refreshes the workload's entry in the operators' hint index, best effort: it is never
   * awaited, and a failure is logged and forgotten by the memo so the next grant retries it.
   */
  /**
   * SET NX PX: true the first time a key is set within its ttl. A write: a reply lost after sending
   * may have recorded it, and then the value is spent (fail closed).
   */
  async function setOnce(op: string, key: string, ttlMs: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(ttlMs));
    return guarded(op, async () => (await redis.set(key, '1', 'PX', ttl, 'NX')) === 'OK', { write: true });
  }

  function refreshWorkloadHint(workload: string, now: number, retentionMs: number): void {
    const last = hinted.get(workload);
    if (last !== undefined && now - last < HINT_EVERY_MS && now >= last) return;
    if (hinted.size >= HINT_MEMO_MAX) hinted.clear();
    hinted.set(workload, now);
    const failed = (err: unknown) => {
      hinted.delete(workload);
      const message = err instanceof Error ? err.message : String(err);
      log.warn({ op: 'workloadsHint', err: message }, 'workloads hint index not updated; retried on the next grant');
    };
    redis
      .multi()
      .zadd(workloadsKey, now, workload)
      .zremrangebyscore(workloadsKey, '-inf', `(${now - retentionMs}`)
      .exec()
      // EXEC answers errors of queued commands (e.g. WRONGTYPE) as replies, not as a rejection.
      .then((replies) => {
        const err = replies?.find(([e]) => e)?.[0];
        if (err) failed(err);
      }, failed);
  }

  /** A grant for the global index, with how far back its write prunes and how long its shard must live at least. */
  type IndexEntry = { grant: Grant; pruneBefore: number; ttl: number };
  /** One shard's pending entries: the batch prunes as far as its latest entry, and keeps the shard as long as its longest. */
  type IndexBatch = { grants: Grant[]; pruneBefore: number; ttl: number };

  /**
   * Adds written grants to their shard of the global index, after their atomic creates (which
   * cannot touch another slot): queued with the audit shard copies (shard-batches.ts), one script
   * call per shard and batch, never awaited by the task start. A batch is retried once; a grant it
   * still could not index is logged by id at error level (it stays in its workload's own index
   * and audit stream, and queries by workload find it), never silently lost.
   */
  const indexGlobally = batches.kind<IndexEntry, IndexBatch>({
    open: (e) => ({ grants: [e.grant], pruneBefore: e.pruneBefore, ttl: e.ttl }),
    add(b, e) {
      b.grants.push(e.grant);
      b.pruneBefore = Math.max(b.pruneBefore, e.pruneBefore);
      b.ttl = Math.max(b.ttl, e.ttl);
    },
    send: (key, b) => sendIndexBatch(key, b, 1),
  });

  function sendIndexBatch(key: string, b: IndexBatch, attempt: number): Promise<void> {
    const entries = b.grants.flatMap((g) => [g.created_at, g.id]);
    return redis.jitIndexGrants(key, Math.max(0, Math.floor(b.pruneBefore)), Math.ceil(b.ttl), ...entries).then(
      () => undefined,
      (e: unknown) => {
        if (attempt < 2) {
          setTimeout(() => void sendIndexBatch(key, b, attempt + 1), 100).unref();
          return;
        }
        const err = e instanceof Error ? e.message : String(e);
        for (const g of b.grants) {
          log.error({ op: 'globalIndex', grant: g.id, workload: g.workload, err }, 'grant not added to the global index: operator queries without a workload will not list it (its workload index and audit stream have it)');
        }
      },
    );
  }

  /**
   * Newest-first entries of one zset after a position, `n` at most, and whether more may follow.
   * Entries at the position's own score that come before it are a prefix of the reply: paged past.
   */
  async function entriesAfter(key: string, pos: IndexPosition | undefined, n: number, floor: number): Promise<{ entries: IndexPosition[]; more: boolean }> {
    const max = pos === undefined ? '+inf' : String(pos.score);
    let offset = 0;
    for (;;) {
      const reply = await redis.zrevrangebyscore(key, max, String(floor), 'WITHSCORES', 'LIMIT', offset, n);
      const entries: IndexPosition[] = [];
      for (let i = 0; i + 1 < reply.length; i += 2) {
        const e = { id: reply[i]!, score: Number(reply[i + 1]) };
        if (pos === undefined || isAfter(e, pos)) entries.push(e);
      }
      const more = reply.length === 2 * n;
      if (entries.length > 0 || !more) return { entries, more };
      offset += n;
    }
  }

  /**
   * The walk: the index's shards (one, for a workload) merged newest first, records read in
   * batches (one round trip each: a Lua read for a workload's own slot, pipelined GETs across
   * slots), filtered, and stopped at `want` matches or `maxExamined` entries.
   */
  async function walk(o: WalkOptions): Promise<WalkResult> {
    const keys = o.workload === undefined ? shardKeys : [keysOf(o.workload).all];
    const floor = Math.max(o.since ?? 0, o.now - o.retentionMs);
    let start = o.after;
    if (o.until !== undefined && (start === undefined || start.score > o.until)) start = { score: o.until, id: '\x7f' };
    // This instance's pending index entries first (read-your-writes). Pruned by retention on
    // read too (a shard nobody writes to any more still shrinks).
    if (o.workload === undefined) {
      await batches.flush();
      await Promise.all(keys.map((k) => redis.zremrangebyscore(k, '-inf', `(${o.now - o.retentionMs}`)));
    }
    const chunk = Math.min(256, Math.max(16, Math.ceil(Math.min(o.want, o.maxExamined) / keys.length) + 8));
    const shards = keys.map((key) => ({ key, pos: start, buf: [] as IndexPosition[], done: false }));
    const grants: Grant[] = [];
    let examined = 0;
    let last: IndexPosition | undefined = start;
    const match = o.match ?? (() => true);
    while (grants.length < o.want && examined < o.maxExamined) {
      await Promise.all(
        shards
          .filter((sh) => !sh.done && sh.buf.length === 0)
          .map(async (sh) => {
            const { entries, more } = await entriesAfter(sh.key, sh.pos, chunk, floor);
            sh.buf = entries;
            sh.done = !more;
          }),
      );
      // Take entries newest first while every shard that may hold newer ones has some buffered.
      const batch: { e: IndexPosition; key: string }[] = [];
      while (batch.length < o.maxExamined - examined) {
        let best: (typeof shards)[number] | undefined;
        for (const sh of shards) if (sh.buf.length > 0 && (!best || isAfter(best.buf[0]!, sh.buf[0]!))) best = sh;
        if (!best) break;
        const e = best.buf.shift()!;
        best.pos = e;
        batch.push({ e, key: best.key });
        if (best.buf.length === 0 && !best.done) break;
      }
      if (batch.length === 0) break;
      const records = await readIndexed(o.workload, batch);
      for (let i = 0; i < batch.length; i++) {
        const { e } = batch[i]!;
        examined++;
        last = e;
        const g = records[i];
        if (g && match(g)) grants.push(g);
        if (grants.length >= o.want || examined >= o.maxExamined) {
          // The rest of this batch is read again by the next call: nothing is skipped. When this
          // was the index's very last entry, there is no next call to make.
          const exhausted = i === batch.length - 1 && shards.every((sh) => sh.done && sh.buf.length === 0);
          return { grants, ...(exhausted ? {} : { next: last }), examined };
        }
      }
    }
    const exhausted = shards.every((sh) => sh.done && sh.buf.length === 0);
    return { grants, ...(exhausted || last === undefined ? {} : { next: last }), examined };
  }

  /** The records of walked entries (undefined where gone, unreadable or another workload's); gone ones leave their index. */
  async function readIndexed(workload: string | undefined, batch: { e: IndexPosition; key: string }[]): Promise<(Grant | undefined)[]> {
    if (workload !== undefined) {
      const ids = batch.map((b) => b.e.id);
      const found = new Map((await readRecords(workload, keysOf(workload).all, ids, ids.length, true)).map((g) => [g.id, g]));
      return ids.map((id) => found.get(id));
    }
    const raws = await Promise.all(
      batch.map(({ e }) => {
        const tag = tagOfGrantId(e.id);
        if (tag === undefined) return Promise.resolve(null);
        return redis.get(grantKeys(prefix, tag).grant(e.id)).catch((err: unknown) => {
          // Another type under the record's key: there, but no record (as getGrant says).
          if (err instanceof Error && err.message.startsWith('WRONGTYPE')) return undefined;
          throw err;
        });
      }),
    );
    const gone = new Map<string, string[]>();
    const out = batch.map(({ e, key }, i) => {
      const raw = raws[i];
      if (raw === null) {
        gone.set(key, [...(gone.get(key) ?? []), e.id]);
        return undefined;
      }
      if (raw === undefined) {
        log.error({ grant: e.id }, 'grant record could not be read (another type?); skipped');
        return undefined;
      }
      try {
        return ownRecord(e.id, raw);
      } catch (err) {
        if (err instanceof UnreadableGrant) return undefined;
        throw err;
      }
    });
    if (gone.size > 0) await Promise.all([...gone].map(([key, ids]) => redis.zrem(key, ...ids)));
    return out;
  }

  /** Kids of unauthentic revocation marks already logged (bounded). */
  const unauthenticMarksLogged = new Set<string>();

  /** The revocation marks one of our secrets authenticates (others: logged once, ignored). */
  async function authenticRevocations(now: number): Promise<RevokedKey[]> {
    const all = await redis.hgetall(revokedKeysKey);
    const out: RevokedKey[] = [];
    for (const [kid, json] of Object.entries(all)) {
      const decoded = decodeRevokedKey(json);
      if (decoded.ok && decoded.value.mark.kid === kid && isAuthenticRevocation(decoded.value.mark, decoded.value.mac, secrets)) {
        if (decoded.value.mark.until > now) out.push(decoded.value.mark);
        continue;
      }
      if (!unauthenticMarksLogged.has(kid)) {
        if (unauthenticMarksLogged.size >= 1000) unauthenticMarksLogged.clear();
        unauthenticMarksLogged.add(kid);
        log.error({ kid: clip(kid, 64) }, 'key revocation mark is not authenticated by the key publication secret; ignored');
      }
    }
    return out;
  }

  /** Runs close-grant.lua: ends or revokes a live grant (or, with markTtl, bars a missing one). */
  async function close(op: string, id: string, workload: string, now: number, status: CloseStatus, event: AuditEvent, o: { markTtl?: number; presentedJti?: string; by?: string; retryWindowMs?: number }) {
    const keys = keysOf(workload);
    const closing = auditToFields(event);
    const replay = auditToFields({ type: 'grant.replay_detected', at: now, workload, grant: id, reason: REPLAY_REASON });
    type Closed = ['closed' | 'inactive' | 'replay', Grant] | ['marked' | 'unknown', undefined];
    // Retried while its WAIT comes short: an acknowledged end or revocation is on the replicas.
    return untilReplicated(log, id, () => guarded(op, async (): Promise<Closed> => {
      const { reply: answer, replicas } = await runGrantWrite(redis, replication, 'jitCloseGrant', [
        keys.grant(id),
        keys.live,
        keys.audit,
        keys.voided(id),
        now,
        workload,
        status,
        o.markTtl ?? 0,
        0, // no trim: closing is not told the retention (create and renew trim by age)
        CLOSE_RETENTION_MS,
        o.presentedJti ?? '',
        id,
        o.by ?? '',
        closing.length,
        o.retryWindowMs ?? 0,
        ...closing,
        ...replay,
      ]);
      const reply = answer as string[];
      const [outcome, payload, lost] = reply;
      if (lost !== undefined) auditLost(op, id, outcome, lost);
      // Closing is not told the retention: its copies trim nothing (create and renew trim).
      if (outcome === 'closed') auditLog.copyToShard(workload, closing, now, undefined);
      else if (outcome === 'replay') auditLog.copyToShard(workload, replay, now, undefined);
      if (outcome === 'marked' || outcome === 'unknown') {
        requireReplicas(replication, replicas, op, [outcome, undefined]);
        return [outcome, undefined];
      }
      if (outcome === 'unreadable') throw unreadable(id, 'close-grant.lua could not decode it; nothing changed');
      if ((outcome === 'closed' || outcome === 'inactive' || outcome === 'replay') && typeof payload === 'string') {
        const grant = ownRecord(id, payload, workload);
        if (grant) {
          requireReplicas(replication, replicas, op, [outcome, grant]);
          return [outcome, grant];
        }
      }
      throw new Error(`unexpected close-grant reply ${JSON.stringify(reply)}`);
    }, { write: true }));
  }

  /**
   * A task start or renewal the replicas did not confirm: its token is never answered, and the
   * grant is voided (closed, or barred if the write is yet to land) so that it is inactive wherever
   * the write reached. A void that is not confirmed either is logged; the caller's 503 stands.
   */
  async function voidUnreplicated(op: string, id: string, workload: string, now: number): Promise<void> {
    log.warn({ op, grant: id }, 'grant write not confirmed on enough replicas: answered 503 and voided');
    await store.voidGrant(id, workload, { now }).catch((e: unknown) => {
      log.error({ op, grant: id, err: e instanceof Error ? e.message : String(e) }, 'grant write not confirmed on replicas could not be voided now (the broker retries undelivered grants)');
    });
  }

  /**
   * The shard copy of what renew-grant.lua wrote: grant.renewed with the new generation, or
   * grant.replay_detected with its reason (the script adds both to the fields it was given).
   */
  function copyRenewal(workload: string, id: string, outcome: string, record: unknown, now: number, retentionMs: number): void {
    const decoded = typeof record === 'string' ? grantFromRecord(id, record) : undefined;
    const generation = decoded?.ok ? { generation: decoded.value.generation } : {};
    const actor = decoded?.ok && decoded.value.act ? { actor: decoded.value.act[0]!.sub } : {};
    const event: AuditEvent =
      outcome === 'renewed'
        ? { type: 'grant.renewed', at: now, workload, grant: id, ...generation, ...actor }
        : { type: 'grant.replay_detected', at: now, workload, grant: id, reason: REPLAY_REASON, ...generation };
    auditLog.copyToShard(workload, auditToFields(event), now, retentionMs);
  }

  /** A closing that took effect without its audit event: the log line is its only record. */
  function auditLost(op: string, id: string, outcome: string | undefined, err: string): void {
    log.error({ op, grant: id, outcome, err }, 'grant closed, but its audit event could not be written');
  }

  const store: RedisGrantStore = {
    kind: 'redis',
    redis,

    async createGrant(input: NewGrant, options: CreateGrantOptions): Promise<Grant> {
      const { grant, opts: o } = validateNewGrant(input, options);
      const keys = keysOf(grant.workload);
      const issued = auditToFields({
        type: 'grant.issued',
        at: o.now,
        workload: grant.workload,
        grant: grant.id,
        rule: grant.rule,
        audience: grant.audience,
        actions: grant.actions,
        task: grant.task,
        ...(grant.act ? { actor: grant.act[0]!.sub } : {}),
      });
      const created = guarded('createGrant', async () => {
        // Operators' hint index of workloads, outside the atomic script on purpose: it lives in
        // its own slot, and a cluster cannot run one script across slots. Sent first on the same
        // connection, so a workload is normally listed before its grants exist; a listed workload
        // without grants is harmless. Best effort: the grant (and its audit event) must not be
        // refused or delayed over an operators' convenience. Refreshed at most once a minute per
        // workload per instance: it only has to say which workloads had grants within retention.
        refreshWorkloadHint(grant.workload, o.now, o.retentionMs);
        const { reply, replicas } = await runGrantWrite(redis, replication, 'jitCreateGrant', [
          keys.grant(grant.id),
          keys.live,
          keys.all,
          keys.audit,
          keys.voided(grant.id),
          keys.rate,
          o.now,
          o.maxActive,
          o.retentionMs,
          grant.id,
          grant.created_at,
          grant.expires_at,
          o.retentionMs,
          ...rateArgs(o.rate),
          grantToRecord(grant),
          ...issued,
        ]);
        const [status, count, earliest] = reply;
        if (status === 'ok') {
          auditLog.copyToShard(grant.workload, issued, o.now, o.retentionMs);
          if (globalIndex) {
            indexGlobally(shardKeys[globalShard(grant.workload)]!, { grant, pruneBefore: o.now - o.retentionMs, ttl: grant.expires_at - o.now + o.retentionMs });
          }
          requireReplicas(replication, replicas, 'createGrant', grant);
          return grant;
        }
        if (status === 'dup') throw new DuplicateGrantId(grant.id);
        if (status === 'void') throw new Unavailable(UNAVAILABLE, { detail: `grant ${grant.id} was voided before it was written` });
        if (status === 'cap') {
          const first = earliest === undefined || earliest === '' ? undefined : Number(earliest);
          throw capExceeded(grant.workload, Number(count), o.maxActive, o.now, first);
        }
        if (status === 'rate') throw rateExceeded(grant.workload, Number(count));
        throw new Error(`unexpected create-grant reply ${JSON.stringify(reply)}`);
      }, { write: true });
      return created.catch(async (e: unknown) => {
        if (e instanceof NotReplicated) await voidUnreplicated('createGrant', grant.id, grant.workload, o.now);
        throw e;
      });
    },

    async voidGrant(id: string, workload: string, o: { now: number }): Promise<VoidOutcome> {
      if (tagOfGrantId(id) !== workloadTag(workload)) throw new InvalidRequest('invalid grant id', { detail: 'grant id does not carry the workload tag' });
      const ended = { type: 'grant.ended', at: o.now, workload, grant: id, reason: NOT_DELIVERED_REASON } as const;
      const [outcome] = await close('voidGrant', id, workload, o.now, 'ended', ended, { markTtl: VOID_MARKER_TTL_MS, by: 'not_delivered' });
      return outcome === 'closed' ? 'ended' : outcome === 'marked' ? 'marked' : 'noop';
    },

    async renewGrant(input: RenewGrant, options: RenewOptions): Promise<RenewOutcome> {
      const { renewal: r, opts: o } = validateRenewal(input, options);
      const keys = keysOf(r.workload);
      const renewed = auditToFields({ type: 'grant.renewed', at: o.now, workload: r.workload, grant: r.id, ...(r.actor !== undefined ? { actor: r.actor } : {}) });
      const replay = auditToFields({ type: 'grant.replay_detected', at: o.now, workload: r.workload, grant: r.id });
      return guarded('renewGrant', async (): Promise<RenewOutcome> => {
        const args = [
          keys.grant(r.id),
          keys.live,
          keys.audit,
          keys.rate,
          o.now,
          r.workload,
          r.presentedJti,
          r.jti,
          r.tokenExp,
          o.retentionMs,
          o.retentionMs,
          ...rateArgs(o.rate),
          REPLAY_REASON,
          r.id,
          r.kid ?? '',
          renewed.length,
          o.retryWindowMs ?? 0,
          r.tokenDigest ?? '',
          ...renewed,
          ...replay,
        ];
        const { reply, replicas } = await runGrantWrite(redis, replication, 'jitRenewGrant', args).catch(async (e: unknown) => {
          if (!isOutOfMemory(e)) throw e;
          // Redis refused the renewal for memory. A superseded token must still revoke its
          // grant: run the script again, allowed out of memory, to revoke a replay and nothing else.
          args[RENEW_NEW_JTI_ARG] = '';
          const answer = await runGrantWrite(redis, replication, 'jitRevokeReplay', args);
          // A renewal it would have made: refused for memory (503). Anything else needed no write.
          if (answer.reply[0] === 'not_replay') throw e;
          return answer;
        });
        const [outcome, payload, lost] = reply;
        if (lost !== undefined) auditLost('renewGrant', r.id, String(outcome), String(lost));
        if (outcome === 'renewed' || outcome === 'replay') copyRenewal(r.workload, r.id, String(outcome), payload, o.now, o.retentionMs);
        if (outcome === 'unknown') return { outcome };
        if (outcome === 'unreadable') throw unreadable(r.id, 'renew-grant.lua could not decode it; nothing changed');
        if (outcome === 'rate') throw rateExceeded(r.workload, Number(payload));
        if ((outcome === 'renewed' || outcome === 'current' || outcome === 'inactive' || outcome === 'replay') && typeof payload === 'string') {
          const grant = ownRecord(r.id, payload, r.workload);
          if (grant && (outcome === 'renewed' || outcome === 'replay')) requireReplicas(replication, replicas, 'renewGrant', { outcome, grant });
          if (grant) return { outcome, grant };
        }
        throw new Error(`unexpected renew-grant reply ${JSON.stringify(reply)}`);
      }, { write: true }).catch(async (e: unknown) => {
        if (!(e instanceof NotReplicated)) throw e;
        const result = e.value as RenewOutcome;
        // A renewal: its token is not answered (503), and the grant is voided.
        if (result.outcome === 'renewed') {
          await voidUnreplicated('renewGrant', r.id, r.workload, o.now);
          throw e;
        }
        // A replay's revocation: confirmed by closing again (idempotent; no second event), or a 503.
        await close('renewGrant', r.id, r.workload, o.now, 'revoked', { type: 'grant.revoked', at: o.now, workload: r.workload, grant: r.id, reason: REPLAY_REASON }, { by: 'replay_detected' });
        return result;
      });
    },

    async closeGrant(id: string, workload: string, options: CloseOptions): Promise<CloseOutcome> {
      const o = validateClose(id, workload, options);
      const event = { type: closeEventType(o.status), at: o.now, workload, grant: id, ...(o.reason ? { reason: o.reason } : {}), ...(o.operator ? { operator: o.operator } : {}) };
      const [outcome, grant] = await close('closeGrant', id, workload, o.now, o.status, event, {
        ...(o.presentedJti ? { presentedJti: o.presentedJti } : {}),
        ...(o.by ? { by: o.by } : {}),
        ...(o.retryWindowMs ? { retryWindowMs: o.retryWindowMs } : {}),
      });
      if (outcome === 'closed' || outcome === 'inactive' || outcome === 'replay') return { outcome, grant: grant! };
      return { outcome: 'unknown' };
    },

    async getGrant(id: string): Promise<Grant | null> {
      const tag = tagOfGrantId(id);
      if (tag === undefined) return null;
      return guarded('getGrant', async () => {
        const record = await redis.get(grantKeys(prefix, tag).grant(id)).catch((e: unknown) => {
          // Another type under the record's key: there, but no record (as grant_read in lib.lua says).
          if (e instanceof Error && e.message.startsWith('WRONGTYPE')) throw unreadable(id, 'the key holds another type');
          throw e;
        });
        if (record === null) return null;
        return ownRecord(id, record) ?? null;
      }, { oneCommand: true });
    },

    walkGrants(o: WalkOptions): Promise<WalkResult> {
      return guarded('walkGrants', () => walk(o));
    },

    countLiveGrants(o: { now: number; maxLifetimeMs: number; maxWorkloads: number }): Promise<{ count: number; complete: boolean }> {
      return guarded('countLiveGrants', async () => {
        // One read of the hint index, then one ZCOUNT per workload (bounded by maxWorkloads),
        // sent in batches on the connection: O(workloads seen), never O(grants). A hint lags its
        // workload's latest grant by up to HINT_EVERY_MS.
        const since = o.now - o.maxLifetimeMs - HINT_EVERY_MS;
        const ids = await redis.zrevrangebyscore(workloadsKey, '+inf', `(${since}`, 'LIMIT', 0, o.maxWorkloads + 1);
        const counted = ids.slice(0, o.maxWorkloads);
        let count = 0;
        for (let i = 0; i < counted.length; i += 500) {
          const counts = await Promise.all(counted.slice(i, i + 500).map((id) => redis.zcount(keysOf(id).live, `(${o.now}`, '+inf')));
          count += counts.reduce((a, b) => a + b, 0);
        }
        return { count, complete: ids.length <= o.maxWorkloads };
      });
    },

    listWorkloads(o: { now: number; retentionMs: number; limit: number; after?: IndexPosition }): Promise<{ workloads: WorkloadSummary[]; next?: IndexPosition }> {
      return guarded('listWorkloads', async () => {
        await redis.zremrangebyscore(workloadsKey, '-inf', `(${o.now - o.retentionMs}`);
        const limit = Math.max(1, Math.min(LIST_LIMIT_MAX, Math.floor(o.limit)));
        const { entries: page, more } = await entriesAfter(workloadsKey, o.after, limit, o.now - o.retentionMs);
        const workloads = await Promise.all(
          page.map(async ({ id, score }): Promise<WorkloadSummary> => {
            const keys = keysOf(id);
            const [live, latest] = await Promise.all([redis.zcount(keys.live, `(${o.now}`, '+inf'), redis.xrevrange(keys.audit, '+', '-', 'COUNT', 1)]);
            const lastEvent = latest[0] ? Number(latest[0][0].split('-')[0]) : 0;
            return { id, live, last_activity: Math.max(lastEvent, score), last_seen: score };
          }),
        );
        return { workloads, ...(more && page.length > 0 ? { next: page[page.length - 1]! } : {}) };
      });
    },

    listWorkloadGrants(workload: string, o: ListOptions): Promise<Grant[]> {
      return guarded('listWorkloadGrants', () => listIndex(workload, o));
    },

    listTaskGrants(workload: string, task: string, o: ListOptions): Promise<Grant[]> {
      return guarded('listTaskGrants', () => listIndex(workload, o, task));
    },

    async appendAudit(event: AuditEvent, o: AppendAuditOptions): Promise<void> {
      const e = validateAudit(event);
      const retention = validateRetention(o);
      const keys = keysOf(e.workload);
      // Denials: clipped, into a capped stream of their own. Anything else is a lifecycle event,
      // trimmed by age only.
      const [key, trim, kept, fields] =
        e.type !== 'grant.denied'
          ? [keys.audit, 'age', retention, e]
          : o.unmatched
            ? [unmatchedKeys[unmatchedPartition(o.source ?? e.workload)]!, 'count', UNMATCHED_PARTITION_MAXLEN, clipDenial(e)]
            : [keys.denials, 'count', DENIAL_STREAM_MAXLEN, clipDenial(e)];
      await guarded('appendAudit', async () => {
        await redis.jitAppendAudit(key, retention, trim, kept, ...auditToFields(fields));
      });
      auditLog.copyToShard(e.workload, auditToFields(fields), e.at, retention, e.type === 'grant.denied' ? 'denial' : 'lifecycle');
    },

    async readUnmatchedAudit(o: { limit?: number } = {}): Promise<AuditEvent[]> {
      const limit = auditLimit(o.limit);
      return guarded('readUnmatchedAudit', async () => {
        // The latest `limit` entries of each partition hold the latest `limit` of all of them.
        const parts = await Promise.all(unmatchedKeys.map((k) => redis.xrevrange(k, '+', '-', 'COUNT', limit)));
        return parts.flatMap((entries, p) => decodeAudit(entries, `u${p}`)).sort(byEntryId).slice(-limit);
      });
    },

    async readAudit(workload: string, o: { limit?: number } = {}): Promise<AuditEvent[]> {
      const limit = auditLimit(o.limit);
      const keys = keysOf(workload);
      return guarded('readAudit', async () => {
        // The oldest `limit` of each stream hold the oldest `limit` of both: merged by entry id.
        const [lifecycle, denied] = await Promise.all([
          redis.xrange(keys.audit, '-', '+', 'COUNT', limit),
          redis.xrange(keys.denials, '-', '+', 'COUNT', limit),
        ]);
        const events = [...decodeAudit(lifecycle), ...decodeAudit(denied, 'd')];
        // Only this workload's own events (see ownRecord); logged once per read, not per entry.
        // A denial names the workload clipped (codec.ts clipDenial).
        const own = events.filter((e) => e.workload === workload || (e.type === 'grant.denied' && e.workload === deniedWorkload(workload)));
        if (own.length < events.length)
          log.error({ entries: events.length - own.length }, "audit entries under this workload's keys are not this workload's; skipped");
        return own.sort(byEntryId).slice(0, limit);
      });
    },

    async appendOperatorAudit(event: OperatorEvent, o: { retentionMs: number; read?: boolean }): Promise<void> {
      const e = validateOperatorEvent(event);
      const retention = validateRetention(o);
      const [key, trim, kept] = o.read ? [operatorReadsKey, 'count', OPERATOR_READS_MAXLEN] : [operatorAuditKey, 'age', retention];
      await guarded('appendOperatorAudit', async () => {
        await redis.jitAppendAudit(key, retention, trim, kept, ...operatorEventToFields(e));
      });
    },

    async readOperatorAudit(o: { limit?: number } = {}): Promise<OperatorEvent[]> {
      const limit = auditLimit(o.limit);
      return guarded('readOperatorAudit', async () => {
        const parts = await Promise.all([operatorAuditKey, operatorReadsKey].map((k) => redis.xrevrange(k, '+', '-', 'COUNT', limit)));
        const out: OperatorEvent[] = [];
        parts.forEach((entries, i) => {
          for (const [id, fields] of entries) {
            const decoded = operatorEventFromFields(qualifiedId(id, i === 0 ? '' : 'r'), fields);
            if (decoded.ok) out.push(decoded.value);
            else {
              log.error({ entry: id, problem: decoded.problem }, 'operator audit entry does not decode; skipped');
              metrics?.undecodable('audit');
            }
          }
        });
        return out.sort(byEntryId).slice(-limit);
      });
    },

    readAuditLog(q: AuditLogQuery) {
      return guarded('readAuditLog', () => auditLog.read(q));
    },

    async appendKeyAudit(event: KeyEvent, o: { retentionMs: number }): Promise<void> {
      const e = validateKeyEvent(event);
      const retention = validateRetention(o);
      await guarded('appendKeyAudit', () => auditLog.appendKeyEvent(e, retention));
    },

    async readGrantEvents(grant: Pick<Grant, 'id' | 'workload' | 'created_at'>, o: { limit?: number } = {}): Promise<AuditEvent[]> {
      const limit = auditLimit(o.limit ?? AUDIT_LIMIT_MAX);
      const keys = keysOf(grant.workload);
      // Entry ids are Redis's clock, the grant's created_at the broker's: a minute's margin.
      const from = String(Math.max(0, grant.created_at - 60_000));
      return guarded('readGrantEvents', async () => {
        const [lifecycle, denied] = await Promise.all([
          redis.xrange(keys.audit, from, '+', 'COUNT', limit),
          redis.xrange(keys.denials, from, '+', 'COUNT', limit),
        ]);
        return [...decodeAudit(lifecycle), ...decodeAudit(denied, 'd')]
          .filter((e) => e.grant === grant.id && (e.workload === grant.workload || (e.type === 'grant.denied' && e.workload === deniedWorkload(grant.workload))))
          .sort(byEntryId);
      });
    },

    async revokeKey(mark: RevokedKey): Promise<void> {
      const m = validateRevokedKey(mark);
      const ttl = Math.max(60_000, m.until - Date.now() + 60_000);
      const value = JSON.stringify({ ...m, mac: revokedKeyMac(m, secrets) });
      await guarded('revokeKey', async () => {
        const replies = await redis.multi().hset(revokedKeysKey, m.kid, value).pexpire(revokedKeysKey, ttl).exec();
        const err = replies?.find(([e]) => e)?.[0];
        if (err) throw err;
      }, { write: true });
    },

    async revokedKeys(now: number): Promise<RevokedKey[]> {
      return guarded('revokedKeys', () => authenticRevocations(now));
    },

    async publishKey(key: PublishedKey): Promise<void> {
      const k = validatePublishedKey(key);
      // The hash outlives its longest-lived key by a margin, so a fleet that stops publishing
      // leaves nothing behind for ever (Date.now: publishKey is given no clock).
      const ttl = Math.max(60_000, k.expires_at - Date.now() + 60_000);
      await guarded('publishKey', async () => {
        await redis.jitPublishKey(publishedKeysKey, k.kid, encodePublishedKey(k, publishedKeyMac(k, secrets)), ttl);
      });
    },

    async publishedKeys(now: number): Promise<PublishedKey[]> {
      return guarded('publishedKeys', async () => {
        const [all, revoked] = await Promise.all([redis.hgetall(publishedKeysKey), authenticRevocations(now)]);
        const revokedKids = new Set(revoked.map((r) => r.kid));
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
              metrics?.undecodable('key');
            }
            continue;
          }
          const { key, mac } = decoded.value;
          // Only a key one of our secrets authenticates: Redis write access alone adds none.
          if (key.kid !== kid || !isAuthenticKey(key, mac, secrets)) {
            if (!unauthenticLogged.has(kid)) {
              if (unauthenticLogged.size >= 1000) unauthenticLogged.clear();
              unauthenticLogged.add(kid);
              log.error({ kid: clip(kid, 64) }, 'published key is not authenticated by the key publication secret; ignored (not served, verifies nothing)');
            }
            continue;
          }
          if (key.expires_at <= now) purge.push(kid);
          else if (!revokedKids.has(kid)) out.push(key);
        }
        if (purge.length > 0) await redis.hdel(publishedKeysKey, ...purge);
        return out;
      });
    },

    // DPoP proofs used (RFC 9449 §11.1): one SET NX PX in the workload's slot.
    async useProofJti(workload: string, proof: { jkt: string; jti: string }, o: { now: number; until: number }): Promise<boolean> {
      return setOnce('useProofJti', grantKeys(prefix, workloadTag(workload)).usedProof(usedProofDigest(proof)), o.until - o.now);
    },

    // Values used once (client assertion jtis): one SET NX PX of their own.
    async useOnce(key: string, o: { now: number; ttlMs: number }): Promise<boolean> {
      return setOnce('useOnce', `${prefix}once:${key}`, o.ttlMs);
    },

    async ping(): Promise<void> {
      await guarded(
        'ping',
        async () => {
          await redis.ping();
        },
        { oneCommand: true },
      );
    },

    async close(): Promise<void> {
      if (closed) return;
      await batches.flush(); // the pending shard copies and index entries, best effort (failures are logged)
      closed = true;
      try {
        if (redis.status === 'ready') await redis.quit();
      } catch {
        /* disconnected below all the same */
      }
      // Always, after QUIT too: QUIT closes the command connection only, and a Sentinel client's
      // failover listeners (one subscription per sentinel, reconnecting for ever) stayed open.
      redis.disconnect();
    },
  };
  return store;
}
