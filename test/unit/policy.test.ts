import { describe, expect, it } from 'vitest';
import type { Workload } from '../../src/attestation/attestor.js';
import { compileGlob } from '../../src/protocol/match.js';
import { bindingsOf, Policy } from '../../src/policy/evaluate.js';
import { policySchema } from '../../src/policy/rules.js';
import { intentSchema } from '../../src/protocol/intent.js';

const workload = (id: string, bound = false): Workload => ({
  id,
  kind: 'oidc',
  issuer: 'https://issuer.test',
  attributes: {},
  evidenceExpiresAt: Date.now() + 3_600_000,
  ...(bound ? { confirmation: { 'x5t#S256': 'abc' } } : {}),
});

const policy = new Policy(
  policySchema.parse([
    {
      name: 'payments-read',
      workloads: ['k8s://prod/ns/payments/sa/*'],
      audiences: ['db.payments'],
      actions: ['read'],
      resources: ['db://payments/*', 'db://shared/**'],
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
    { name: 'ci-any', workloads: ['github://acme/**'], audiences: ['artifacts'], actions: ['*'] },
  ]),
);

describe('glob', () => {
  it('matches * within one segment and ** across segments', () => {
    expect(compileGlob('k8s://prod/ns/*/sa/x')('k8s://prod/ns/a/sa/x')).toBe(true);
    expect(compileGlob('k8s://prod/ns/*/sa/x')('k8s://prod/ns/a/b/sa/x')).toBe(false);
    expect(compileGlob('spiffe://td/**')('spiffe://td/a/b/c')).toBe(true);
    expect(compileGlob('spiffe://td/**')('spiffe://other/a')).toBe(false);
  });
  it('treats regex characters literally', () => {
    expect(compileGlob('db://a.b/*')('db://aXb/t')).toBe(false);
    expect(compileGlob('db://(x)/*')('db://(x)/t')).toBe(true);
  });
  it('never lets a requested wildcard widen a single-segment rule wildcard', () => {
    expect(compileGlob('db://payments/*')('db://payments/*')).toBe(true); // identical pattern
    expect(compileGlob('db://payments/x*')('db://payments/*')).toBe(false);
    expect(compileGlob('db://payments/*')('db://payments/**')).toBe(false);
    expect(compileGlob('db://**')('db://payments/*')).toBe(true);
  });
});

describe('policy evaluation', () => {
  it('allows an intent one rule covers and names the rule and caps', () => {
    const d = policy.evaluate(workload('k8s://prod/ns/payments/sa/api'), {
      audience: 'db.payments',
      actions: ['read', 'read'],
      resources: ['db://payments/orders'],
      purpose: 'p',
    });
    expect(d).toMatchObject({ allowed: true, rule: 'payments-read', actions: ['read'], maxTtlMs: 600_000, requireBinding: 'none' });
  });

  it('default-denies a workload no rule names', () => {
    const d = policy.evaluate(workload('k8s://prod/ns/other/sa/api'), { audience: 'db.payments', actions: ['read'], resources: [], purpose: 'p' });
    expect(d).toMatchObject({ allowed: false, closestRule: undefined });
    if (!d.allowed) expect(d.reason).toBe('no policy rule allows workload k8s://prod/ns/other/sa/api');
  });

  it('denies and names every refused action and resource', () => {
    const d = policy.evaluate(workload('k8s://prod/ns/payments/sa/api'), {
      audience: 'db.payments',
      actions: ['read', 'delete'],
      resources: ['db://payments/orders', 'db://secrets/keys'],
      purpose: 'p',
    });
    expect(d.allowed).toBe(false);
    if (!d.allowed) {
      expect(d.refused).toEqual({ actions: ['delete'], resources: ['db://secrets/keys'] });
      expect(d.reason).toContain('action "delete"');
      expect(d.reason).toContain('resource "db://secrets/keys"');
      expect(d.closestRule).toBe('payments-read');
    }
  });

  it('denies an audience outside the rule', () => {
    const d = policy.evaluate(workload('k8s://prod/ns/payments/sa/api'), { audience: 'db.hr', actions: ['read'], resources: [], purpose: 'p' });
    expect(d.allowed).toBe(false);
    if (!d.allowed) expect(d.reason).toContain('audience "db.hr"');
  });

  it('requires binding when the rule says so', () => {
    const intent = { audience: 'db.payments', actions: ['write'], resources: ['db://payments/orders'], purpose: 'p' };
    const unbound = policy.evaluate(workload('k8s://prod/ns/payments/sa/writer'), intent);
    expect(unbound.allowed).toBe(false);
    if (!unbound.allowed) expect(unbound.reason).toContain('bound token is required');
    expect(policy.evaluate(workload('k8s://prod/ns/payments/sa/writer', true), intent)).toMatchObject({ allowed: true, rule: 'payments-write' });
  });

  it('"*" in a rule allows any action', () => {
    expect(
      policy.evaluate(workload('github://acme/deploy/ref/refs/heads/main'), { audience: 'artifacts', actions: ['publish'], resources: [], purpose: 'p' }),
    ).toMatchObject({ allowed: true, rule: 'ci-any' });
  });

  it('an empty policy denies everything', () => {
    const d = new Policy([]).evaluate(workload('spiffe://td/a'), { audience: 'x', actions: ['read'], resources: [], purpose: 'p' });
    expect(d.allowed).toBe(false);
  });

  it('rejects duplicate rule names', () => {
    const r = policySchema.safeParse([
      { name: 'a', workloads: ['x://y'], audiences: ['a'], actions: ['r'] },
      { name: 'a', workloads: ['x://z'], audiences: ['a'], actions: ['r'] },
    ]);
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual([1, 'name']);
  });
});

describe('requested resources and actions at the boundary', () => {
  const parse = (resources: string[], actions = ['read']) =>
    intentSchema.safeParse({ audience: 'db.payments', actions, resources, purpose: 'p' });

  it('refuses resources a resource server could normalise onto another path', () => {
    for (const r of [
      's3://bucket/team-a/../team-b/secret',
      'files://team-a/..',
      'files://team-a/./x',
      'files://team-a/%2e%2e/x',
      'files://team-a/%2E%2e',
      'files://team-a%2fteam-b',
      'files://team-a/x%5Cy',
      'files://team-a\\..\\team-b',
      'db://payments//orders',
      '../etc/passwd',
      // Normalisation tricks of real servers and decoders:
      'https://files.example/team-a/..;/team-b/secret', // Tomcat/Spring path parameters
      'db://payments/..;',
      'files://team-a/%252e%252e/x', // double encoding
      'files://team-a/\uff0e\uff0e/x', // fullwidth dots (NFKC → "..")
      'files://team-a\uff0fteam-b', // fullwidth slash
      'files://team-a/%c0%ae%c0%ae/x', // overlong UTF-8
      'files://team-a/%u002e%u002e/x', // IIS %u encoding
      'files://team-a/.../x',
      'files://team-a/.. /x',
      'files://team-a/x\u0085y',
      'files://team-a/x\u2028y',
      'files://team-a/%2E./x', // mixed
      'files://team-a/%00/x', // encoded control character
      'files://team-a/%41', // unreserved characters are never encoded
      'files://team-a/%',
      'files://team-a/%zz',
      'https://files.example/team-a/..?x', // a query after a dot segment: URL parsers resolve it
      'https://files.example/team-a/..#x',
      'db://payments/orders?admin=1',
      'files://team-a/%EF%BC%8E%EF%BC%8E/x', // fullwidth dots, encoded
      'files://team-a/%E2%80%A5/x', // two-dot leader: NFKC gives ".."
      'files://team-a/..%EF%BC%8Fteam-b', // fullwidth slash, encoded
      'files://team-a/x%EF%BC%BC..%EF%BC%BC', // fullwidth backslash, encoded
      'files://team-a/..%20/x', // Windows strips trailing spaces
      'files://team-a/.%20./x',
    ]) {
      const result = parse([r]);
      expect(result.success, r).toBe(false);
      expect(result.error?.issues[0]?.path, r).toEqual(['resources', 0]);
    }
    for (const r of [
      'db://payments/orders',
      'file:///etc/app',
      'db://payments/orders/',
      'db://payments/v1.2/x..y',
      'urn:jit:thing',
      'files://team-a/caf%C3%A9', // UTF-8, encoded
      'files://team-a/a%20b%3Fc',
      'db://payments/orders;v=2',
      'db://payments/*',
    ]) {
      expect(parse([r]).success, r).toBe(true);
    }
  });

  it('so a rule glob can no longer be escaped through a dot segment', () => {
    const escape = 's3://bucket/team-a/../team-b/secret';
    // The glob alone would match it: the schema is what stops it.
    expect(compileGlob('s3://bucket/team-a/**')(escape)).toBe(true);
    expect(parse([escape]).success).toBe(false);
  });

  it('refuses actions that are not scope tokens (they travel space-separated in scope)', () => {
    for (const a of ['read write', 'a"b', 'a\\b', '']) expect(parse(['db://payments/x'], [a]).success, a).toBe(false);
    expect(parse(['db://payments/x'], ['read', 'db:select', 'x.y_z-1']).success).toBe(true);
    expect(() => policySchema.parse([{ name: 'r', workloads: ['a://b'], audiences: ['a'], actions: ['read all'] }])).toThrow(/scope token/);
  });

  it('requires naming a resource under a rule that scopes resources', () => {
    const d = policy.evaluate(workload('k8s://prod/ns/payments/sa/api'), { audience: 'db.payments', actions: ['read'], resources: [], purpose: 'p' });
    expect(d).toMatchObject({ allowed: false, closestRule: 'payments-read', refused: { resourcesRequired: true } });
    if (!d.allowed) expect(d.reason).toBe('request not allowed for workload k8s://prod/ns/payments/sa/api: name at least one resource (the rule scopes tokens to resources)');
    // A rule without resources grants audience and actions only, and needs none.
    const ci = policy.evaluate(workload('github://acme/app/ref/refs/heads/main'), { audience: 'artifacts', actions: ['push'], resources: [], purpose: 'p' });
    expect(ci).toMatchObject({ allowed: true, rule: 'ci-any', resources: [] });
  });

  it('keeps the refusal reason short however much was refused', () => {
    const resources = Array.from({ length: 10 }, (_, i) => `db://other/${i}${'x'.repeat(600)}`);
    const d = policy.evaluate(workload('k8s://prod/ns/payments/sa/api'), { audience: 'db.payments', actions: ['read'], resources, purpose: 'p' });
    expect(d.allowed).toBe(false);
    if (!d.allowed) {
      expect(d.reason.length).toBeLessThan(600);
      expect(d.reason).toContain('and 7 more');
      expect(d.refused.resources).toHaveLength(10);
    }
  });
});

describe('require_binding', () => {
  const rule = (require_binding?: unknown) => ({ name: 'r', workloads: ['k8s://prod/ns/a/sa/*'], audiences: ['aud'], actions: ['read'], require_binding });

  it('keeps the meaning of the boolean of earlier configs: true is mtls, false and absent are none', () => {
    expect(policySchema.parse([rule(true)])[0]!.require_binding).toBe('mtls');
    expect(policySchema.parse([rule(false)])[0]!.require_binding).toBe('none');
    expect(policySchema.parse([rule()])[0]!.require_binding).toBe('none');
    for (const v of ['mtls', 'dpop', 'any', 'none']) expect(policySchema.parse([rule(v)])[0]!.require_binding).toBe(v);
    expect(policySchema.safeParse([rule('yes')]).success).toBe(false);
  });

  it('meets each requirement only with the binding it names', () => {
    const intent = { audience: 'aud', actions: ['read'], resources: [], purpose: 'p' };
    const w = workload('k8s://prod/ns/a/sa/x');
    const mtls = bindingsOf({ 'x5t#S256': 'abc' });
    const dpop = bindingsOf({ jkt: 'def' });
    const none = bindingsOf(undefined);
    const allowed = (req: string, b: ReturnType<typeof bindingsOf>) => new Policy(policySchema.parse([rule(req)])).evaluate(w, intent, b).allowed;
    expect([allowed('mtls', mtls), allowed('mtls', dpop), allowed('mtls', none)]).toEqual([true, false, false]);
    expect([allowed('dpop', mtls), allowed('dpop', dpop), allowed('dpop', none)]).toEqual([false, true, false]);
    expect([allowed('any', mtls), allowed('any', dpop), allowed('any', none)]).toEqual([true, true, false]);
    expect([allowed('none', mtls), allowed('none', dpop), allowed('none', none)]).toEqual([true, true, true]);
    const denied = new Policy(policySchema.parse([rule('dpop')])).evaluate(w, intent, none);
    expect(denied).toMatchObject({ allowed: false, refused: { binding: 'dpop' } });
    if (!denied.allowed) expect(denied.reason).toContain('a bound token is required (send a DPoP proof)');
  });
});
