import type { RateLimit } from '../util/token-bucket.js';
import type { Confirmation } from '../protocol/claims.js';
import type { AuditLogPage, AuditLogQuery, KeyEvent } from './audit-log.js';

export type GrantStatus = 'active' | 'ended' | 'revoked';

/** The Redis record of one task's authority. Times are ms since the epoch. */
export interface Grant {
  id: string;
  workload: string;
  workload_kind: 'oidc' | 'x509';
  /** Token issuer or trust domain that vouched for the workload. */
  issuer: string;
  /** Name of the policy rule that allowed it. */
  rule: string;
  audience: string;
  actions: string[];
  resources: string[];
  purpose: string;
  task: string;
  status: GrantStatus;
  created_at: number;
  /** End of the grant's lifetime; ending or revoking moves it to now. */
  expires_at: number;
  /** Renewal counter: the generation of the latest token minted for this grant (starts at 1). */
  generation: number;
  /** jti and exp (ms) of the latest token minted for this grant. */
  token_jti: string;
  token_exp: number;
  cnf?: Confirmation;
  /**
   * A delegated grant (RFC 8693 §4.1): the workloads acting for `workload`, the current actor
   * first, then the actors it acted for in turn. The current actor renews it; `issuer` is who
   * vouched for that actor (absent for the earlier ones, known only by their tokens' `act`).
   */
  act?: ActorLink[];
  /** The signing key of the latest token (absent in records written before it was recorded). */
  kid?: string;
  /** Who ended or revoked it (`holder`, `operator:<name>`, `resource_server:<name>`, `replay_detected`, `not_delivered`). */
  closed_by?: string;
  /**
   * Set by the latest renewal (absent before the first, and in records written before they were
   * recorded): the jti of the token it superseded, and when (ms) it minted the latest token, the
   * token's iat. A renewal retried within the window gets the latest token re-signed from these.
   */
  prev_jti?: string;
  token_iat?: number;
  /**
   * A keyed digest of the whole latest token (tokens/token-digest.ts): a renewal presenting
   * exactly these bytes skips only the signature check. Absent in records written before it was
   * recorded, or by a broker without it; a retried renewal leaves it naming the original bytes.
   */
  token_digest?: string;
}

/** One actor of a delegation chain. */
export interface ActorLink {
  sub: string;
  issuer?: string;
}

export type NewGrant = Omit<Grant, 'status' | 'generation' | 'closed_by' | 'prev_jti' | 'token_iat'>;

export type AuditEventType =
  | 'grant.issued'
  | 'grant.denied'
  | 'grant.renewed'
  | 'grant.ended'
  | 'grant.revoked'
  | 'grant.replay_detected';

/** One entry of the audit stream. Never holds a token or any secret. */
export interface AuditEvent {
  /** Stream entry id (assigned by the store). */
  id?: string;
  type: AuditEventType;
  at: number;
  workload: string;
  grant?: string;
  rule?: string;
  /** Why a request was denied, or other short operator-facing context. */
  reason?: string;
  audience?: string;
  actions?: string[];
  task?: string;
  /** Token generation this event concerns (renewals, replays). */
  generation?: number;
  /** A denial summary: how many denials past the audit budget this one event stands for. */
  count?: number;
  /** The operator who caused it (an operator's revocation). */
  operator?: string;
  /** A delegated grant's current actor, on its issuance and renewals (RFC 8693 §4.1). */
  actor?: string;
}

/** What an operator did (operator/): one event per action, naming the operator. */
export type OperatorAction =
  | 'grants.revoke'
  | 'keys.rotate'
  | 'keys.revoke'
  | 'grants.query'
  | 'grants.show'
  | 'workloads.list'
  | 'keys.list'
  | 'audit.read'
  | 'audit.tail'
  | 'policy.explain';

/**
 * One entry of the operators' audit stream (`<prefix>audit:operator`, trimmed by age; reads go to
 * `<prefix>audit:operator:reads`, capped by count, so polling cannot grow the store). Never holds a
 * credential, a token or any secret.
 */
export interface OperatorEvent {
  /** Stream entry id (assigned by the store). */
  id?: string;
  type: 'operator.action';
  at: number;
  action: OperatorAction;
  operator: string;
  role: 'auditor' | 'admin';
  /** The operator's stated reason (revocations). */
  reason?: string;
  /** The selector or query, as canonical JSON (bounded). */
  selector?: string;
  /** Grants revoked (or matched, in a dry run), rows returned. */
  count?: number;
  dry_run?: boolean;
  /** Whether the operation is complete (a revocation that returned done), else more calls follow. */
  done?: boolean;
  /** The signing key concerned (keys.rotate: the new one; keys.revoke). */
  kid?: string;
  /** The broker instance that acted (keys.rotate, keys.revoke). */
  instance?: string;
}

/** Public half of a signing key, as published for every broker instance to serve. */
export interface PublishedKey {
  kid: string;
  /** Public JWK (never a private member). */
  jwk: Record<string, unknown>;
  created_at: number;
  /** After this, the key signs nothing more. */
  retire_at: number;
  /** After this, the key leaves the JWKS (retire_at + overlap). */
  expires_at: number;
}

/** A signing key an operator revoked (POST /v1/grants/revoke by key_id). */
export interface RevokedKey {
  kid: string;
  revoked_at: number;
  /** The operator who revoked it. */
  by: string;
  /** Kept until then (ms): after it the key is long out of every JWKS anyway. */
  until: number;
}

/**
 * The per-workload issuance rate (a token bucket): issuance and renewal each take one token, in
 * the same atomic step as their write.
 */
export type { RateLimit };

export interface CreateGrantOptions {
  now: number;
  /** Cap on live (active and unexpired) grants for this workload. */
  maxActive: number;
  /** How long the record and its indexes outlive the grant's end, for audit. */
  retentionMs: number;
  /** Per-workload issuance rate; absent: unlimited. */
  rate?: RateLimit;
}

export type VoidOutcome = 'ended' | 'marked' | 'noop';

/** A renewal: the caller presented the token `presentedJti`; the broker minted `jti` to replace it. */
export interface RenewGrant {
  id: string;
  workload: string;
  presentedJti: string;
  jti: string;
  /** exp (ms) of the new token. */
  tokenExp: number;
  /** The key that signed the new token. */
  kid?: string;
  /** The new token's digest (Grant.token_digest); absent: the record keeps none. A retry leaves the recorded one. */
  tokenDigest?: string;
  /** A delegated grant's actor, who renews it: named on the `grant.renewed` event. */
  actor?: string;
}

export interface RenewOptions {
  now: number;
  retentionMs: number;
  rate?: RateLimit;
  /**
   * A renewal retried within this many ms of the renewal it repeats (the presented token is the
   * grant's `prev_jti`, and `jti`/`tokenExp` name the grant's latest token): outcome `current`,
   * nothing written. Absent or 0: any superseded token is a replay.
   */
  retryWindowMs?: number;
}

export type RenewOutcome =
  /** The new token is now the grant's latest; `generation` is its number. */
  | { outcome: 'renewed'; grant: Grant }
  /** A retried renewal (RenewOptions.retryWindowMs): the latest token stands; nothing changed. */
  | { outcome: 'current'; grant: Grant }
  /** No record of this grant for this workload (a record that does not decode throws UnreadableGrant). */
  | { outcome: 'unknown' }
  /** Ended, revoked or expired: nothing changed. */
  | { outcome: 'inactive'; grant: Grant }
  /** The presented token is not the latest: two holders. The grant was revoked at once. */
  | { outcome: 'replay'; grant: Grant };

/** How a grant closes: its holder ended it, or it was revoked (RFC 7009, operator, replay). */
export type CloseStatus = 'ended' | 'revoked';

export interface CloseOptions {
  now: number;
  status: CloseStatus;
  /** Operator-facing context for the audit event (who closed it, and how). */
  reason?: string;
  /** Who closed it, recorded in the grant (Grant.closed_by). */
  by?: string;
  /** The operator who revoked it, named on the audit event. */
  operator?: string;
  /**
   * The jti of the token its holder presented. When it is not the grant's latest, that is a
   * second holder (as on renewal): the grant is revoked with `grant.replay_detected` instead.
   */
  presentedJti?: string;
  /**
   * The token the latest renewal superseded, presented within this many ms of that renewal, is
   * its holder whose renewal answer was lost (RenewOptions.retryWindowMs): it closes the grant as
   * the latest token would. Absent or 0: any superseded token is a replay.
   */
  retryWindowMs?: number;
}

export type CloseOutcome =
  /** It was live; now its expiry is `now`. */
  | { outcome: 'closed'; grant: Grant }
  /** Already ended, revoked or expired: nothing changed. */
  | { outcome: 'inactive'; grant: Grant }
  /** `presentedJti` was superseded: revoked, with grant.replay_detected. */
  | { outcome: 'replay'; grant: Grant }
  /** No record of this grant for this workload (a record that does not decode throws UnreadableGrant). */
  | { outcome: 'unknown' };

/** Audit reason of a grant ended because its token was never delivered. */
export const NOT_DELIVERED_REASON = 'not_delivered: the grant write was not confirmed, so no token was returned';

export interface AppendAuditOptions {
  retentionMs: number;
  /** A denial of a workload no policy rule names: it goes to the unmatched partition of `source`. */
  unmatched?: boolean;
  /** The caller's source address (normalised, e.g. an IPv6 /64): picks the unmatched partition. */
  source?: string;
}

/** A place in a newest-first index: entries after it have a lower score, or the same score and a lower id. */
export interface IndexPosition {
  /** created_at (grants) or last-seen time (workloads), ms. */
  score: number;
  id: string;
}

export interface WalkOptions {
  now: number;
  retentionMs: number;
  /** Walk this workload's own index; absent: the global index over every workload. */
  workload?: string;
  /** Continue after this entry. */
  after?: IndexPosition;
  /** Entries created before this (ms) end the walk. */
  since?: number;
  /** Entries created after this (ms) are passed over (the walk starts at it). */
  until?: number;
  /** Stop once this many grants matched. */
  want: number;
  /** Stop once this many index entries were examined (records read), matching or not. */
  maxExamined: number;
  /** Which grants count (all when absent). */
  match?: (grant: Grant) => boolean;
}

export interface WalkResult {
  /** Matching grants, newest first. */
  grants: Grant[];
  /** Where a next call continues; absent when the index has nothing more (within since). */
  next?: IndexPosition;
  examined: number;
}

/** A workload with grants within retention, as the operators' listing shows it. */
export interface WorkloadSummary {
  id: string;
  /** Live grants now (active and unexpired). */
  live: number;
  /** Latest lifecycle event (issued, renewed, ended, revoked), ms; else when it was last seen issuing. */
  last_activity: number;
  /** When it was last seen issuing (the hint index's score, refreshed about once a minute). */
  last_seen: number;
}

export interface ListOptions {
  now: number;
  /** Only grants that are live (active and unexpired). */
  liveOnly?: boolean;
  limit?: number;
}

/**
 * Where grants live. Redis in production, memory in dev mode; both pass the same contract suite.
 * Every method that changes state is atomic, and writes its audit event in the same step.
 * Every string written must be well-formed Unicode (InvalidRequest otherwise). A grant record that
 * is there but does not decode is never "no grant": reading or changing it throws UnreadableGrant
 * (logged with the grant id) and changes nothing; listings skip it, logged likewise.
 */
export interface GrantStore {
  readonly kind: 'redis' | 'memory';
  /**
   * Atomically: prune expired entries, enforce `maxActive` and the issuance rate, write the
   * grant, its indexes (by workload, by task) and a `grant.issued` audit event. Throws
   * GrantLimitExceeded when the cap or the rate refuses (then nothing is written: the caller
   * records the denial within its audit budget), Unavailable when the store is.
   */
  createGrant(grant: NewGrant, opts: CreateGrantOptions): Promise<Grant>;
  /**
   * Makes the outcome of a create whose reply never came definite: ends the grant now (with a
   * `grant.ended` event) if it was written and is active, or marks the id so a create arriving
   * late writes nothing. Idempotent.
   */
  voidGrant(id: string, workload: string, opts: { now: number }): Promise<VoidOutcome>;
  /**
   * Atomically renews a live grant: when `presentedJti` is its latest token, takes a rate token,
   * records `jti` as the latest (generation + 1) and writes `grant.renewed`. When it is not, the
   * grant is revoked and `grant.replay_detected` written. Throws GrantLimitExceeded on the rate
   * limit (nothing written).
   */
  renewGrant(renewal: RenewGrant, opts: RenewOptions): Promise<RenewOutcome>;
  /** Atomically moves a live grant's expiry to now with the status and its audit event. */
  closeGrant(id: string, workload: string, opts: CloseOptions): Promise<CloseOutcome>;
  getGrant(id: string): Promise<Grant | null>;
  /** Grants of one workload, newest first. */
  listWorkloadGrants(workload: string, opts: ListOptions): Promise<Grant[]>;
  /** Grants of one workload's task, newest first, among its latest 10,240 grants (Redis: no index by task). */
  listTaskGrants(workload: string, task: string, opts: ListOptions): Promise<Grant[]>;
  /**
   * Grants newest first from one workload's index, or from the global index (every workload,
   * sharded over a fixed number of keys, so it works on Redis Cluster): at most `maxExamined`
   * entries read per call, the page may be partial, and `next` continues it. Index entries whose
   * records are gone are pruned as they are met, and entries older than the retention on every walk.
   * Never SCAN or KEYS.
   */
  walkGrants(opts: WalkOptions): Promise<WalkResult>;
  /** Workloads with grants within retention, most recently seen first, with live counts (hint index). */
  listWorkloads(opts: { now: number; retentionMs: number; limit: number; after?: IndexPosition }): Promise<{ workloads: WorkloadSummary[]; next?: IndexPosition }>;
  /**
   * Live grants now (the metrics gauge), at a bounded cost: summed over the live indexes of the
   * workloads that started a task within `maxLifetimeMs` (no older grant can be live), at most
   * `maxWorkloads` of them (most recent first); `complete` is false when more were left out.
   * Never a walk over grants.
   */
  countLiveGrants(opts: { now: number; maxLifetimeMs: number; maxWorkloads: number }): Promise<{ count: number; complete: boolean }>;
  /**
   * Appends an audit event (denials; state changes write their own). A denial is clipped
   * (codec.ts clipDenial) and goes to the workload's capped denial stream, apart from its
   * lifecycle events, which no denial can evict; other events go to the lifecycle stream.
   * `unmatched`: the workload is named by no policy rule. Such denials go to one of a few shared
   * capped partitions chosen by `source`, so that arbitrary attested ids cannot make the store
   * grow a stream each, and one source can only evict records of its own partition.
   */
  appendAudit(event: AuditEvent, opts: AppendAuditOptions): Promise<void>;
  /** The workload's audit events, lifecycle and denials merged, oldest first. */
  readAudit(workload: string, opts?: { limit?: number }): Promise<AuditEvent[]>;
  /** The latest denials of workloads no rule names (all partitions merged), oldest first. */
  readUnmatchedAudit(opts?: { limit?: number }): Promise<AuditEvent[]>;
  /**
   * Appends an operator's action to the operators' stream: state changes to one trimmed by age
   * only, reads (`read: true`) to one capped by count (OPERATOR_READS_MAXLEN).
   */
  appendOperatorAudit(event: OperatorEvent, opts: { retentionMs: number; read?: boolean }): Promise<void>;
  /** The latest operator events (changes and reads merged), oldest first. */
  readOperatorAudit(opts?: { limit?: number }): Promise<OperatorEvent[]>;

  /**
   * The merged event log (operator/audit-log.ts; design in grants/audit-log.ts): every workload's
   * events from the bounded shard streams plus the key and operator streams, or one workload's
   * (one grant's) own streams. Bounded work per call (`maxExamined`).
   */
  readAuditLog(query: AuditLogQuery): Promise<AuditLogPage>;
  /** Appends a signing key event (keyring: published, retired) to the keys stream, trimmed by age. */
  appendKeyAudit(event: KeyEvent, opts: { retentionMs: number }): Promise<void>;
  /**
   * One grant's audit events (its lifecycle events, and denials naming it), oldest first: read
   * from the workload's streams from the grant's creation on, at most `limit` entries examined.
   */
  readGrantEvents(grant: Pick<Grant, 'id' | 'workload' | 'created_at'>, opts?: { limit?: number }): Promise<AuditEvent[]>;

  publishKey(key: PublishedKey): Promise<void>;
  /**
   * Marks a signing key revoked, for every broker: the mark is authenticated with the key
   * publication secret (key-publication.ts), so Redis write access alone cannot add one, and
   * publishedKeys leaves a marked key out. Kept until `until` (the key's own expiry at least).
   */
  revokeKey(mark: RevokedKey): Promise<void>;
  /** The authentic revocation marks (unauthentic ones are ignored and logged). */
  revokedKeys(now: number): Promise<RevokedKey[]>;
  /** Keys whose expires_at is in the future (prunes the rest). */
  publishedKeys(now: number): Promise<PublishedKey[]>;

  /**
   * Records a DPoP proof as used (RFC 9449 §11.1) in the workload's slot until `until` (ms), when
   * the proof stops being acceptable anyway: true the first time, false for a proof already used.
   */
  useProofJti(workload: string, proof: { jkt: string; jti: string }, opts: { now: number; until: number }): Promise<boolean>;

  /** Throws Unavailable when the store cannot serve. */
  /**
   * Records that `key` (a one-time value: a client assertion's jti) was used, for `ttlMs`: true
   * the first time, false while it is remembered. One key of its own (SET NX PX), in no
   * workload's slot; the key is hashed by the caller, never a secret.
   */
  useOnce(key: string, opts: { now: number; ttlMs: number }): Promise<boolean>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
