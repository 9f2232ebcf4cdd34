/**
 * Policy explain: why the policy allows or refuses a request, without attesting anything.
 *
 * STABLE API (used by `POST /v1/policy/explain` and by the offline `jit-broker policy check`;
 * add fields, never rename or remove them):
 *
 *   explainRequestSchema    zod schema of the wire request
 *                           `{ workload, evidence_kind?: 'oidc'|'x509', intent: { audience, actions,
 *                           resources?, purpose?, task? } }` (strict, the same bounds as a task start)
 *   ExplainRequest          its parsed type
 *   explain(policy, workload, intent): Explanation
 *                           `workload` is `{ id, evidenceKind? }`; `intent` is `{ audience, actions, resources? }`
 *   Explanation, IntentPart, RuleRefusal, ExplainWorkload, ExplainIntent   (types below)
 *
 * The decision and the matching rule are exactly what `Policy.evaluate` decides for a task start
 * with the same workload id and intent (it is called, not re-implemented). The evidence kind only
 * matters for rules with `require_binding`: `x509` evidence is bound (RFC 8705), `oidc` evidence
 * is not; when no kind is given the explanation assumes evidence that can be bound and says so
 * with `granted.require_binding`.
 *
 * For a denial it names (a) `not_allowed`: each part of the intent that NO rule for this workload
 * allows on its own (`workload` when no rule names the workload at all), and (b) `closest_rule`:
 * the rule that would need the fewest changes, with what it refuses. When every part is allowed by
 * some rule but no single rule allows them together, `not_allowed.parts` is empty and the closest
 * rule says what to change.
 */
import { z } from 'zod';
import type { EvidenceKind, Explanation, IntentPart, RuleRefusal } from '../protocol/operator.js';
import type { Workload } from '../attestation/attestor.js';
import { intentSchema } from '../protocol/intent.js';
import { isWellFormed, NOT_WELL_FORMED } from '../protocol/unicode.js';
import type { Bindings, Policy } from './evaluate.js';
import { compileActions, compileGlob, compileResources } from '../protocol/match.js';
import type { Rule } from './rules.js';

export const explainRequestSchema = z
  .object({
    workload: z.string().min(1).max(2048).refine(isWellFormed, NOT_WELL_FORMED),
    evidence_kind: z.enum(['oidc', 'x509']).optional(),
    intent: intentSchema.partial({ purpose: true }),
  })
  .strict();
export type ExplainRequest = z.output<typeof explainRequestSchema>;

export type { EvidenceKind, Explanation, IntentPart, RuleRefusal };

export interface ExplainWorkload {
  id: string;
  /** The evidence the workload would present; undefined: any (bound evidence assumed). */
  evidenceKind?: EvidenceKind;
}

export interface ExplainIntent {
  audience: string;
  actions: readonly string[];
  resources?: readonly string[];
}



/** Explains the decision `policy.evaluate` makes for this workload and intent. */
export function explain(policy: Policy, workload: ExplainWorkload, intent: ExplainIntent): Explanation {
  const resources = [...(intent.resources ?? [])];
  const actions = [...intent.actions];
  const bindable = workload.evidenceKind !== 'oidc';
  const synthetic: Workload = {
    id: workload.id,
    kind: workload.evidenceKind ?? 'x509',
    issuer: '',
    attributes: {},
    evidenceExpiresAt: Number.MAX_SAFE_INTEGER,
    ...(bindable ? { confirmation: { 'x5t#S256': 'explain' } } : {}),
  };
  // Any evidence can come with a DPoP proof; only a client certificate binds over mTLS.
  const bindings: Bindings = new Set(bindable ? ['mtls', 'dpop'] : ['dpop']);
  const decision = policy.evaluate(synthetic, { audience: intent.audience, actions, resources, purpose: 'explain' }, bindings);
  const rules = policy.ruleList;
  const forWorkload = rules.filter((r) => r.workloads.some((p) => compileGlob(p)(workload.id)));
  const base = { workload: workload.id, evidence_kind: workload.evidenceKind ?? null, rules_for_workload: forWorkload.length };

  if (decision.allowed) {
    return {
      ...base,
      decision: 'allow',
      rule: decision.rule,
      granted: {
        audience: decision.audience,
        actions: decision.actions,
        resources: decision.resources,
        max_ttl_ms: decision.maxTtlMs ?? null,
        max_lifetime_ms: decision.maxLifetimeMs ?? null,
        require_binding: decision.requireBinding !== 'none',
      },
      reason: null,
      not_allowed: null,
      closest_rule: null,
    };
  }

  const refusals = rules.map((rule) => ({ rule, refused: refusal(rule, workload, intent.audience, actions, resources) }));
  let closest: { rule: Rule; refused: RuleRefusal } | undefined;
  if (decision.closestRule !== undefined) {
    closest = refusals.find((r) => r.rule.name === decision.closestRule);
  } else {
    // No rule names the workload: the closest is the rule that would allow the most of the rest.
    for (const r of refusals) if (!closest || weight(r.refused) < weight(closest.refused)) closest = r;
  }
  return {
    ...base,
    decision: 'deny',
    rule: null,
    granted: null,
    reason: decision.reason,
    not_allowed: notAllowedByAny(forWorkload, workload, intent.audience, actions, resources),
    closest_rule: closest ? { name: closest.rule.name, refused: closest.refused } : null,
  };
}

function refusal(rule: Rule, workload: ExplainWorkload, audience: string, actions: string[], resources: string[]): RuleRefusal {
  const workloads = rule.workloads.map(compileGlob);
  const allowsResource = compileResources(rule.resources);
  const allowsAction = compileActions(rule.actions);
  const r: RuleRefusal = {
    parts: [],
    actions: unique(actions.filter((a) => !allowsAction(a))),
    resources: unique(resources.filter((res) => !allowsResource(res))),
  };
  if (!workloads.some((m) => m(workload.id))) r.workload = workload.id;
  if (!rule.audiences.includes(audience)) r.audience = audience;
  if (rule.resources.length > 0 && resources.length === 0) r.resources_required = true;
  if (rule.require_binding === 'mtls' && workload.evidenceKind === 'oidc') r.evidence_kind = { required: 'x509', presented: 'oidc' };
  r.parts = partsOf(r);
  return r;
}

/** Each part of the request checked against every rule for the workload on its own. */
function notAllowedByAny(forWorkload: Rule[], workload: ExplainWorkload, audience: string, actions: string[], resources: string[]): RuleRefusal {
  if (forWorkload.length === 0) {
    return { parts: ['workload'], workload: workload.id, actions: [], resources: [] };
  }
  const each = forWorkload.map((rule) => refusal(rule, workload, audience, actions, resources));
  const r: RuleRefusal = {
    parts: [],
    actions: unique(actions.filter((a) => each.every((e) => e.actions.includes(a)))),
    resources: unique(resources.filter((res) => each.every((e) => e.resources.includes(res)))),
  };
  if (each.every((e) => e.audience !== undefined)) r.audience = audience;
  if (each.every((e) => e.resources_required)) r.resources_required = true;
  if (each.every((e) => e.evidence_kind)) r.evidence_kind = { required: 'x509', presented: 'oidc' };
  r.parts = partsOf(r);
  return r;
}

function partsOf(r: RuleRefusal): IntentPart[] {
  const parts: IntentPart[] = [];
  if (r.workload !== undefined) parts.push('workload');
  if (r.audience !== undefined) parts.push('audience');
  if (r.actions.length) parts.push('actions');
  if (r.resources.length || r.resources_required) parts.push('resources');
  if (r.evidence_kind) parts.push('evidence_kind');
  return parts;
}

/** Same ordering as Policy.evaluate's closest rule, with the workload weighing most. */
function weight(r: RuleRefusal): number {
  return (
    (r.workload !== undefined ? 10_000 : 0) +
    (r.audience !== undefined ? 1000 : 0) +
    (r.evidence_kind ? 0.5 : 0) +
    (r.resources_required ? 1 : 0) +
    r.actions.length +
    r.resources.length
  );
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
