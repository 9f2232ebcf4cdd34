import { describe, expect, it } from 'vitest';
import { delegatedDecision } from '../../src/oauth/delegation.js';
import { Policy } from '../../src/policy/evaluate.js';
import { policySchema } from '../../src/policy/rules.js';

/** The delegation semantics of the policy: `actors` names who may act; the grant is what both sides' rules allow. */
const policy = new Policy(
  policySchema.parse([
    { name: 'payments-read', workloads: ['k8s://c/ns/payments/sa/*'], audiences: ['db'], actions: ['read'], actors: ['k8s://c/ns/agents/sa/*'], max_ttl: '10m' },
    { name: 'payments-rw', workloads: ['k8s://c/ns/payments/sa/*'], audiences: ['db'], actions: ['read', 'write', 'delete'], actors: ['k8s://c/ns/agents/sa/*'] },
    { name: 'payments-self', workloads: ['k8s://c/ns/payments/sa/*'], audiences: ['db', 'other'], actions: ['*'] },
    { name: 'agents', workloads: ['k8s://c/ns/agents/sa/*'], audiences: ['db', 'other'], actions: ['read', 'write'], max_ttl: '2m' },
  ]),
);
const SUBJECT = 'k8s://c/ns/payments/sa/api';
const AGENT = 'k8s://c/ns/agents/sa/bot';
const intent = (actions: string[], audience = 'db') => ({ audience, actions, resources: [], purpose: 'p' });

describe('delegated decisions', () => {
  it('grants the actions both the subject rule naming the actor and the actor\'s own rules allow, with the smaller caps', () => {
    const d = delegatedDecision(policy, SUBJECT, AGENT, intent(['read', 'write', 'delete']), undefined);
    // payments-rw refuses none of them (payments-read would refuse two); the agent refuses delete.
    expect(d).toMatchObject({ allowed: true, rule: 'payments-rw', actions: ['read', 'write'], maxTtlMs: 120_000 });
  });

  it('never reads a rule without actors as allowing delegation', () => {
    // payments-self allows "other", but names no actors.
    const d = delegatedDecision(policy, SUBJECT, AGENT, intent(['read'], 'other'), undefined);
    expect(d).toMatchObject({ allowed: false });
    expect(delegatedDecision(policy, SUBJECT, 'k8s://c/ns/strangers/sa/x', intent(['read']), undefined)).toMatchObject({
      allowed: false,
      closestRule: undefined,
      reason: `no policy rule lets workload k8s://c/ns/strangers/sa/x act for workload ${SUBJECT}`,
    });
  });

  it('refuses when nothing is left, and refuses any narrowing when exact (renewal)', () => {
    expect(delegatedDecision(policy, SUBJECT, AGENT, intent(['delete']), undefined)).toMatchObject({ allowed: false });
    expect(delegatedDecision(policy, SUBJECT, AGENT, intent(['read', 'delete']), undefined, true)).toMatchObject({ allowed: false });
    expect(delegatedDecision(policy, SUBJECT, AGENT, intent(['read', 'write']), undefined, true)).toMatchObject({ allowed: true, actions: ['read', 'write'] });
  });

  it('leaves undelegated requests as they were: no narrowing, all or nothing', () => {
    expect(policy.evaluate({ id: AGENT }, intent(['read', 'delete']))).toMatchObject({ allowed: false });
  });
});
