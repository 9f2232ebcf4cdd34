import { z } from 'zod';
import { actorClaim } from '../protocol/claims.js';
import type { GrantPage, GrantRow, GrantRowStatus } from '../protocol/operator.js';
import type { Operator } from '../auth/operators.js';
import { InvalidRequest, NotFound } from '../errors.js';
import { isGrantId } from '../grants/ids.js';
import type { AuditEvent, Grant } from '../grants/store.js';
import { decodeCursor, encodeCursor, MAX_CURSOR } from './cursor.js';
import { auditOperator, iso, MAX_EXAMINED, parseParams, type OperatorDeps } from './deps.js';
import { pageLimitParam, paramText } from './deps.js';

export type { GrantPage, GrantRow, GrantRowStatus };

export const statusOf = (g: Grant, now: number): GrantRowStatus => (g.status !== 'active' ? g.status : g.expires_at > now ? 'active' : 'expired');


export function grantRow(g: Grant, now: number): GrantRow {
  return {
    grant: g.id,
    workload: g.workload,
    evidence: { kind: g.workload_kind, issuer: g.issuer },
    task: g.task,
    purpose: g.purpose,
    intent: { audience: g.audience, actions: g.actions, resources: g.resources },
    rule: g.rule,
    created_at: iso(g.created_at),
    expires_at: iso(g.expires_at),
    token_expires_at: iso(Math.min(g.token_exp, g.expires_at)),
    generation: g.generation,
    status: statusOf(g, now),
    ...(g.closed_by ? { closed_by: g.closed_by } : {}),
    ...(g.kid ? { kid: g.kid } : {}),
    ...(g.cnf ? { binding: 'jkt' in g.cnf ? ('jkt' as const) : ('x5t#S256' as const) } : {}),
    ...(g.act ? { act: actorClaim(g.act.map((a) => a.sub))! } : {}),
  };
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;
/** A query string value: well-formed, bounded, no control characters. */
const value = paramText;
const time = z
  .string()
  .regex(RFC3339, 'must be an RFC 3339 time such as 2026-12-01T10:00:00Z')
  .transform((v, ctx) => {
    const ms = Date.parse(v);
    if (!Number.isFinite(ms)) ctx.addIssue({ code: 'custom', message: 'is not a valid time' });
    return ms;
  });

export const grantQuerySchema = z
  .object({
    workload: value(2048).optional(),
    task: value(256).optional(),
    audience: value(1024).optional(),
    issuer: value(2048).optional(),
    rule: value(256).optional(),
    kid: value(256).optional(),
    status: z.enum(['active', 'ended', 'revoked', 'expired']).optional(),
    since: time.optional(),
    until: time.optional(),
    limit: pageLimitParam.optional(),
    cursor: z.string().max(MAX_CURSOR).optional(),
  })
  .strict();

export type GrantQuery = z.output<typeof grantQuerySchema>;

/** The filters of a query (or a kill-switch selector) as one predicate on a record. */
export function grantFilter(q: Omit<GrantQuery, 'limit' | 'cursor' | 'since' | 'until'>, now: number): (g: Grant) => boolean {
  return (g) =>
    (q.workload === undefined || g.workload === q.workload) &&
    (q.task === undefined || g.task === q.task) &&
    (q.audience === undefined || g.audience === q.audience) &&
    (q.issuer === undefined || g.issuer === q.issuer) &&
    (q.rule === undefined || g.rule === q.rule) &&
    (q.kid === undefined || g.kid === q.kid) &&
    (q.status === undefined || statusOf(g, now) === q.status);
}


/**
 * GET /v1/grants (auditor): grants newest first. With `workload`, from that workload's own
 * index; without, from the global index (merged shards). The other filters are applied while
 * walking, at most MAX_EXAMINED grants per call: a page may hold fewer rows than `limit` and
 * still carry a cursor.
 */
export async function queryGrants(deps: OperatorDeps, op: Operator, params: unknown): Promise<GrantPage> {
  const q = parseParams(grantQuerySchema, params);
  if (q.since !== undefined && q.until !== undefined && q.since > q.until) throw new InvalidRequest('since must not be after until');
  const now = deps.clock();
  const limit = q.limit ?? 100;
  const result = await deps.store.walkGrants({
    now,
    retentionMs: deps.config.grants.audit_retention,
    ...(q.workload !== undefined ? { workload: q.workload } : {}),
    ...(q.cursor !== undefined ? { after: decodeCursor(q.cursor)! } : {}),
    ...(q.since !== undefined ? { since: q.since } : {}),
    ...(q.until !== undefined ? { until: q.until } : {}),
    want: limit,
    maxExamined: MAX_EXAMINED,
    match: grantFilter(q, now),
  });
  const page: GrantPage = { grants: result.grants.map((g) => grantRow(g, now)), ...(result.next ? { cursor: encodeCursor(result.next) } : {}) };
  await auditOperator(deps, op, 'grants.query', { selector: JSON.stringify(filtersOf(q)), count: page.grants.length }, true);
  return page;
}

/** One grant with its audit history, as GET /v1/grants/{id} answers. */
export type GrantDetail = GrantRow & { events: AuditEvent[] };

/** GET /v1/grants/{id} (auditor): the grant and its events (issued, renewed, ended, revoked, replays, denials of its renewal). */
export async function showGrant(deps: OperatorDeps, op: Operator, id: string): Promise<GrantDetail> {
  if (!isGrantId(id)) throw new InvalidRequest('not a grant id');
  const g = await deps.store.getGrant(id);
  if (!g) throw new NotFound('no such grant (it may have passed the audit retention)');
  const events = await deps.store.readGrantEvents(g);
  await auditOperator(deps, op, 'grants.show', { selector: JSON.stringify({ grant: id }), count: 1 }, true);
  return { ...grantRow(g, deps.clock()), events };
}

const filtersOf = (q: GrantQuery) => {
  const { cursor: _c, ...rest } = q;
  return rest;
};
