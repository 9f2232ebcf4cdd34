import { describe, expect, it } from 'vitest';
import { Policy } from '../../src/policy/evaluate.js';
import { explain, explainRequestSchema } from '../../src/policy/explain.js';
import { policySchema } from '../../src/policy/rules.js';

const policy = new Policy(
  policySchema.parse([
    {
      name: 'payments-read',
      workloads: ['k8s://prod/ns/payments/sa/*'],
      audiences: ['db.payments'],
      actions: ['read'],
      resources: ['db://payments/*'],
      max_ttl: '10m',
    },
    {
      name: 'payments-write',
      workloads: ['k8s://prod/ns/payments/sa/writer'],
      audiences: ['db.payments'],
      actions: ['read', 'write'],
      resources: ['db://payments/*'],
      require_binding: true,
    },
    { name: 'reports', workloads: ['k8s://prod/ns/payments/sa/*'], audiences: ['reports'], actions: ['export'] },
    { name: 'ci-any', workloads: ['github://acme/**'], audiences: ['artifacts'], actions: ['*'] },
  ]),
);
const api = { id: 'k8s://prod/ns/payments/sa/api' };
const writer = 'k8s://prod/ns/payments/sa/writer';

describe('policy explain', () => {
  it('allow: names the rule, the granted intent and the caps', () => {
    const e = explain(policy, api, { audience: 'db.payments', actions: ['read', 'read'], resources: ['db://payments/orders'] });
    expect(e).toMatchObject({
      decision: 'allow',
      rule: 'payments-read',
      granted: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], max_ttl_ms: 600_000, max_lifetime_ms: null, require_binding: false },
      reason: null,
      not_allowed: null,
      closest_rule: null,
      rules_for_workload: 2,
      evidence_kind: null,
    });
  });

  it('deny by workload: no rule names it; the closest rule is the one that covers the rest', () => {
    const e = explain(policy, { id: 'k8s://prod/ns/hr/sa/api' }, { audience: 'reports', actions: ['export'] });
    expect(e.decision).toBe('deny');
    expect(e.reason).toBe('no policy rule allows workload k8s://prod/ns/hr/sa/api');
    expect(e.not_allowed).toEqual({ parts: ['workload'], workload: 'k8s://prod/ns/hr/sa/api', actions: [], resources: [] });
    expect(e.closest_rule).toEqual({ name: 'reports', refused: { parts: ['workload'], workload: 'k8s://prod/ns/hr/sa/api', actions: [], resources: [] } });
    expect(e.rules_for_workload).toBe(0);
  });

  it('deny by audience', () => {
    const e = explain(policy, api, { audience: 'db.hr', actions: ['read'], resources: ['db://payments/x'] });
    expect(e.decision).toBe('deny');
    expect(e.not_allowed).toMatchObject({ parts: ['audience'], audience: 'db.hr' });
    expect(e.closest_rule?.refused.parts).toContain('audience');
  });

  it('deny by actions: only the actions no rule allows are named', () => {
    const e = explain(policy, api, { audience: 'db.payments', actions: ['read', 'delete'], resources: ['db://payments/x'] });
    expect(e.not_allowed).toMatchObject({ parts: ['actions'], actions: ['delete'], resources: [] });
    expect(e.closest_rule).toMatchObject({ name: 'payments-read', refused: { parts: ['actions'], actions: ['delete'] } });
    expect(e.reason).toContain('action "delete"');
  });

  it('deny by resources, and a rule that scopes resources refuses a request naming none', () => {
    const e = explain(policy, api, { audience: 'db.payments', actions: ['read'], resources: ['db://secrets/k'] });
    expect(e.not_allowed).toMatchObject({ parts: ['resources'], resources: ['db://secrets/k'] });
    const none = explain(policy, api, { audience: 'db.payments', actions: ['read'] });
    expect(none.decision).toBe('deny');
    expect(none.closest_rule).toMatchObject({ name: 'payments-read', refused: { parts: ['resources'], resources_required: true } });
    // The "reports" rule does not scope resources, so "name a resource" is not something no rule allows.
    expect(none.not_allowed?.parts).toEqual([]);
  });

  it('deny by evidence kind: a binding rule refuses oidc evidence, allows x509 and an open kind', () => {
    const intent = { audience: 'db.payments', actions: ['write'], resources: ['db://payments/orders'] };
    const oidc = explain(policy, { id: writer, evidenceKind: 'oidc' }, intent);
    expect(oidc.decision).toBe('deny');
    expect(oidc.evidence_kind).toBe('oidc');
    expect(oidc.closest_rule).toEqual({
      name: 'payments-write',
      refused: { parts: ['evidence_kind'], actions: [], resources: [], evidence_kind: { required: 'x509', presented: 'oidc' } },
    });
    // payments-read refuses "write" but needs no binding: the evidence kind alone is not what no rule allows.
    expect(oidc.not_allowed?.parts).toEqual([]);
    expect(explain(policy, { id: writer, evidenceKind: 'x509' }, intent)).toMatchObject({ decision: 'allow', rule: 'payments-write', granted: { require_binding: true } });
    expect(explain(policy, { id: writer }, intent)).toMatchObject({ decision: 'allow', rule: 'payments-write', granted: { require_binding: true } });
  });

  it('a combination no single rule allows: every part alone is allowed, the closest rule says what to change', () => {
    const e = explain(policy, api, { audience: 'reports', actions: ['read'] });
    expect(e.decision).toBe('deny');
    expect(e.not_allowed?.parts).toEqual([]);
    expect(e.closest_rule).toMatchObject({ name: 'reports', refused: { parts: ['actions'], actions: ['read'] } });
  });

  it('agrees with evaluate on every case (the decision is evaluate\'s)', () => {
    const e = explain(policy, { id: 'github://acme/deploy/ref/main' }, { audience: 'artifacts', actions: ['publish'] });
    expect(e).toMatchObject({ decision: 'allow', rule: 'ci-any' });
    expect(explain(new Policy([]), api, { audience: 'a', actions: ['r'] })).toMatchObject({ decision: 'deny', closest_rule: null });
  });

  it('the request schema is strict and bounded like a task start, purpose optional', () => {
    expect(explainRequestSchema.safeParse({ workload: writer, intent: { audience: 'a', actions: ['r'] } }).success).toBe(true);
    expect(explainRequestSchema.safeParse({ workload: writer, intent: { audience: 'a', actions: ['r'], extra: 1 } }).success).toBe(false);
    expect(explainRequestSchema.safeParse({ workload: writer, evidence_kind: 'jwt', intent: { audience: 'a', actions: ['r'] } }).success).toBe(false);
    expect(explainRequestSchema.safeParse({ workload: '', intent: { audience: 'a', actions: ['r'] } }).success).toBe(false);
    expect(explainRequestSchema.safeParse({ workload: writer, intent: { audience: 'a', actions: [] } }).success).toBe(false);
    expect(explainRequestSchema.safeParse({ workload: writer, intent: { audience: 'a', actions: ['r'], resources: ['db://a/../b'] } }).success).toBe(false);
  });
});
