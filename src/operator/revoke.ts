import { z } from 'zod';
import type { Operator } from '../auth/operators.js';
import type { RevokeResult } from '../protocol/operator.js';
import { InvalidRequest } from '../errors.js';
import { isGrantId } from '../grants/ids.js';
import type { Grant } from '../grants/store.js';
import { compileGlob } from '../protocol/match.js';
import { decodeCursor, encodeCursor, MAX_CURSOR } from './cursor.js';
import { auditOperator, instanceName, MAX_EXAMINED, parseParams, type OperatorDeps } from './deps.js';
import { paramText } from './deps.js';
import { isLive } from '../grants/codec.js';

const text = paramText;

/** Exactly one selector: what the kill switch revokes. */
const selectorSchema = z.union([
  z.object({ grant: text(64).refine(isGrantId, 'must be a grant id') }).strict(),
  z.object({ workload: text(2048) }).strict(),
  z.object({ task: text(256) }).strict(),
  z.object({ audience: text(1024) }).strict(),
  z.object({ issuer: text(2048) }).strict(),
  z.object({ rule: text(256) }).strict(),
  z.object({ key_id: text(256) }).strict(),
]);

export const revokeRequestSchema = z
  .object({
    selector: selectorSchema,
    reason: text(512),
    dry_run: z.boolean().optional(),
    cursor: z.string().max(MAX_CURSOR).optional(),
  })
  .strict();

export type RevokeSelector = z.output<typeof selectorSchema>;

export type { RevokeResult };

/** Revoked grants are closed this many at a time (pipelined). */
const CLOSE_BATCH = 64;

/**
 * A selector as a predicate on a grant record. An issuer selector matches the token issuer, or a
 * trust domain (`example.org` or `spiffe://example.org`) of X.509 grants. A workload selector
 * with `*` is a glob (protocol/match.ts: `*` within a segment, `**` across).
 */
function selectorMatch(sel: RevokeSelector): (g: Grant) => boolean {
  if ('grant' in sel) return (g) => g.id === sel.grant;
  if ('workload' in sel) {
    const m = compileGlob(sel.workload);
    return (g) => m(g.workload);
  }
  if ('task' in sel) return (g) => g.task === sel.task;
  if ('audience' in sel) return (g) => g.audience === sel.audience;
  if ('issuer' in sel) {
    const td = sel.issuer.startsWith('spiffe://') ? sel.issuer : `spiffe://${sel.issuer}`;
    return (g) => g.issuer === sel.issuer || (g.workload_kind === 'x509' && g.issuer === td);
  }
  if ('rule' in sel) return (g) => g.rule === sel.rule;
  return (g) => g.kid === sel.key_id;
}

/**
 * POST /v1/grants/revoke (admin): the kill switch. Every live grant the selector matches expires
 * now through the same close path as every revocation (close-grant.lua: status revoked, a
 * `grant.revoked` event naming the operator and the reason); one more event records the
 * operation. At most MAX_EXAMINED grants are examined per call (Redis is never blocked for long):
 * `done: false` comes with a cursor to continue. A dry run changes nothing and lists the matches.
 *
 * By key_id, the first call (no cursor) also revokes the key itself: the instance that answers
 * stops signing with it at once if it holds it, and an authenticated mark in the store makes
 * every broker refuse it (and leave it out of the JWKS) within a JWKS cache period.
 */
export async function revokeGrants(deps: OperatorDeps, op: Operator, body: unknown): Promise<RevokeResult> {
  const problem = describeSelectorProblem(body);
  if (problem) throw new InvalidRequest(problem);
  const req = parseParams(revokeRequestSchema, body);
  const dry = req.dry_run === true;
  const now = deps.clock();
  const instance = instanceName(deps);
  const selector = JSON.stringify(req.selector);
  const by = `operator:${op.name}`;
  const reason = `revoked by operator ${op.name}: ${req.reason}`;

  let key: RevokeResult['key'];
  if ('key_id' in req.selector && !dry && req.cursor === undefined) {
    const kid = req.selector.key_id;
    // Audited before it takes effect; the mark is written before this instance stops using it.
    await auditOperator(deps, op, 'keys.revoke', { kid, reason: req.reason, instance });
    const until = now + deps.config.grants.audit_retention + deps.config.tokens.key_overlap;
    await deps.store.revokeKey({ kid, revoked_at: now, by: op.name, until });
    const { held } = deps.keyring.revoke(kid);
    key = { kid, held_by_this_instance: held, instance };
  }

  const match = selectorMatch(req.selector);
  let candidates: Grant[];
  let next: string | undefined;
  if ('grant' in req.selector) {
    const g = await deps.store.getGrant(req.selector.grant);
    candidates = g ? [g] : [];
  } else {
    // An exact workload walks its own index; anything else the global one.
    const exact = 'workload' in req.selector && !req.selector.workload.includes('*') ? req.selector.workload : undefined;
    const after = decodeCursor(req.cursor);
    const walked = await deps.store.walkGrants({
      now,
      retentionMs: deps.config.grants.audit_retention,
      ...(exact !== undefined ? { workload: exact } : {}),
      ...(after ? { after } : {}),
      want: MAX_EXAMINED,
      maxExamined: MAX_EXAMINED,
      match: (g) => isLive(g, now) && match(g),
    });
    candidates = walked.grants;
    if (walked.next) next = encodeCursor(walked.next);
  }
  const live = candidates.filter((g) => isLive(g, now) && match(g));

  let revoked = 0;
  if (dry) {
    revoked = live.length;
  } else {
    for (let i = 0; i < live.length; i += CLOSE_BATCH) {
      const outcomes = await Promise.all(
        live.slice(i, i + CLOSE_BATCH).map((g) => deps.store.closeGrant(g.id, g.workload, { now, status: 'revoked', reason, by, operator: op.name })),
      );
      const closed = outcomes.filter((o) => o.outcome === 'closed' || o.outcome === 'replay').length;
      deps.metrics?.revoked('operator', closed);
      revoked += closed;
    }
  }
  const done = next === undefined;
  const result: RevokeResult = {
    revoked,
    done,
    ...(next ? { cursor: next } : {}),
    ...(dry ? { dry_run: true, grants: live.map((g) => g.id) } : {}),
    ...(key ? { key } : {}),
  };
  // The operation's own event (each grant has its own already, naming the operator). A failure
  // here cannot undo revocations that stand: it is logged, and the answer still says what was done.
  await auditOperator(deps, op, 'grants.revoke', { selector, reason: req.reason, count: revoked, done, ...(dry ? { dry_run: true } : {}) }, dry).catch((e: unknown) =>
    deps.log.error({ operator: op.name, err: e instanceof Error ? e.message : String(e), revoked }, 'kill switch audit event not written; the revocations stand'),
  );
  return result;
}

/** A selector that is not one is refused by name (zod's union error would only say "invalid input"). */
export const SELECTOR_KEYS = ['grant', 'workload', 'task', 'audience', 'issuer', 'rule', 'key_id'] as const;
function describeSelectorProblem(body: unknown): string | undefined {
  const sel = (body as { selector?: unknown } | null)?.selector;
  if (typeof sel !== 'object' || sel === null) return 'selector must be an object with exactly one of ' + SELECTOR_KEYS.join(', ');
  const named = Object.keys(sel).filter((k) => (SELECTOR_KEYS as readonly string[]).includes(k));
  if (named.length !== 1) return 'selector must name exactly one of ' + SELECTOR_KEYS.join(', ');
  return undefined;
}
