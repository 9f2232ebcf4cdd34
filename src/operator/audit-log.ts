import { z } from 'zod';
import type { Operator } from '../auth/operators.js';
import type { AuditLogEntry, AuditLogResponse } from '../protocol/operator.js';
import { InvalidRequest, LimitExceeded } from '../errors.js';
import {
  formatPosition,
  LOG_EVENT_TYPES,
  parsePosition,
  type AuditLogQuery,
  type LogEvent,
  type LogEventType,
  type LogPosition,
  type LogScope,
} from '../grants/audit-log.js';
import { isGrantId, tagOfGrantId, workloadTag } from '../grants/ids.js';
import { isWellFormed, NOT_WELL_FORMED } from '../protocol/unicode.js';
import { auditOperator, iso, parseParams, type OperatorDeps } from './deps.js';

/**
 * The operators' event log (GET /v1/audit, its ndjson export, and the SSE tail
 * GET /v1/audit/stream). Storage and merge: grants/audit-log.ts.
 *
 * Order: newest first by default (`order=desc`, as GET /v1/grants), oldest first with
 * `order=asc`; the ndjson export defaults to oldest first, so a SIEM continues forward with the
 * cursor. `since`/`until` select by the time Redis appended the entry (ISO 8601 or ms since the
 * epoch; since inclusive, until exclusive).
 */

export const AUDIT_PAGE_DEFAULT = 100;
export const AUDIT_PAGE_MAX = 1000;
export const EXPORT_PAGE_DEFAULT = 1000;
export const EXPORT_PAGE_MAX = 10_000;
/** Entries examined per call at most (a `type` filter skips some): a page may be short, with its cursor. */
export const AUDIT_EXAMINED_MAX = 20_000;

/** `type=` accepts the full names and these short forms. */
const SHORT_TYPES: Record<string, LogEventType> = {
  issued: 'grant.issued',
  denied: 'grant.denied',
  renewed: 'grant.renewed',
  ended: 'grant.ended',
  revoked: 'grant.revoked',
  replay_detected: 'grant.replay_detected',
  key_published: 'key.published',
  key_retired: 'key.retired',
  operator: 'operator.action',
};

const time = z
  .string()
  .max(64)
  .transform((v, ctx) => {
    const ms = /^\d{1,16}$/.test(v) ? Number(v) : /^\d{4}-\d{2}-\d{2}T/.test(v) ? Date.parse(v) : NaN;
    if (!Number.isSafeInteger(ms) || ms < 0) {
      ctx.addIssue({ code: 'custom', message: 'must be an ISO 8601 date-time (e.g. 2026-01-31T12:00:00Z) or ms since the epoch' });
      return z.NEVER;
    }
    return ms;
  });

const types = z
  .string()
  .max(512)
  .transform((v, ctx) => {
    const out = new Set<LogEventType>();
    for (const raw of v.split(',')) {
      const t = raw.trim();
      const full = SHORT_TYPES[t] ?? (LOG_EVENT_TYPES as readonly string[]).find((x) => x === t);
      if (!full) {
        ctx.addIssue({ code: 'custom', message: `unknown event type "${t.slice(0, 40)}" (one of ${[...Object.keys(SHORT_TYPES), ...LOG_EVENT_TYPES].join(', ')})` });
        return z.NEVER;
      }
      out.add(full as LogEventType);
    }
    return out;
  });

const limit = (max: number) =>
  z
    .string()
    .regex(/^\d{1,6}$/, `must be an integer from 1 to ${max}`)
    .transform(Number)
    .refine((n) => n >= 1 && n <= max, `must be an integer from 1 to ${max}`);

const filters = {
  type: types.optional(),
  workload: z.string().min(1).max(2048).refine(isWellFormed, NOT_WELL_FORMED).optional(),
  grant: z.string().max(64).refine(isGrantId, 'must be a grant id').optional(),
};

export const auditQuerySchema = z
  .object({
    ...filters,
    since: time.optional(),
    until: time.optional(),
    order: z.enum(['asc', 'desc']).optional(),
    format: z.enum(['json', 'ndjson']).optional(),
    limit: z.string().optional(),
    cursor: z.string().max(512).optional(),
  })
  .strict()
  .refine((q) => !(q.workload && q.grant), { message: 'give workload or grant, not both', path: ['grant'] })
  .refine((q) => q.since === undefined || q.until === undefined || q.since < q.until, { message: 'must be after since', path: ['until'] });

export const auditTailSchema = z
  .object({ ...filters, since: time.optional(), last_event_id: z.string().max(64).optional() })
  .strict()
  .refine((q) => !(q.workload && q.grant), { message: 'give workload or grant, not both', path: ['grant'] });

export type { AuditLogEntry, AuditLogResponse };

export function entryOf(e: LogEvent): AuditLogEntry {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e)) {
    if (v === undefined) continue;
    out[k] = k === 'at' || k === 'retire_at' ? iso(v as number) : v;
  }
  return out as unknown as AuditLogEntry;
}

function scopeOf(q: { workload?: string | undefined; grant?: string | undefined }): { scope: LogScope; key: string } {
  if (q.grant) return { scope: { kind: 'grant', grant: q.grant }, key: `t:${tagOfGrantId(q.grant)}` };
  if (q.workload) return { scope: { kind: 'workload', workload: q.workload }, key: `t:${workloadTag(q.workload)}` };
  return { scope: { kind: 'global' }, key: 'g' };
}

/** Stream codes of positions in each scope (an id or cursor from another scope is refused). */
const codeFits = (storeKind: string, scopeKey: string, code: string) =>
  storeKind === 'memory' ? code === 'm' : scopeKey === 'g' ? /^(g\d{1,2}|x\d{1,2}|k|o|r)$/.test(code) : code === 'w' || code === 'd';

function encodeCursor(order: 'asc' | 'desc', scopeKey: string, pos: LogPosition): string {
  return Buffer.from(`1|${order}|${scopeKey}|${formatPosition(pos)}`).toString('base64url');
}

function decodeCursor(cursor: string, order: 'asc' | 'desc', scopeKey: string, storeKind: string): LogPosition {
  const bad = () => new InvalidRequest('invalid cursor: pass back the cursor of the previous page, with the same workload, grant and order');
  if (!/^[A-Za-z0-9_-]{1,512}$/.test(cursor)) throw bad();
  const [v, o, s, p, ...rest] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  const pos = p === undefined ? undefined : parsePosition(p);
  if (v !== '1' || rest.length || o !== order || s !== scopeKey || !pos || !codeFits(storeKind, scopeKey, pos.code)) throw bad();
  return pos;
}

export interface AuditLogPageResult extends AuditLogResponse {
  format: 'json' | 'ndjson';
}

/**
 * GET /v1/audit (auditor): one page of the merged event log. Audited as a read (operator
 * read stream), with the query and the number of events returned.
 */
export async function readAuditLog(deps: OperatorDeps, op: Operator, params: Record<string, string>): Promise<AuditLogPageResult> {
  const q = parseParams(auditQuerySchema, params);
  const format = q.format ?? 'json';
  const order = q.order ?? (format === 'ndjson' ? 'asc' : 'desc');
  const max = format === 'ndjson' ? EXPORT_PAGE_MAX : AUDIT_PAGE_MAX;
  let n = format === 'ndjson' ? EXPORT_PAGE_DEFAULT : AUDIT_PAGE_DEFAULT;
  if (q.limit !== undefined) n = parseParams(z.object({ limit: limit(max) }), { limit: q.limit }).limit;
  const { scope, key } = scopeOf(q);
  const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor, order, key, deps.store.kind);
  const query: AuditLogQuery = {
    scope,
    order,
    limit: n,
    maxExamined: AUDIT_EXAMINED_MAX,
    ...(after ? { after } : {}),
    ...(q.since !== undefined ? { sinceMs: q.since } : {}),
    ...(q.until !== undefined ? { untilMs: q.until } : {}),
    ...(q.type ? { types: q.type } : {}),
  };
  const page = await deps.store.readAuditLog(query);
  const events = page.events.map(entryOf);
  const selector = JSON.stringify({ ...params, ...(q.cursor ? { cursor: '…' } : {}) });
  await auditOperator(deps, op, 'audit.read', { selector, count: events.length }, true);
  // desc: a finished walk has no cursor. asc: always one to poll on from, once anything was seen.
  const cursor = page.last && !(order === 'desc' && page.exhausted) ? encodeCursor(order, key, page.last) : null;
  return { format, order, events, cursor, done: page.exhausted };
}

// ── the live tail (SSE) ──

export interface TailOptions {
  /** How often the tail polls the log when caught up. Default 1 s. */
  pollMs?: number;
  /** A comment line this often keeps proxies from closing an idle stream. Default 15 s. */
  heartbeatMs?: number;
  /** Concurrent tails per broker instance. Default 16. */
  maxStreams?: number;
}

/** The SSE writer the route gives the tail (hono's SSEStreamingApi fits). */
export interface TailSink {
  writeSSE(message: { data: string; event?: string; id?: string; retry?: number }): Promise<void>;
  write(text: string): Promise<unknown>;
  readonly aborted: boolean;
  readonly closed: boolean;
}

/**
 * The live tails of this instance: bounded in number, each ended when its client goes away or
 * when the broker closes (close() ends them all and waits for none: each loop exits at its next
 * step).
 */
export class AuditTails {
  private readonly active = new Set<AbortController>();
  readonly pollMs: number;
  readonly heartbeatMs: number;
  readonly maxStreams: number;
  private closed = false;

  constructor(o: TailOptions = {}) {
    this.pollMs = o.pollMs ?? 1000;
    this.heartbeatMs = o.heartbeatMs ?? 15_000;
    this.maxStreams = o.maxStreams ?? 16;
  }

  get count(): number {
    return this.active.size;
  }

  /** A slot for one more tail, or 429 when this instance serves its maximum (or is closing). */
  acquire(): AbortController {
    if (this.closed) throw new LimitExceeded('the broker is shutting down', { retryAfter: 1 });
    if (this.active.size >= this.maxStreams) throw new LimitExceeded(`too many audit streams on this instance (at most ${this.maxStreams}); retry later`, { retryAfter: 5 });
    const ctl = new AbortController();
    this.active.add(ctl);
    return ctl;
  }

  release(ctl: AbortController): void {
    this.active.delete(ctl);
    if (this.active.size === 0) for (const resolve of this.drained.splice(0)) resolve();
  }

  private readonly drained: (() => void)[] = [];

  /**
   * Ends every tail and resolves once each has closed its stream (at most `waitMs`), so the
   * server can close the connections after their last chunk.
   */
  async close(waitMs = 2000): Promise<void> {
    this.closed = true;
    if (this.active.size === 0) return;
    const done = new Promise<void>((resolve) => this.drained.push(resolve));
    for (const ctl of [...this.active]) ctl.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }
}

export interface TailStart {
  query: Omit<AuditLogQuery, 'after' | 'order' | 'limit' | 'maxExamined'>;
  after: LogPosition | undefined;
  scopeKey: string;
}

/**
 * GET /v1/audit/stream (auditor): validates the query and the resume point, audits the tail
 * once (operator read stream), and returns where to start. Resume: `Last-Event-ID` (or
 * `last_event_id`) is the id of the last event received; else `since`; else from now.
 */
export async function startTail(deps: OperatorDeps, op: Operator, params: Record<string, string>, lastEventId: string | undefined): Promise<TailStart> {
  const q = parseParams(auditTailSchema, params);
  const { scope, key } = scopeOf(q);
  const resume = lastEventId ?? q.last_event_id;
  let after: LogPosition | undefined;
  if (resume !== undefined && resume !== '') {
    const pos = parsePosition(resume);
    if (!pos || !codeFits(deps.store.kind, key, pos.code)) throw new InvalidRequest('invalid Last-Event-ID: pass back the id of the last event received, with the same workload or grant');
    after = pos;
  } else if (q.since !== undefined) {
    after = { ms: q.since, seq: 0, code: '' };
  } else {
    // From now: after the newest entry in scope (whatever its type).
    const newest = await deps.store.readAuditLog({ scope, order: 'desc', limit: 1, maxExamined: 1 });
    after = newest.last ?? { ms: 0, seq: 0, code: '' };
  }
  await auditOperator(deps, op, 'audit.tail', { selector: JSON.stringify({ ...params, ...(resume ? { last_event_id: resume } : {}) }) }, true);
  return { query: { scope, ...(q.type ? { types: q.type } : {}) }, after, scopeKey: key };
}

/**
 * Streams the log from `start` until the client goes away or `signal` aborts: each event as
 * `id: <event id>` + `data: <AuditLogEntry JSON>`, a `: heartbeat` comment when idle. A store
 * failure ends the stream with an `error` event (the client resumes with Last-Event-ID).
 */
export async function runTail(deps: OperatorDeps, tails: AuditTails, start: TailStart, sink: TailSink, signal: AbortSignal): Promise<void> {
  let after = start.after;
  let lastWrite = Date.now();
  await sink.writeSSE({ event: 'ready', data: JSON.stringify({ resume_after: after ? formatPosition(after) : null }), retry: 2000 });
  const stopped = () => signal.aborted || sink.aborted || sink.closed;
  while (!stopped()) {
    let page;
    try {
      page = await deps.store.readAuditLog({ ...start.query, order: 'asc', limit: 100, maxExamined: 1000, ...(after ? { after } : {}) });
    } catch (e) {
      deps.log.warn({ err: (e as Error).message }, 'audit stream: log unavailable; stream ended');
      await sink.writeSSE({ event: 'error', data: JSON.stringify({ error: 'temporarily_unavailable', error_description: 'the audit log is unavailable; reconnect with Last-Event-ID' }) });
      return;
    }
    for (const e of page.events) {
      if (stopped()) return;
      await sink.writeSSE({ id: e.id, data: JSON.stringify(entryOf(e)) });
      lastWrite = Date.now();
    }
    if (page.last) after = page.last;
    if (!page.exhausted) continue;
    if (Date.now() - lastWrite >= tails.heartbeatMs) {
      await sink.write(': heartbeat\n\n');
      lastWrite = Date.now();
    }
    await sleep(Math.min(tails.pollMs, tails.heartbeatMs), signal);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
