import { createHash } from 'node:crypto';
import { z } from 'zod';
import { InvalidRequest, LimitExceeded } from '../errors.js';
import { isWellFormed, NOT_WELL_FORMED } from '../protocol/unicode.js';
import { MAX_ACTOR_CHAIN } from '../protocol/claims.js';
import { clip } from '../util/text.js';
import { isGrantId, tagOfGrantId, workloadTag } from './ids.js';
import type { AuditEvent, OperatorEvent, RevokedKey, CloseOptions, CloseStatus, CreateGrantOptions, Grant, NewGrant, PublishedKey, RenewGrant, RenewOptions } from './store.js';

/**
 * What the Redis store and the memory store share, so both keep exactly the same contract:
 * input validation, the record and audit-event encodings, list limits, and the errors.
 */

/**
 * Audit streams. Lifecycle events (issued, renewed, ended, revoked, replay) have a stream per
 * workload, trimmed by age (audit retention), never by count: no request can evict them. Denials
 * have their own capped stream per workload, and denials of workloads no rule names go to
 * UNMATCHED_PARTITIONS capped streams chosen by source address, so one source can only ever
 * evict its own partition's records. Denials are also clipped (clipDenial) and budgeted by the
 * broker (limits.denial_audit).
 */
/** A workload's denial stream keeps about this many entries (XADD MAXLEN ~). */
export const DENIAL_STREAM_MAXLEN = 1000;
/** Streams the denials of workloads no rule names are spread over, by source address. */
export const UNMATCHED_PARTITIONS = 16;
/** Each unmatched partition keeps about this many entries (XADD MAXLEN ~). */
export const UNMATCHED_PARTITION_MAXLEN = 1000;
export const LIST_LIMIT_DEFAULT = 100;
export const LIST_LIMIT_MAX = 1000;
export const AUDIT_LIMIT_DEFAULT = 1000;
export const AUDIT_LIMIT_MAX = 10_000;
/** Reason recorded on the `grant.denied` event when the active-grant cap refuses a grant. */
export const CAP_DENIAL_REASON = 'active_grant_cap';
/** Reason recorded on the `grant.denied` event when the per-workload issuance rate refuses. */
export const RATE_DENIAL_REASON = 'issuance_rate';
/** Reason recorded on `grant.replay_detected`: a renewal presented a token that is not the latest. */
export const REPLAY_REASON = 'a renewal presented a superseded token: two holders; grant revoked';

// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;
/**
 * Every string of a record or event is well-formed Unicode: the Lua scripts decode records with
 * cjson, which refuses a lone surrogate, so a record holding one could never be ended (issue 11).
 * The broker refuses such input at its edge; this is the store's own guard.
 */
const str = (max: number) => z.string().max(max).refine(isWellFormed, NOT_WELL_FORMED);
const text = (max: number) => str(max).min(1).regex(NO_CONTROL, 'must not contain control characters');
/** Milliseconds since the epoch (or a duration): a safe non-negative integer. */
const ms = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const confirmationSchema = z.union([
  z.object({ 'x5t#S256': text(256) }).strict(),
  z.object({ jkt: text(256) }).strict(),
]);

const grantFields = {
  id: z.string().refine(isGrantId, 'must be a grant id (g_<tag>_<random>)'),
  workload: text(2048),
  workload_kind: z.enum(['oidc', 'x509']),
  issuer: text(2048),
  rule: text(256),
  audience: text(1024),
  actions: z.array(text(256)).max(64),
  resources: z.array(text(2048)).max(64),
  purpose: str(2048),
  task: text(256),
  created_at: ms,
  expires_at: ms,
  token_jti: text(256),
  token_exp: ms,
  cnf: confirmationSchema.optional(),
  act: z
    .array(z.object({ sub: text(2048), issuer: text(2048).optional() }).strict())
    .min(1)
    .max(MAX_ACTOR_CHAIN)
    .optional(),
  kid: text(256).optional(),
  token_digest: z.string().regex(/^[A-Za-z0-9_-]{22}$/, 'must be a token digest').optional(),
};

const newGrantSchema = z.object(grantFields).strict();
const grantSchema = z.object({
  ...grantFields,
  status: z.enum(['active', 'ended', 'revoked']),
  generation: z.number().int().min(1),
  closed_by: text(256).optional(),
  prev_jti: text(256).optional(),
  token_iat: ms.optional(),
});

const rateSchema = z.object({ burst: z.number().int().min(1).max(1_000_000), intervalMs: z.number().positive().max(86_400_000) }).strict();
const retentionSchema = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

const createOptionsSchema = z.object({
  now: ms,
  maxActive: z.number().int().min(1).max(1_000_000),
  retentionMs: retentionSchema,
  rate: rateSchema.optional(),
});

const renewSchema = z
  .object({ id: grantFields.id, workload: text(2048), presentedJti: text(256), jti: text(256), tokenExp: ms, kid: text(256).optional(), tokenDigest: grantFields.token_digest, actor: text(2048).optional() })
  .strict();
const renewOptionsSchema = z.object({ now: ms, retentionMs: retentionSchema, rate: rateSchema.optional(), retryWindowMs: z.number().int().min(0).max(60_000).optional() });
const closeOptionsSchema = z.object({
  now: ms,
  status: z.enum(['ended', 'revoked']),
  reason: str(4096).optional(),
  presentedJti: text(256).optional(),
  by: text(256).optional(),
  operator: text(64).optional(),
  retryWindowMs: z.number().int().min(0).max(60_000).optional(),
});

/** Validates a renewal before it is sent: the id must carry the workload's tag. */
export function validateRenewal(r: RenewGrant, opts: RenewOptions): { renewal: RenewGrant; opts: RenewOptions } {
  const g = renewSchema.safeParse(r);
  if (!g.success) throw new InvalidRequest('invalid renewal', { detail: problems(g.error) });
  const o = renewOptionsSchema.safeParse(opts);
  if (!o.success) throw new InvalidRequest('invalid renewal options', { detail: problems(o.error) });
  if (tagOfGrantId(g.data.id) !== workloadTag(g.data.workload)) throw new InvalidRequest('invalid grant id', { detail: 'grant id does not carry the workload tag' });
  return { renewal: g.data, opts: o.data };
}

export function validateClose(id: string, workload: string, opts: CloseOptions): CloseOptions {
  const o = closeOptionsSchema.safeParse(opts);
  if (!o.success) throw new InvalidRequest('invalid close options', { detail: problems(o.error) });
  if (!isGrantId(id) || tagOfGrantId(id) !== workloadTag(workload)) throw new InvalidRequest('invalid grant id', { detail: 'grant id does not carry the workload tag' });
  return o.data;
}

/** The audit event type of a grant closed with this status. */
export const closeEventType = (status: CloseStatus): 'grant.ended' | 'grant.revoked' => (status === 'ended' ? 'grant.ended' : 'grant.revoked');

/** The issuance rate refused: `waitMs` until the workload's bucket earns a token. */
export function rateExceeded(workload: string, waitMs: number) {
  return new GrantLimitExceeded(RATE_DENIAL_REASON, 'too many tokens requested for this workload; retry later', {
    detail: `workload ${workload} is over its issuance rate`,
    retryAfter: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}

export { takeToken, type BucketState } from '../util/token-bucket.js';

function problems(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
}

/**
 * Validates a grant before it is written. The grant id must carry the workload's own tag, or its
 * record would land in another workload's slot.
 */
export function validateNewGrant(grant: NewGrant, opts: CreateGrantOptions): { grant: Grant; opts: CreateGrantOptions } {
  const g = newGrantSchema.safeParse(grant);
  if (!g.success) throw new InvalidRequest('invalid grant record', { detail: problems(g.error) });
  const o = createOptionsSchema.safeParse(opts);
  if (!o.success) throw new InvalidRequest('invalid grant options', { detail: problems(o.error) });
  if (tagOfGrantId(g.data.id) !== workloadTag(g.data.workload)) {
    throw new InvalidRequest('invalid grant record', { detail: 'grant id does not carry the workload tag' });
  }
  if (g.data.expires_at <= o.data.now) {
    throw new InvalidRequest('invalid grant record', { detail: 'expires_at must be after now' });
  }
  // zod's output is a fresh object: completed in place (a spread copy of it cost more than the parse).
  const record = g.data as Grant;
  record.status = 'active';
  record.generation = 1;
  for (const k of ['cnf', 'act', 'kid', 'token_digest'] as const) if (record[k] === undefined) delete record[k];
  return { grant: record, opts: o.data };
}

/** A grant with this id already exists: ids are random, so this is a bug, never overwritten. */
export class DuplicateGrantId extends Error {
  constructor(readonly grantId: string) {
    super(`grant ${grantId} already exists`);
    this.name = 'DuplicateGrantId';
  }
}

/**
 * A per-workload limit of the store (the live-grant cap or the issuance rate) refused: nothing was
 * written. `auditReason` is the reason the caller records on its `grant.denied` event.
 */
export class GrantLimitExceeded extends LimitExceeded {
  constructor(
    readonly auditReason: typeof CAP_DENIAL_REASON | typeof RATE_DENIAL_REASON,
    description: string,
    opts: { detail: string; retryAfter: number },
  ) {
    super(description, opts);
  }
}

/** The active-grant cap refused a grant; `earliestExpiry` is when the first live grant ends. */
export function capExceeded(workload: string, active: number, maxActive: number, now: number, earliestExpiry: number | undefined) {
  const retryAfter = earliestExpiry === undefined ? 1 : Math.max(1, Math.ceil((earliestExpiry - now) / 1000));
  return new GrantLimitExceeded(CAP_DENIAL_REASON, `too many active grants for this workload (limit ${maxActive}); end a task or retry later`, {
    detail: `workload ${workload} has ${active} live grants (max ${maxActive})`,
    retryAfter,
  });
}

// ── grant record encoding ──
//
// One Redis string of lines: status, expires_at, generation, token_jti, token_exp, workload, then
// the fields that never change as one JSON array in FIXED_FIELDS order, then kid and closed_by
// ('' when none), then prev_jti and token_iat once renewed, then token_digest when recorded. The
// Lua scripts read and rewrite every line but the JSON (lib.lua grant_read/grant_write) and pass
// the JSON through. Records written before kid and closed_by were recorded end at the JSON
// line; they still decode (without them), and the scripts write them back in the new shape.
// Not a hash: Redis keeps a hash compact only while every value is
// at most 64 bytes, and a grant's resources or workload id are often longer; as a hashtable the
// record cost 1.3 KiB. An array, not an object: the names would add a third to the record
// (bench/ measures memory per grant). Newlines are safe separators: every text field refuses
// control characters, and JSON escapes them. The id is not stored: it is the key's own suffix.

/**
 * The parts of a grant that never change, in the order of the record's JSON array. The optional
 * ones come last: cnf, then act (a delegated grant's actors; cnf is `null` there when unbound).
 * Records written before act existed end at cnf (or before it) and decode as they did.
 */
const FIXED_FIELDS = ['workload_kind', 'issuer', 'rule', 'audience', 'actions', 'resources', 'purpose', 'task', 'created_at', 'cnf', 'act'] as const;
/** How many of FIXED_FIELDS every record has (the optional ones follow). */
const REQUIRED_FIXED = FIXED_FIELDS.length - 2;
/** The first lines of a record, in order; the JSON line follows them. */
const RECORD_LINES = 6;
/** Lines after the JSON line: kid, closed_by. */
const TRAILING_LINES = 2;
/** Lines after those, once the grant was renewed: prev_jti, token_iat. */
const RENEWAL_LINES = 2;
/**
 * The line after those, when the latest token's digest is recorded (the renewal lines are then
 * written even when empty). Records without it still decode (a renewal verifies the signature).
 * A broker older than this line reads neither shape with it (its decoders know 7, 9 and 11 lines).
 */
const DIGEST_LINES = 1;

export function grantToRecord(grant: Grant): string {
  const fixed: unknown[] = FIXED_FIELDS.map((k) => grant[k] ?? null);
  // Trailing absent optional fields are left out (the record of an undelegated grant is unchanged).
  while (fixed.length > REQUIRED_FIXED && fixed[fixed.length - 1] === null) fixed.pop();
  const lines = [grant.status, String(grant.expires_at), String(grant.generation), grant.token_jti, String(grant.token_exp), grant.workload];
  const renewed = grant.prev_jti !== undefined && grant.token_iat !== undefined;
  const renewal = renewed ? `\n${grant.prev_jti}\n${grant.token_iat}` : grant.token_digest !== undefined ? '\n\n' : '';
  const digest = grant.token_digest !== undefined ? `\n${grant.token_digest}` : '';
  return `${lines.join('\n')}\n${JSON.stringify(fixed)}\n${grant.kid ?? ''}\n${grant.closed_by ?? ''}${renewal}${digest}`;
}

const jsonOr = (s: string | undefined): unknown => {
  if (s === undefined) return undefined;
  try {
    return JSON.parse(s);
  } catch {
    return Symbol('invalid json');
  }
};
const numOr = (s: string | undefined): unknown => (s === undefined || s === '' ? undefined : Number(s));
/** A record line's number as lib.lua grant_read reads it (digits only, at most 15): both decoders agree. */
const digitsOr = (s: string | undefined): unknown => (s !== undefined && /^\d{1,15}$/.test(s) ? Number(s) : Symbol('not digits'));

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Decodes a stored grant record (`id` is its key's); a record that does not decode is reported, never trusted. */
export function grantFromRecord(id: string, record: string): DecodeResult<Grant> {
  const lines = record.split('\n');
  const shapes = [RECORD_LINES + 1, RECORD_LINES + 1 + TRAILING_LINES, RECORD_LINES + 1 + TRAILING_LINES + RENEWAL_LINES, RECORD_LINES + 1 + TRAILING_LINES + RENEWAL_LINES + DIGEST_LINES];
  if (!shapes.includes(lines.length)) return { ok: false, problem: `record has ${lines.length} lines, not ${shapes.join(', ')}` };
  const [status, expiresAt, generation, tokenJti, tokenExp, workload, json, kid, closedBy, prevJti, tokenIat, tokenDigest] = lines;
  // lib.lua grant_read agrees: both renewal lines or neither, and token_iat digits.
  if (prevJti !== undefined && (prevJti === '') !== (tokenIat === '')) return { ok: false, problem: 'prev_jti and token_iat must be both set or both empty' };
  const fixed = jsonOr(json);
  if (!Array.isArray(fixed) || fixed.length < REQUIRED_FIXED || fixed.length > FIXED_FIELDS.length)
    return { ok: false, problem: `fixed fields are not a JSON array of ${REQUIRED_FIXED} to ${FIXED_FIELDS.length}` };
  // Built by assignment, not by spreading an Object.fromEntries: that made a dictionary-mode
  // object, and building it and zod's pass over it cost ten times the parse itself (bench/).
  const candidate: Record<string, unknown> = {
    id,
    workload,
    status,
    expires_at: digitsOr(expiresAt),
    generation: digitsOr(generation),
    token_jti: tokenJti,
    token_exp: digitsOr(tokenExp),
  };
  // An optional field written as null (cnf before act) is absent.
  fixed.forEach((v: unknown, i) => {
    if (i < REQUIRED_FIXED || v !== null) candidate[FIXED_FIELDS[i]!] = v;
  });
  if (kid) candidate.kid = kid;
  if (closedBy) candidate.closed_by = closedBy;
  if (prevJti) {
    candidate.prev_jti = prevJti;
    candidate.token_iat = digitsOr(tokenIat);
  }
  if (tokenDigest) candidate.token_digest = tokenDigest;
  const parsed = grantSchema.safeParse(candidate);
  if (!parsed.success) return { ok: false, problem: problems(parsed.error) };
  // No key of `candidate` holds undefined, and zod leaves an absent optional key absent.
  return { ok: true, value: parsed.data };
}

// ── the global newest-first index (operators' queries across workloads) ──

/**
 * Shards of the global index: each a zset `<prefix>{gi:N}:grants` in a slot of its own (member
 * grant id, score created_at), so the index spreads over a Redis Cluster and no write touches a
 * key shared by all workloads. A workload's grants all go to one shard.
 */
export const GLOBAL_INDEX_SHARDS = 16;

/** The shard of a workload: the first byte of its tag, mod GLOBAL_INDEX_SHARDS. */
export const globalShard = (workload: string): number => Buffer.from(workloadTag(workload), 'base64url')[0]! % GLOBAL_INDEX_SHARDS;

/** Whether entry `e` comes after `pos` newest first: a lower score, or the same score and a lower id (ZREVRANGE order). */
export const isAfter = (e: { score: number; id: string }, pos: { score: number; id: string }): boolean =>
  e.score < pos.score || (e.score === pos.score && e.id < pos.id);

export const isLive = (g: Grant, now: number): boolean => g.status === 'active' && g.expires_at > now;

/** Newest first: created_at descending, then id descending (what ZREVRANGE does on equal scores). */
export function newestFirst(a: Grant, b: Grant): number {
  if (a.created_at !== b.created_at) return b.created_at - a.created_at;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

export function listLimit(limit: number | undefined): number {
  if (limit === undefined) return LIST_LIMIT_DEFAULT;
  if (!Number.isFinite(limit)) return LIST_LIMIT_MAX;
  return Math.min(LIST_LIMIT_MAX, Math.max(1, Math.floor(limit)));
}

export function auditLimit(limit: number | undefined): number {
  if (limit === undefined) return AUDIT_LIMIT_DEFAULT;
  if (!Number.isFinite(limit)) return AUDIT_LIMIT_MAX;
  return Math.min(AUDIT_LIMIT_MAX, Math.max(1, Math.floor(limit)));
}

// ── audit events (stream entries: flat field/value strings; actions as JSON) ──

const auditSchema = z
  .object({
    id: z.string().optional(),
    type: z.enum(['grant.issued', 'grant.denied', 'grant.renewed', 'grant.ended', 'grant.revoked', 'grant.replay_detected']),
    at: ms,
    workload: text(2048),
    grant: str(256).optional(),
    rule: str(256).optional(),
    reason: str(4096).optional(),
    audience: str(1024).optional(),
    actions: z.array(str(256)).max(64).optional(),
    task: str(256).optional(),
    generation: z.number().int().min(1).optional(),
    /** A summary: how many denials past the audit budget it stands for. */
    count: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    operator: str(64).optional(),
    /** A delegated grant's current actor (RFC 8693 §4.1): who acted for `workload`. */
    actor: str(2048).optional(),
  })
  .strict();

export function validateAudit(event: AuditEvent): AuditEvent {
  const parsed = auditSchema.safeParse(event);
  if (!parsed.success) throw new InvalidRequest('invalid audit event', { detail: problems(parsed.error) });
  const { id: _id, ...rest } = parsed.data;
  return rest;
}

export function validateRetention(opts: { retentionMs: number }): number {
  const r = opts.retentionMs;
  if (!Number.isSafeInteger(r) || r < 1) throw new InvalidRequest('invalid audit retention', { detail: `retentionMs=${r}` });
  return r;
}

const AUDIT_FIELD_ORDER = ['type', 'at', 'workload', 'grant', 'rule', 'reason', 'audience', 'actions', 'task', 'generation', 'count', 'operator', 'actor'] as const;

/** The event as XADD field/value pairs (absent members are left out). */
export function auditToFields(e: AuditEvent): string[] {
  const out: string[] = [];
  for (const k of AUDIT_FIELD_ORDER) {
    const v = e[k];
    if (v === undefined) continue;
    out.push(k, k === 'actions' ? JSON.stringify(v) : String(v));
  }
  return out;
}

export function auditFromFields(id: string, fields: string[]): DecodeResult<AuditEvent> {
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i] as string] = fields[i + 1] as string;
  const parsed = auditSchema.safeParse({
    id,
    type: h.type,
    at: numOr(h.at),
    workload: h.workload,
    grant: h.grant,
    rule: h.rule,
    reason: h.reason,
    audience: h.audience,
    actions: jsonOr(h.actions),
    task: h.task,
    generation: numOr(h.generation),
    count: numOr(h.count),
    operator: h.operator,
    actor: h.actor,
  });
  if (!parsed.success) return { ok: false, problem: problems(parsed.error) };
  const e: AuditEvent = parsed.data;
  for (const k of Object.keys(e) as (keyof AuditEvent)[]) if (e[k] === undefined) delete e[k];
  return { ok: true, value: e };
}

// ── operator events (operator/): their own streams, flat field/value strings ──

/** The operators' read stream keeps about this many entries (XADD MAXLEN ~); changes are trimmed by age only. */
export const OPERATOR_READS_MAXLEN = 10_000;

const operatorEventSchema = z
  .object({
    id: z.string().optional(),
    type: z.literal('operator.action'),
    at: ms,
    action: z.enum(['grants.revoke', 'keys.rotate', 'keys.revoke', 'grants.query', 'grants.show', 'workloads.list', 'keys.list', 'audit.read', 'audit.tail', 'policy.explain']),
    operator: text(64),
    role: z.enum(['auditor', 'admin']),
    reason: str(1024).optional(),
    selector: str(4096).optional(),
    count: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    dry_run: z.boolean().optional(),
    done: z.boolean().optional(),
    kid: str(256).optional(),
    instance: str(256).optional(),
  })
  .strict();

const OPERATOR_FIELD_ORDER = ['type', 'at', 'action', 'operator', 'role', 'reason', 'selector', 'count', 'dry_run', 'done', 'kid', 'instance'] as const;

export function validateOperatorEvent(event: OperatorEvent): OperatorEvent {
  const parsed = operatorEventSchema.safeParse(event);
  if (!parsed.success) throw new InvalidRequest('invalid operator event', { detail: problems(parsed.error) });
  const { id: _id, ...rest } = parsed.data;
  return rest;
}

export function operatorEventToFields(e: OperatorEvent): string[] {
  const out: string[] = [];
  for (const k of OPERATOR_FIELD_ORDER) {
    const v = e[k];
    if (v !== undefined) out.push(k, String(v));
  }
  return out;
}

export function operatorEventFromFields(id: string, fields: string[]): DecodeResult<OperatorEvent> {
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i] as string] = fields[i + 1] as string;
  const bool = (v: string | undefined) => (v === undefined ? undefined : v === 'true' ? true : v === 'false' ? false : v);
  const parsed = operatorEventSchema.safeParse({
    id,
    type: h.type,
    at: numOr(h.at),
    action: h.action,
    operator: h.operator,
    role: h.role,
    reason: h.reason,
    selector: h.selector,
    count: numOr(h.count),
    dry_run: bool(h.dry_run),
    done: bool(h.done),
    kid: h.kid,
    instance: h.instance,
  });
  if (!parsed.success) return { ok: false, problem: problems(parsed.error) };
  const e = parsed.data as OperatorEvent;
  for (const k of Object.keys(e) as (keyof OperatorEvent)[]) if (e[k] === undefined) delete e[k];
  return { ok: true, value: e };
}

// ── denials: clipped, partitioned, merged ──

/**
 * What a denial keeps of each field the caller chose: at most about 1.4 KB of text in all, so a
 * recorded denial costs Redis well under 2 KB however long the request was.
 */
export const DENIAL_CLIP = { workload: 256, rule: 64, reason: 256, audience: 128, action: 48, actions: 8, task: 64 } as const;

/** `clip`, never between the halves of a surrogate pair (a lone half is not well-formed text). */
const cut = (text: string, max: number): string => clip(text, /[\uD800-\uDBFF]/.test(text[max - 1] ?? '') ? max - 1 : max);

/** The workload id as a denial records it (clipped: see DENIAL_CLIP). */
export const deniedWorkload = (workload: string): string => cut(workload, DENIAL_CLIP.workload);

/** A denial with its long fields clipped (`…` marks a cut; a cut list names how many it left out). */
export function clipDenial(e: AuditEvent): AuditEvent {
  const out: AuditEvent = { ...e, workload: deniedWorkload(e.workload) };
  if (e.actor !== undefined) out.actor = deniedWorkload(e.actor);
  if (e.rule !== undefined) out.rule = cut(e.rule, DENIAL_CLIP.rule);
  if (e.reason !== undefined) out.reason = cut(e.reason, DENIAL_CLIP.reason);
  if (e.audience !== undefined) out.audience = cut(e.audience, DENIAL_CLIP.audience);
  if (e.task !== undefined) out.task = cut(e.task, DENIAL_CLIP.task);
  if (e.actions !== undefined) {
    const shown = e.actions.slice(0, DENIAL_CLIP.actions).map((a) => cut(a, DENIAL_CLIP.action));
    if (e.actions.length > DENIAL_CLIP.actions) shown[shown.length - 1] = `(and ${e.actions.length - DENIAL_CLIP.actions + 1} more)`;
    out.actions = shown;
  }
  return out;
}

/** The unmatched-denial partition of a source address (or, without one, of the workload id). */
export function unmatchedPartition(source: string): number {
  return createHash('sha256').update(source).digest().readUInt32BE(0) % UNMATCHED_PARTITIONS;
}

/**
 * An event's id in a log merged from several streams: the entry id (`<ms>-<seq>`), qualified by
 * its stream (`:d` a workload's denials, `:u<n>` an unmatched partition; lifecycle bare), since
 * each stream numbers its own entries.
 */
export const qualifiedId = (entryId: string, stream: string): string => (stream ? `${entryId}:${stream}` : entryId);

/**
 * Events of several streams in time order, by entry id (Redis's clock). Streams number their
 * entries apart, so within one millisecond the event's `at` decides first.
 */
export function byEntryId(a: { id?: string; at: number }, b: { id?: string; at: number }): number {
  const [am = 0, as = 0] = (a.id ?? '').split(':')[0]!.split('-').map(Number);
  const [bm = 0, bs = 0] = (b.id ?? '').split(':')[0]!.split('-').map(Number);
  return am - bm || a.at - b.at || as - bs;
}

// ── published signing keys ──

/** JWK members that hold private or symmetric key material (RFC 7518 §6). Never published. */
export const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

const publicJwkSchema = z
  .record(z.string(), z.unknown())
  .refine((jwk) => typeof jwk.kty === 'string' && jwk.kty.length > 0, 'jwk must have a kty')
  .refine((jwk) => PRIVATE_JWK_MEMBERS.every((m) => !(m in jwk)), 'jwk must not contain private key material');

export const publishedKeySchema = z
  .object({
    kid: text(256),
    jwk: publicJwkSchema,
    created_at: ms,
    retire_at: ms,
    expires_at: ms,
  })
  .strict();

/** Refuses anything but a well-formed public key (a private JWK here is a bug, never stored). */
export function validatePublishedKey(key: PublishedKey): PublishedKey {
  const parsed = publishedKeySchema.safeParse(key);
  if (!parsed.success) throw new InvalidRequest('invalid published key', { detail: problems(parsed.error) });
  if (parsed.data.jwk.kid !== undefined && parsed.data.jwk.kid !== parsed.data.kid) {
    throw new InvalidRequest('invalid published key', { detail: 'jwk.kid differs from kid' });
  }
  return parsed.data;
}

/** A published key as stored: the key's members and its `mac` (key-publication.ts), which the reader checks. */
export function encodePublishedKey(key: PublishedKey, mac: string): string {
  return JSON.stringify({ ...key, mac });
}

export function decodePublishedKey(json: string): DecodeResult<{ key: PublishedKey; mac: unknown }> {
  const d = decodeWithMac(json, publishedKeySchema);
  return d.ok ? { ok: true, value: { key: d.value.fields, mac: d.value.mac } } : d;
}

/** A stored JSON object carrying a `mac` beside the fields `schema` validates (published keys, revocation marks). */
function decodeWithMac<T>(json: string, schema: z.ZodType<T>): DecodeResult<{ fields: T; mac: unknown }> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    return { ok: false, problem: 'not JSON' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, problem: 'not a JSON object' };
  const { mac, ...fields } = raw as Record<string, unknown>;
  const parsed = schema.safeParse(fields);
  if (!parsed.success) return { ok: false, problem: problems(parsed.error) };
  return { ok: true, value: { fields: parsed.data, mac } };
}

/** True when the stored value is JSON whose jwk holds private material (must be purged). */
export function holdsPrivateMaterial(json: string): boolean {
  try {
    const v = JSON.parse(json) as { jwk?: unknown };
    const jwk = v?.jwk;
    return typeof jwk === 'object' && jwk !== null && PRIVATE_JWK_MEMBERS.some((m) => m in jwk);
  } catch {
    return false;
  }
}

// ── revoked signing keys ──

const revokedKeySchema = z.object({ kid: text(256), revoked_at: ms, by: text(64), until: ms }).strict();

export function validateRevokedKey(mark: RevokedKey): RevokedKey {
  const parsed = revokedKeySchema.safeParse(mark);
  if (!parsed.success) throw new InvalidRequest('invalid key revocation', { detail: problems(parsed.error) });
  return parsed.data;
}

export function decodeRevokedKey(json: string): DecodeResult<{ mark: RevokedKey; mac: unknown }> {
  const d = decodeWithMac(json, revokedKeySchema);
  return d.ok ? { ok: true, value: { mark: d.value.fields, mac: d.value.mac } } : d;
}
