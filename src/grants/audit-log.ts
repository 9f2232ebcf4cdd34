import { z } from 'zod';
import type { Logger } from '../log.js';
import { isWellFormed, NOT_WELL_FORMED } from '../protocol/unicode.js';
import { auditFromFields, deniedWorkload, operatorEventFromFields } from './codec.js';
import { grantKeys, tagOfGrantId, workloadTag } from './ids.js';
import type { RedisClient } from './redis-connection.js';
import { shardBatches, type ShardBatches } from './shard-batches.js';
import type { AuditEvent, AuditEventType, OperatorEvent } from './store.js';

/**
 * The operators' event log (GET /v1/audit): every audit event of every workload, merged in time
 * order from a BOUNDED set of streams, so that it also works on Redis Cluster (no script can
 * touch two slots, and no read may fan out over all workloads):
 *
 * - `<prefix>{ga:N}:audit`, N = 0..15 (AUDIT_SHARDS), chosen by the workload's tag: a copy of every
 *   lifecycle event and recorded denial, written right after the atomic script that wrote the
 *   workload's own stream (best effort: a failure is logged; the workload's stream stays the
 *   record), trimmed by age (XADD MINID ~ now - retention);
 * - `<prefix>audit:keys`: signing keys published and retired (keyring), trimmed by age;
 * - `<prefix>audit:operator` and `<prefix>audit:operator:reads`: operators' actions.
 *
 * A query for one workload (or one grant: its id carries the workload tag) reads that
 * workload's own streams `{w:tag}:audit` and `{w:tag}:denials` instead.
 *
 * Order: by (entry id, stream code). Redis numbers each stream's entries from its own clock, so
 * entries of different streams are ordered by the time Redis appended them, to a few
 * milliseconds: shard copies are batched for SHARD_FLUSH_MS (shard-batches.ts), and entries of different streams
 * with the same millisecond are ordered by their stream's code, not by which came first. One stream keeps its own order exactly, so a
 * workload's (and a grant's) events are always in the order they happened. An event's id `<ms>-<seq>:<code>` is therefore a complete position in the
 * merged log: a page, a cursor and an SSE Last-Event-ID all resume from one id. An oldest-first
 * read returns only entries older than Redis's own clock at the read (TIME), so an entry appended
 * later can never sort before a position already returned (a tail loses nothing and repeats nothing).
 */

export const AUDIT_SHARDS = 16;

export type KeyEventType = 'key.published' | 'key.retired';

/** A signing key event (keyring): published (its public half joins the JWKS), retired (it signs no more). */
export interface KeyEvent {
  id?: string;
  type: KeyEventType;
  at: number;
  kid: string;
  alg?: string;
  /** The broker instance that holds the key. */
  instance?: string;
  /** When the key stops (or stopped) signing. */
  retire_at?: number;
}

import { LOG_EVENT_TYPES, type LogEventType } from '../protocol/operator.js';
export { LOG_EVENT_TYPES, type LogEventType };
/** Every event type the log holds has its name on the wire (a compile error otherwise). */
const _everyTypeNamed: [Exclude<AuditEventType | KeyEventType | 'operator.action', LogEventType>] extends [never] ? true : never = true;

/** One event of the merged log; `id` is its position (`<ms>-<seq>:<code>`). */
export type LogEvent = (AuditEvent | OperatorEvent | KeyEvent) & { id: string };

/** Where a query reads: every workload (the shard streams and the shared ones), one workload, or one grant. */
export type LogScope = { kind: 'global' } | { kind: 'workload'; workload: string } | { kind: 'grant'; grant: string };

export interface LogPosition {
  ms: number;
  seq: number;
  code: string;
}

export interface AuditLogQuery {
  scope: LogScope;
  order: 'asc' | 'desc';
  /** Continue strictly after (asc) or before (desc) this position. */
  after?: LogPosition;
  /** Entries appended at or after this time (ms; Redis's clock). */
  sinceMs?: number;
  /** Entries appended before this time (ms). */
  untilMs?: number;
  /** Only these types; undefined: all. */
  types?: ReadonlySet<LogEventType>;
  limit: number;
  /** Entries examined at most (filters skip some): the page may be short, with a cursor. */
  maxExamined: number;
}

export interface AuditLogPage {
  events: LogEvent[];
  /** The last entry examined (returned or skipped by a filter): continue after it. Absent when nothing was examined and no `after` was given. */
  last?: LogPosition;
  /** No more entries in range now (asc: caught up with the settled log; desc: reached the oldest). */
  exhausted: boolean;
}

const POSITION = /^(\d{1,16})-(\d{1,16}):([a-z0-9]{1,8})$/;

export function formatPosition(p: LogPosition): string {
  return `${p.ms}-${p.seq}:${p.code}`;
}

export function parsePosition(id: string): LogPosition | undefined {
  const m = POSITION.exec(id);
  if (!m) return undefined;
  const ms = Number(m[1]);
  const seq = Number(m[2]);
  if (!Number.isSafeInteger(ms) || !Number.isSafeInteger(seq)) return undefined;
  return { ms, seq, code: m[3]! };
}

export function comparePositions(a: LogPosition, b: LogPosition): number {
  return a.ms - b.ms || a.seq - b.seq || (a.code < b.code ? -1 : a.code > b.code ? 1 : 0);
}

/** The shard stream of a workload tag (its first byte, mod AUDIT_SHARDS: uniform, as the tag is SHA-256). */
export function shardOfTag(tag: string): number {
  return Buffer.from(tag, 'base64url')[0]! % AUDIT_SHARDS;
}

export const shardKey = (prefix: string, n: number): string => `${prefix}{ga:${n}}:audit`;
/** The shard stream of denial copies: capped by count (DENIAL_SHARD_MAXLEN), in the same slot as its lifecycle shard. */
export const denialShardKey = (prefix: string, n: number): string => `${prefix}{ga:${n}}:denials`;
/** Denial copies kept per shard: as many as a workload's own denial stream keeps. */
export const DENIAL_SHARD_MAXLEN = 1000;
export const keysAuditKey = (prefix: string): string => `${prefix}audit:keys`;

// ── key events: flat field/value strings ──

const keyEventSchema = z
  .object({
    type: z.enum(['key.published', 'key.retired']),
    at: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    kid: z.string().min(1).max(256).refine(isWellFormed, NOT_WELL_FORMED),
    alg: z.string().max(32).optional(),
    instance: z.string().max(256).refine(isWellFormed, NOT_WELL_FORMED).optional(),
    retire_at: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

export function validateKeyEvent(e: KeyEvent): KeyEvent {
  const { id: _id, ...rest } = e;
  return keyEventSchema.parse(rest);
}

export function keyEventToFields(e: KeyEvent): string[] {
  const out: string[] = [];
  for (const k of ['type', 'at', 'kid', 'alg', 'instance', 'retire_at'] as const) if (e[k] !== undefined) out.push(k, String(e[k]));
  return out;
}

export function keyEventFromFields(id: string, fields: string[]): KeyEvent | undefined {
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i]!] = fields[i + 1]!;
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const parsed = keyEventSchema.safeParse({ type: h.type, at: num(h.at), kid: h.kid, alg: h.alg, instance: h.instance, retire_at: num(h.retire_at) });
  if (!parsed.success) return undefined;
  const e: KeyEvent = { id, ...parsed.data };
  for (const k of Object.keys(e) as (keyof KeyEvent)[]) if (e[k] === undefined) delete e[k];
  return e;
}

// ── the merge ──

/** One stream entry: its position and its decoded event (undefined: did not decode, skipped). */
export interface SourceEntry {
  pos: LogPosition;
  event: LogEvent | undefined;
}

/** A range bound: an entry id (`<ms>-<seq>`), inclusive or exclusive, or open. */
export type Bound = { id: string; exclusive: boolean } | undefined;

/** One stream of the merge: reads up to `count` entries between two bounds, in `order`. */
export interface LogSource {
  code: string;
  read(lower: Bound, upper: Bound, count: number, order: 'asc' | 'desc'): Promise<SourceEntry[]>;
}

const entryId = (p: { ms: number; seq: number }) => `${p.ms}-${p.seq}`;

/** Entries read per stream per round trip. */
const BATCH_MAX = 200;

/**
 * A k-way merge of `sources` from `q.after` in `q.order`: lazily, each stream read in batches
 * (the first of every stream together: one pipelined round trip), at most `q.maxExamined` entries.
 * `settledMs` (asc): only entries appended before it.
 */
export async function mergePage(sources: LogSource[], q: AuditLogQuery, accept: (e: LogEvent) => boolean, settledMs?: number): Promise<AuditLogPage> {
  const asc = q.order === 'asc';
  const untilMs = settledMs === undefined ? q.untilMs : Math.min(q.untilMs ?? Infinity, settledMs);
  const since: Bound = q.sinceMs !== undefined ? { id: `${q.sinceMs}-0`, exclusive: false } : undefined;
  const until: Bound = untilMs !== undefined && Number.isFinite(untilMs) ? { id: `${untilMs}-0`, exclusive: true } : undefined;
  const batch = Math.min(BATCH_MAX, Math.max(16, q.limit + 1));
  const a = q.after;

  const state = sources.map((s) => {
    // From the position on: the streams after its own (by code) include its entry id, the others exclude it.
    let from: Bound = asc ? since : until;
    if (a) {
      const inclusive = asc ? s.code > a.code : s.code < a.code;
      const p: Bound = { id: entryId(a), exclusive: !inclusive };
      if (asc ? !since || a.ms >= q.sinceMs! : !until || a.ms < untilMs!) from = p;
    }
    return { source: s, from, buf: [] as SourceEntry[], done: false };
  });
  const fill = async (st: (typeof state)[number]) => {
    const got = await (asc ? st.source.read(st.from, until, batch, 'asc') : st.source.read(since, st.from, batch, 'desc'));
    st.buf = got;
    if (got.length < batch) st.done = true;
    if (got.length > 0) st.from = { id: entryId(got[got.length - 1]!.pos), exclusive: true };
  };
  await Promise.all(state.map(fill));

  const events: LogEvent[] = [];
  let last: LogPosition | undefined = a;
  let examined = 0;
  let exhausted = false;
  while (events.length < q.limit && examined < q.maxExamined) {
    const refill = state.filter((st) => st.buf.length === 0 && !st.done);
    if (refill.length) await Promise.all(refill.map(fill));
    let best: (typeof state)[number] | undefined;
    for (const st of state) {
      if (st.buf.length === 0) continue;
      if (!best || (asc ? comparePositions(st.buf[0]!.pos, best.buf[0]!.pos) < 0 : comparePositions(st.buf[0]!.pos, best.buf[0]!.pos) > 0)) best = st;
    }
    if (!best) {
      exhausted = true;
      break;
    }
    const entry = best.buf.shift()!;
    examined++;
    last = entry.pos;
    if (entry.event && accept(entry.event)) events.push(entry.event);
  }
  if (!exhausted && state.every((st) => st.buf.length === 0 && st.done)) exhausted = true;
  return { events, ...(last ? { last } : {}), exhausted };
}

/** Whether an event passes the query's type filter and its scope's own filter (workload, grant). */
export function scopeFilter(q: AuditLogQuery): (e: LogEvent) => boolean {
  const types = q.types;
  const ofType = (e: LogEvent) => !types || types.has(e.type);
  const scope = q.scope;
  if (scope.kind === 'workload') {
    const clipped = deniedWorkload(scope.workload);
    return (e) => ofType(e) && 'workload' in e && (e.workload === scope.workload || (e.type === 'grant.denied' && e.workload === clipped));
  }
  if (scope.kind === 'grant') return (e) => ofType(e) && 'grant' in e && e.grant === scope.grant;
  return ofType;
}

const wants = (q: AuditLogQuery, prefix: string) => !q.types || [...q.types].some((t) => t.startsWith(prefix));

// ── Redis ──

export interface RedisAuditLog {
  /**
   * Copies a workload's event to its shard stream: batched (for up to SHARD_FLUSH_MS, one
   * script call per shard and batch), never awaited
   * by the caller, best effort (a failure is logged; the workload's own stream has the event).
   * `retentionMs` trims the shard by age (undefined: this copy trims nothing). Denials go to a
   * shard stream of their own, capped by count like the streams they copy.
   */
  copyToShard(workload: string, fields: string[], now: number, retentionMs: number | undefined, kind?: 'lifecycle' | 'denial'): void;
  /** Writes the pending copies now, with everything else pending in its batches (reads do first, so this instance reads its own writes). */
  flush(): Promise<void>;
  appendKeyEvent(e: KeyEvent, retentionMs: number): Promise<void>;
  read(q: AuditLogQuery): Promise<AuditLogPage>;
}

/**
 * The log over one Redis connection (the grant store's: commands of one event-loop turn share a
 * write, so a shard copy costs no round trip of its own). Shard copies wait in `batches`, with the
 * store's other off-path writes to shard keys (shard-batches.ts). `enabled: false` skips the shard
 * copies (bench A/B only: the global log then misses workload events).
 */
export function redisAuditLog(
  redis: RedisClient,
  prefix: string,
  log: Logger,
  enabled = true,
  denialShardMaxlen = DENIAL_SHARD_MAXLEN,
  batches: ShardBatches = shardBatches(),
): RedisAuditLog {
  /** A shard stream's pending copies, and its trim horizon (the latest now - retention). */
  type Copies = { n: number; denials: boolean; entries: string[][]; trimBefore: number };
  type Copy = { n: number; denials: boolean; fields: string[]; trimBefore: number };
  const copy = batches.kind<Copy, Copies>({
    open: (c) => ({ n: c.n, denials: c.denials, entries: [c.fields], trimBefore: c.trimBefore }),
    add(b, c) {
      b.entries.push(c.fields);
      b.trimBefore = Math.max(b.trimBefore, c.trimBefore);
    },
    send: (key, b) =>
      redis
        .jitAppendShard(key, b.trimBefore, b.denials ? denialShardMaxlen : 0, b.entries.length, ...b.entries.flatMap((f) => [f.length, ...f]))
        .then(
          () => undefined,
          (e: unknown) => {
            log.warn({ op: 'auditShard', shard: b.n, events: b.entries.length, err: e instanceof Error ? e.message : String(e) }, 'events not copied to the global audit log (the workload streams have them)');
          },
        ),
  });
  const flush = () => batches.flush();

  const decodeFor = (code: string) => (id: string, fields: string[]): LogEvent | undefined => {
    const qualified = `${id}:${code}`;
    if (code === 'o' || code === 'r') {
      const d = operatorEventFromFields(qualified, fields);
      return d.ok ? (d.value as LogEvent) : undefined;
    }
    if (code === 'k') return keyEventFromFields(qualified, fields) as LogEvent | undefined;
    const d = auditFromFields(qualified, fields);
    return d.ok ? (d.value as LogEvent) : undefined;
  };

  const source = (code: string, key: string): LogSource => {
    const decode = decodeFor(code);
    return {
      code,
      async read(lower, upper, count, order) {
        const lo = lower ? `${lower.exclusive ? '(' : ''}${lower.id}` : '-';
        const hi = upper ? `${upper.exclusive ? '(' : ''}${upper.id}` : '+';
        const entries = order === 'asc' ? await redis.xrange(key, lo, hi, 'COUNT', count) : await redis.xrevrange(key, hi, lo, 'COUNT', count);
        return entries.map(([id, fields]) => {
          const [ms, seq] = id.split('-').map(Number) as [number, number];
          const event = decode(id, fields);
          if (!event) log.error({ stream: key, entry: id }, 'audit log entry does not decode; skipped');
          return { pos: { ms, seq, code }, event };
        });
      },
    };
  };

  function sourcesOf(q: AuditLogQuery): LogSource[] {
    const scope = q.scope;
    if (scope.kind !== 'global') {
      const tag = scope.kind === 'grant' ? tagOfGrantId(scope.grant)! : workloadTag(scope.workload);
      const keys = grantKeys(prefix, tag);
      return [source('w', keys.audit), ...(scope.kind === 'workload' && wants(q, 'grant.denied') ? [source('d', keys.denials)] : [])];
    }
    const out: LogSource[] = [];
    if (wants(q, 'grant.')) for (let n = 0; n < AUDIT_SHARDS; n++) out.push(source(`g${n}`, shardKey(prefix, n)));
    if (wants(q, 'grant.denied')) for (let n = 0; n < AUDIT_SHARDS; n++) out.push(source(`x${n}`, denialShardKey(prefix, n)));
    if (wants(q, 'key.')) out.push(source('k', keysAuditKey(prefix)));
    if (wants(q, 'operator.')) out.push(source('o', `${prefix}audit:operator`), source('r', `${prefix}audit:operator:reads`));
    return out;
  }

  return {
    copyToShard(workload, fields, now, retentionMs, kind = 'lifecycle') {
      if (!enabled) return;
      const n = shardOfTag(workloadTag(workload));
      const denials = kind === 'denial';
      // A copy whose writer is not told the retention (a closing) trims nothing.
      copy(denials ? denialShardKey(prefix, n) : shardKey(prefix, n), { n, denials, fields, trimBefore: retentionMs === undefined ? 0 : Math.max(0, now - retentionMs) });
    },
    flush,
    async appendKeyEvent(e, retentionMs) {
      await redis.xadd(keysAuditKey(prefix), 'MINID', '~', String(Math.max(0, e.at - retentionMs)), '*', ...keyEventToFields(e));
    },
    async read(q) {
      await flush();
      const sources = sourcesOf(q);
      let settled: number | undefined;
      if (q.order === 'asc') {
        const [s, us] = await redis.time();
        settled = Number(s) * 1000 + Math.floor(Number(us) / 1000);
      }
      return mergePage(sources, q, scopeFilter(q), settled);
    },
  };
}
