import type { Operator } from '../auth/operators.js';
import { explain, explainRequestSchema, type Explanation } from '../policy/explain.js';
import { auditOperator, parseParams, type OperatorDeps } from './deps.js';

/**
 * POST /v1/policy/explain (auditor): what the running policy decides for a workload id and an
 * intent, without attesting anything (policy/explain.ts). Audited as a read, naming the workload
 * and audience asked about.
 */
export async function explainPolicy(deps: OperatorDeps, op: Operator, body: unknown): Promise<Explanation> {
  const req = parseParams(explainRequestSchema, body);
  const result = explain(
    deps.policy,
    { id: req.workload, ...(req.evidence_kind ? { evidenceKind: req.evidence_kind } : {}) },
    { audience: req.intent.audience, actions: req.intent.actions, resources: req.intent.resources },
  );
  const selector = JSON.stringify({ workload: req.workload, audience: req.intent.audience, decision: result.decision });
  await auditOperator(deps, op, 'policy.explain', { selector }, true);
  return result;
}
