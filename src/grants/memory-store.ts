import { InvalidRequest, Unavailable } from '../errors.js';
import type { Logger } from '../log.js';
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
  takeToken,
  validateClose,
  validateRenewal,
  type BucketState,
  auditLimit,
  capExceeded,
  isLive,
  listLimit,
  newestFirst,
  validateAudit,
  validateNewGrant,
  validatePublishedKey,
  validateRetention,
  OPERATOR_READS_MAXLEN,
  validateOperatorEvent,
  isAfter,
  validateRevokedKey,
} from './codec.js';
import { tagOfGrantId, usedProofDigest, workloadTag } from './ids.js';
import {
  comparePositions,
  mergePage,
  parsePosition,
  scopeFilter,
  validateKeyEvent,
  type AuditLogQuery,
  type Bound,
  type KeyEvent,
  type LogEvent,
  type LogPosition,
  type LogSource,
} from './audit-log.js';
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

export interface MemoryGrantStoreOptions {
  log?: Logger;
  /**
   * Which workloads share a slot, as the Redis store's hash tag decides (default `workloadTag`).
   * Tests pass one that collides, to check that no workload is shown another's grants or events.
   */
  workloadTag?: (workloadId: string) => string;
}

/**
 * Dev-mode grant store in process memory, with the Redis store's semantics (the same contract
 * suite runs on both): the same validation, cap check, index pruning and audit events.
 *
 * Expiry is lazy and timer-free: records, indexes and audit streams carry a deadline in the
 * caller's clock, and are dropped once a later call's `now` passes it. Calls without a `now`
 * (getGrant, readAudit) use the latest `now` seen. Not shared between processes; not for production.
 */
export function createMemoryGrantStore(opts: MemoryGrantStoreOptions = {}): GrantStore {
  const tagOf = opts.workloadTag ?? workloadTag;
  const log = opts.log?.child({ component: 'grant-store', store: 'memory' });
  log?.warn('using the in-memory grant store: grants are lost on restart and not shared (dev mode only)');

  interface Expiring<T> {
    value: T;
    deadline: number;
  }
  interface Workload {
    /** grant id → expires_at (live grants only; drives the cap). */
    live: Map<string, number>;
    /** grant id → created_at, every grant within retention. */
    all: Map<string, number>;
    /** task → (grant id → created_at). */
    tasks: Map<string, Expiring<Map<string, number>>>;
    allDeadline: number;
    liveDeadline: number;
    /** Lifecycle events, trimmed by age. */
    audit: Expiring<AuditEvent[]> | undefined;
    /** Denials, clipped and capped in length. */
    denials: Expiring<AuditEvent[]> | undefined;
    /** Issuance token bucket (lib.lua bucket_take). */
    bucket: BucketState | undefined;
  }

  const records = new Map<string, Expiring<Grant>>();
  /** By workload tag (the Redis slot); each tag also remembers its workload id. */
  const workloads = new Map<string, Workload>();
  const keys = new Map<string, PublishedKey>();
  const revokedKeys = new Map<string, RevokedKey>();
  /** Grant ids voided before their record arrived (see GrantStore.voidGrant). */
  const voided = new Set<string>();
  /** Denials of workloads no rule names: length-capped partitions, chosen by source. */
  const unmatched: AuditEvent[][] = Array.from({ length: UNMATCHED_PARTITIONS }, () => []);
  /** The global newest-first index (grant id → created_at), and the workloads hint (id → last seen). */
  const globalIndex = new Map<string, number>();
  const workloadsSeen = new Map<string, number>();
  /** The operators' streams: changes (by age) and reads (capped), as the Redis store keeps them. */
  let operatorChanges: OperatorEvent[] = [];
  const operatorReads: OperatorEvent[] = [];
  /** The merged event log (every stream's events, in append order; GrantStore.readAuditLog). */
  let eventLog: { pos: LogPosition; event: LogEvent }[] = [];
  const EVENT_LOG_MAX = 100_000;
  let latestNow = 0;
  let auditSeq = 0;
  let lastAuditMs = 0;
  let closed = false;
  /** Values used once (DPoP proofs, client assertion jtis) → when each is forgotten (Redis: SET NX PX). */
  const usedOnce = new Map<string, number>();
  const setOnce = (key: string, now: number, until: number): boolean => {
    const held = usedOnce.get(key);
    if (held !== undefined && held > now) return false;
    // Forget the expired ones now and then, as Redis expires them.
    if (usedOnce.size >= 10_000) for (const [k, t] of usedOnce) if (t <= now) usedOnce.delete(k);
    usedOnce.set(key, Math.max(until, now + 1));
    return true;
  };

  const see = (now: number) => {
    if (now > latestNow) latestNow = now;
  };
  const check = () => {
    if (closed) throw new Unavailable('grant store is unavailable', { detail: 'memory grant store is closed' });
  };
  const clone = <T>(v: T): T => structuredClone(v);

  function workload(id: string, create: true): Workload;
  function workload(id: string, create: false): Workload | undefined;
  function workload(id: string, create: boolean): Workload | undefined {
    const tag = tagOf(id);
    let w = workloads.get(tag);
    if (w) {
      const t = latestNow;
      if (w.allDeadline <= t) w.all.clear();
      if (w.liveDeadline <= t) w.live.clear();
      for (const [task, idx] of w.tasks) if (idx.deadline <= t) w.tasks.delete(task);
      if (w.audit && w.audit.deadline <= t) w.audit = undefined;
      if (w.denials && w.denials.deadline <= t) w.denials = undefined;
    }
    if (!w && create) {
      w = { live: new Map(), all: new Map(), tasks: new Map(), allDeadline: 0, liveDeadline: 0, audit: undefined, denials: undefined, bucket: undefined };
      workloads.set(tag, w);
    }
    return w;
  }

  function record(id: string): Grant | undefined {
    const r = records.get(id);
    if (!r) return undefined;
    if (r.deadline <= latestNow) {
      records.delete(id);
      return undefined;
    }
    return r.value;
  }

  function nextAuditId(): string {
    const ms = Date.now();
    if (ms > lastAuditMs) {
      lastAuditMs = ms;
      auditSeq = 0;
    } else {
      auditSeq++;
    }
    return `${lastAuditMs}-${auditSeq}`;
  }

  /** Adds an event to the merged log under the id its stream gave it; trims by age and count. */
  function logged(id: string, event: AuditEvent | OperatorEvent | KeyEvent, retentionMs?: number) {
    const pos = parsePosition(`${id.split(':')[0]}:m`)!;
    eventLog.push({ pos, event: { ...clone(event), id: `${pos.ms}-${pos.seq}:m` } as LogEvent });
    if (retentionMs !== undefined && eventLog.length > 0 && eventLog[0]!.pos.ms < pos.ms - retentionMs) eventLog = eventLog.filter((x) => x.pos.ms >= pos.ms - retentionMs);
    if (eventLog.length > EVENT_LOG_MAX) eventLog.splice(0, eventLog.length - EVENT_LOG_MAX);
  }

  /**
   * Appends a lifecycle event; events older than `horizon` ms are trimmed (0: none), never by
   * count (lib.lua audit). The stream lives at least `ttl` past `now` (never shortened).
   */
  function append(w: Workload, event: AuditEvent, now: number, ttl: number, horizon: number) {
    if (!w.audit) w.audit = { value: [], deadline: 0 };
    const id = nextAuditId();
    w.audit.value.push({ id, ...clone(event) });
    logged(id, event, horizon > 0 ? horizon : undefined);
    if (horizon > 0) w.audit.value = w.audit.value.filter((e) => e.at >= now - horizon);
    w.audit.deadline = Math.max(w.audit.deadline, now + Math.max(1, ttl));
  }

  /** Appends to a capped stream (denials), ids qualified by `name` as the Redis store's. */
  function appendCapped(stream: AuditEvent[], name: string, event: AuditEvent, max: number) {
    const id = nextAuditId();
    stream.push({ id: qualifiedId(id, name), ...clone(event) });
    logged(id, event);
    if (stream.length > max) stream.splice(0, stream.length - max);
  }

  function list(ws: string, o: ListOptions, task?: string): Grant[] {
    see(o.now);
    const limit = listLimit(o.limit);
    const w = workload(ws, false);
    if (!w) return [];
    let index: Map<string, number>;
    if (o.liveOnly) index = w.live;
    else if (task === undefined) index = w.all;
    else index = w.tasks.get(task)?.value ?? new Map<string, number>();
    const grants: Grant[] = [];
    for (const id of index.keys()) {
      const g = record(id);
      if (!g) {
        // Pruned on read, as the Redis store does; never the live index (it drives the cap).
        if (!o.liveOnly) index.delete(id);
        continue;
      }
      // Only the asked workload's own grants, even if another workload shares its slot.
      if (g.workload !== ws) continue;
      if (task !== undefined && g.task !== task) continue;
      if (o.liveOnly && !isLive(g, o.now)) continue;
      grants.push(g);
    }
    return grants.sort(newestFirst).slice(0, limit).map(clone);
  }

  /** Takes a rate token from the workload's bucket: 0, or the ms to wait (nothing taken). */
  function take(w: Workload, rate: RateLimit | undefined, now: number): number {
    if (!rate) return 0;
    const { wait, state } = takeToken(w.bucket, rate, now);
    if (state) w.bucket = state;
    return wait;
  }

  /** Moves a live grant's expiry to now with the status and its audit event (close-grant.lua). */
  function close(id: string, ws: string, now: number, status: CloseStatus, reason: string | undefined, voiding = false, presentedJti?: string, by?: string, operator?: string, retryWindowMs = 0): CloseOutcome {
    const g = record(id);
    if (!g || g.workload !== ws) return { outcome: 'unknown' };
    // Voiding also closes an active grant past its end (keeping that end): see close-grant.lua.
    if (g.status !== 'active' || (!voiding && !isLive(g, now))) return { outcome: 'inactive', grant: clone(g) };
    const w = workload(ws, true);
    const keep = Math.max(0, g.expires_at - now);
    // A superseded token: two holders, as on renewal (close-grant.lua).
    // ...unless it is the token the latest renewal superseded, within the retry window (close-grant.lua).
    const retried = retryWindowMs > 0 && g.prev_jti !== undefined && g.prev_jti === presentedJti && now - (g.token_iat ?? 0) <= retryWindowMs;
    const replay = presentedJti !== undefined && presentedJti !== g.token_jti && !retried;
    if (replay) append(w, { type: 'grant.replay_detected', at: now, workload: ws, grant: id, reason: REPLAY_REASON, generation: g.generation }, now, keep, 0);
    else append(w, { type: closeEventType(status), at: now, workload: ws, grant: id, ...(reason ? { reason } : {}), ...(operator ? { operator } : {}) }, now, keep, 0);
    g.status = replay ? 'revoked' : status;
    g.expires_at = Math.min(g.expires_at, now);
    const closer = replay ? 'replay_detected' : voiding ? 'not_delivered' : by;
    if (closer !== undefined) g.closed_by = closer;
    w.live.delete(id);
    return { outcome: replay ? 'replay' : 'closed', grant: clone(g) };
  }

  return {
    kind: 'memory',

    async createGrant(input: NewGrant, options: CreateGrantOptions): Promise<Grant> {
      check();
      const { grant, opts: o } = validateNewGrant(input, options);
      see(o.now);
      const w = workload(grant.workload, true);
      if (record(grant.id)) throw new DuplicateGrantId(grant.id);
      if (voided.has(grant.id)) throw new Unavailable('grant store is unavailable', { detail: `grant ${grant.id} was voided before it was written` });

      // Liveness is expires_at > now: an entry expiring exactly now is already dead.
      for (const [id, exp] of w.live) if (exp <= o.now) w.live.delete(id);
      // A refusal writes nothing: the caller records the denial within its audit budget.
      if (w.live.size >= o.maxActive) throw capExceeded(grant.workload, w.live.size, o.maxActive, o.now, Math.min(...w.live.values()));
      // After the cap, as the Redis store: only a grant that is written spends a rate token.
      const wait = take(w, o.rate, o.now);
      if (wait > 0) throw rateExceeded(grant.workload, wait);

      const keep = grant.expires_at - o.now + o.retentionMs;
      const horizon = o.now - o.retentionMs;
      records.set(grant.id, { value: clone(grant), deadline: o.now + keep });
      w.live.set(grant.id, grant.expires_at);
      w.liveDeadline = Math.max(w.liveDeadline, grant.expires_at);
      w.all.set(grant.id, grant.created_at);
      for (const [id, created] of w.all) if (created < horizon) w.all.delete(id);
      w.allDeadline = Math.max(w.allDeadline, o.now + keep);
      let idx = w.tasks.get(grant.task);
      if (!idx) {
        idx = { value: new Map(), deadline: 0 };
        w.tasks.set(grant.task, idx);
      }
      idx.value.set(grant.id, grant.created_at);
      for (const [id, created] of idx.value) if (created < horizon) idx.value.delete(id);
      idx.deadline = Math.max(idx.deadline, o.now + keep);
      globalIndex.set(grant.id, grant.created_at);
      for (const [id, created] of globalIndex) if (created < horizon) globalIndex.delete(id);
      workloadsSeen.set(grant.workload, o.now);
      append(
        w,
        {
          type: 'grant.issued',
          at: o.now,
          workload: grant.workload,
          grant: grant.id,
          rule: grant.rule,
          audience: grant.audience,
          actions: grant.actions,
          task: grant.task,
          ...(grant.act ? { actor: grant.act[0]!.sub } : {}),
        },
        o.now,
        keep,
        o.retentionMs,
      );
      return clone(grant);
    },

    async getGrant(id: string): Promise<Grant | null> {
      check();
      if (tagOfGrantId(id) === undefined) return null;
      const g = record(id);
      return g ? clone(g) : null;
    },

    async walkGrants(o: WalkOptions): Promise<WalkResult> {
      check();
      see(o.now);
      const floor = Math.max(o.since ?? 0, o.now - o.retentionMs);
      let start = o.after;
      if (o.until !== undefined && (start === undefined || start.score > o.until)) start = { score: o.until, id: '\x7f' };
      const index = o.workload === undefined ? globalIndex : (workload(o.workload, false)?.all ?? new Map<string, number>());
      const entries = [...index]
        .map(([id, score]) => ({ id, score }))
        .filter((e) => e.score >= floor && (start === undefined || isAfter(e, start)))
        .sort((a, b) => (isAfter(a, b) ? 1 : isAfter(b, a) ? -1 : 0));
      const grants: Grant[] = [];
      let examined = 0;
      let last: IndexPosition | undefined;
      for (const e of entries) {
        if (grants.length >= o.want || examined >= o.maxExamined) return { grants, next: last!, examined };
        // (a walk that ends exactly at its last entry returns no next: the loop below runs out first)
        examined++;
        last = e;
        const g = record(e.id);
        if (!g) {
          index.delete(e.id); // pruned on read, as the Redis store does
          continue;
        }
        if (o.workload !== undefined && g.workload !== o.workload) continue;
        if (!o.match || o.match(g)) grants.push(clone(g));
      }
      return { grants, examined };
    },

    async countLiveGrants(o: { now: number; maxLifetimeMs: number; maxWorkloads: number }): Promise<{ count: number; complete: boolean }> {
      check();
      see(o.now);
      // Dev only, and held in memory: every workload is counted.
      let count = 0;
      for (const w of workloads.values())
        for (const id of w.live.keys()) {
          const g = record(id);
          if (g && isLive(g, o.now)) count++;
        }
      return { count, complete: true };
    },

    async listWorkloads(o: { now: number; retentionMs: number; limit: number; after?: IndexPosition }): Promise<{ workloads: WorkloadSummary[]; next?: IndexPosition }> {
      check();
      see(o.now);
      const entries = [...workloadsSeen]
        .filter(([, seen]) => seen >= o.now - o.retentionMs)
        .map(([id, score]) => ({ id, score }))
        .filter((e) => o.after === undefined || isAfter(e, o.after))
        .sort((a, b) => (isAfter(a, b) ? 1 : isAfter(b, a) ? -1 : 0));
      const page = entries.slice(0, Math.max(1, Math.floor(o.limit)));
      const workloads = page.map(({ id, score }): WorkloadSummary => {
        const w = workload(id, false);
        let live = 0;
        for (const [gid, exp] of w?.live ?? []) if (exp > o.now && record(gid)?.workload === id) live++;
        const events = (w?.audit?.value ?? []).filter((e) => e.workload === id);
        const lastEvent = events.length ? Number(events[events.length - 1]!.id!.split('-')[0]) : 0;
        return { id, live, last_activity: Math.max(lastEvent, score), last_seen: score };
      });
      return { workloads, ...(entries.length > page.length ? { next: page[page.length - 1]! } : {}) };
    },

    async listWorkloadGrants(ws: string, o: ListOptions): Promise<Grant[]> {
      check();
      return list(ws, o);
    },

    async listTaskGrants(ws: string, task: string, o: ListOptions): Promise<Grant[]> {
      check();
      return list(ws, o, task);
    },

    async voidGrant(id: string, ws: string, o: { now: number }): Promise<VoidOutcome> {
      check();
      if (tagOfGrantId(id) !== tagOf(ws)) throw new InvalidRequest('invalid grant id', { detail: 'grant id does not carry the workload tag' });
      see(o.now);
      if (!record(id)) {
        voided.add(id); // memory never loses a reply; kept for the contract's sake
        return 'marked';
      }
      const closed = close(id, ws, o.now, 'ended', NOT_DELIVERED_REASON, true);
      return closed.outcome === 'closed' ? 'ended' : 'noop';
    },

    async renewGrant(input: RenewGrant, options: RenewOptions): Promise<RenewOutcome> {
      check();
      const { renewal: r, opts: o } = validateRenewal(input, options);
      see(o.now);
      const g = record(r.id);
      if (!g || g.workload !== r.workload) return { outcome: 'unknown' };
      if (!isLive(g, o.now)) return { outcome: 'inactive', grant: clone(g) };
      const w = workload(r.workload, true);
      const keep = g.expires_at - o.now + o.retentionMs;
      const base = { at: o.now, workload: r.workload, grant: r.id };
      const window = o.retryWindowMs ?? 0;
      if (
        g.token_jti !== r.presentedJti &&
        g.prev_jti !== undefined &&
        g.prev_jti === r.presentedJti &&
        window > 0 &&
        o.now - (g.token_iat ?? 0) <= window &&
        r.jti === g.token_jti &&
        r.tokenExp === g.token_exp
      ) {
        // A renewal retried within the window (renew-grant.lua): the latest token stands, now
        // signed by `kid`.
        if (r.kid !== undefined) g.kid = r.kid;
        return { outcome: 'current', grant: clone(g) };
      }
      if (g.token_jti !== r.presentedJti) {
        // Two holders: revoked with grant.replay_detected, as close() does for any superseded token.
        return close(r.id, r.workload, o.now, 'revoked', undefined, false, r.presentedJti) as Extract<RenewOutcome, { outcome: 'replay' }>;
      }
      const wait = take(w, o.rate, o.now);
      if (wait > 0) throw rateExceeded(r.workload, wait);
      g.generation += 1;
      append(w, { type: 'grant.renewed', ...base, generation: g.generation, ...(r.actor !== undefined ? { actor: r.actor } : {}) }, o.now, keep, o.retentionMs);
      g.prev_jti = g.token_jti;
      g.token_iat = o.now;
      g.token_jti = r.jti;
      g.token_exp = r.tokenExp;
      if (r.kid !== undefined) g.kid = r.kid;
      // The digest names the latest token, or nothing (renew-grant.lua ARGV[15]).
      if (r.tokenDigest !== undefined) g.token_digest = r.tokenDigest;
      else delete g.token_digest;
      return { outcome: 'renewed', grant: clone(g) };
    },

    async closeGrant(id: string, ws: string, options: CloseOptions): Promise<CloseOutcome> {
      check();
      const o = validateClose(id, ws, options);
      see(o.now);
      return close(id, ws, o.now, o.status, o.reason, false, o.presentedJti, o.by, o.operator, o.retryWindowMs ?? 0);
    },

    async appendAudit(event: AuditEvent, o: AppendAuditOptions): Promise<void> {
      check();
      const e = validateAudit(event);
      validateRetention(o);
      see(e.at);
      // As the Redis store: denials clipped into capped streams, lifecycle events by age.
      if (e.type === 'grant.denied' && o.unmatched) {
        const p = unmatchedPartition(o.source ?? e.workload);
        return appendCapped(unmatched[p]!, `u${p}`, clipDenial(e), UNMATCHED_PARTITION_MAXLEN);
      }
      const w = workload(e.workload, true);
      if (e.type !== 'grant.denied') return append(w, e, e.at, o.retentionMs, o.retentionMs);
      if (!w.denials) w.denials = { value: [], deadline: 0 };
      appendCapped(w.denials.value, 'd', clipDenial(e), DENIAL_STREAM_MAXLEN);
      w.denials.deadline = Math.max(w.denials.deadline, e.at + o.retentionMs);
    },

    async readUnmatchedAudit(o: { limit?: number } = {}): Promise<AuditEvent[]> {
      check();
      return clone(unmatched.flat().sort(byEntryId).slice(-auditLimit(o.limit)));
    },

    async readAudit(ws: string, o: { limit?: number } = {}): Promise<AuditEvent[]> {
      check();
      const w = workload(ws, false);
      // Only the asked workload's own events, even if another workload shares its slot.
      const own = [...(w?.audit?.value ?? []).filter((e) => e.workload === ws), ...(w?.denials?.value ?? []).filter((e) => e.workload === ws || e.workload === deniedWorkload(ws))];
      return clone(own.sort(byEntryId).slice(0, auditLimit(o.limit)));
    },

    async appendOperatorAudit(event: OperatorEvent, o: { retentionMs: number; read?: boolean }): Promise<void> {
      check();
      const e = validateOperatorEvent(event);
      const retention = validateRetention(o);
      see(e.at);
      if (o.read) {
        const id = nextAuditId();
        operatorReads.push({ id: qualifiedId(id, 'r'), ...clone(e) });
        logged(id, e);
        if (operatorReads.length > OPERATOR_READS_MAXLEN) operatorReads.splice(0, operatorReads.length - OPERATOR_READS_MAXLEN);
      } else {
        operatorChanges = operatorChanges.filter((x) => x.at >= e.at - retention);
        const id = nextAuditId();
        operatorChanges.push({ id, ...clone(e) });
        logged(id, e, retention);
      }
    },

    async readOperatorAudit(o: { limit?: number } = {}): Promise<OperatorEvent[]> {
      check();
      const all = [...operatorChanges, ...operatorReads].sort(byEntryId);
      return clone(all.slice(-auditLimit(o.limit)));
    },

    async readAuditLog(q: AuditLogQuery) {
      check();
      const inRange = (p: LogPosition, b: Bound, below: boolean) => {
        if (!b) return true;
        const c = comparePositions(p, { ...parsePosition(`${b.id}:m`)!, code: p.code });
        return below ? c < 0 || (c === 0 && !b.exclusive) : c > 0 || (c === 0 && !b.exclusive);
      };
      const source: LogSource = {
        code: 'm',
        async read(lower, upper, count, order) {
          const hits = eventLog.filter((x) => inRange(x.pos, lower, false) && inRange(x.pos, upper, true));
          return clone(order === 'asc' ? hits.slice(0, count) : hits.reverse().slice(0, count));
        },
      };
      return mergePage([source], q, scopeFilter(q), q.order === 'asc' ? Date.now() : undefined);
    },

    async appendKeyAudit(event: KeyEvent, o: { retentionMs: number }): Promise<void> {
      check();
      const e = validateKeyEvent(event);
      validateRetention(o);
      logged(nextAuditId(), e, o.retentionMs);
    },

    async readGrantEvents(grant: Pick<Grant, 'id' | 'workload' | 'created_at'>): Promise<AuditEvent[]> {
      check();
      const w = workload(grant.workload, false);
      const events = [...(w?.audit?.value ?? []), ...(w?.denials?.value ?? [])].filter(
        (e) => e.grant === grant.id && (e.workload === grant.workload || e.workload === deniedWorkload(grant.workload)),
      );
      return clone(events.sort(byEntryId));
    },

    async revokeKey(mark: RevokedKey): Promise<void> {
      check();
      const m = validateRevokedKey(mark);
      revokedKeys.set(m.kid, clone(m));
    },

    async revokedKeys(now: number): Promise<RevokedKey[]> {
      check();
      see(now);
      return [...revokedKeys.values()].filter((m) => m.until > now).map(clone);
    },

    async publishKey(key: PublishedKey): Promise<void> {
      check();
      const k = validatePublishedKey(key);
      keys.set(k.kid, clone(k));
    },

    async publishedKeys(now: number): Promise<PublishedKey[]> {
      check();
      see(now);
      const out: PublishedKey[] = [];
      for (const [kid, k] of keys) {
        if (k.expires_at <= now) keys.delete(kid);
        else if (!revokedKeys.has(kid)) out.push(clone(k));
      }
      return out;
    },

    async useProofJti(workload: string, proof: { jkt: string; jti: string }, o: { now: number; until: number }): Promise<boolean> {
      check();
      return setOnce(`proof:${tagOf(workload)}:${usedProofDigest(proof)}`, o.now, o.until);
    },

    async useOnce(key: string, o: { now: number; ttlMs: number }): Promise<boolean> {
      check();
      return setOnce(`once:${key}`, o.now, o.now + o.ttlMs);
      return true;
    },

    async ping(): Promise<void> {
      check();
    },

    async close(): Promise<void> {
      closed = true;
    },
  };
}
