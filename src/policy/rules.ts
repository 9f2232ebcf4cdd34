import { z } from 'zod';
import { SCOPE_TOKEN } from '../protocol/intent.js';
import { durationValue } from '../util/duration.js';

export const TTL_FLOOR_MS = 30_000;
export const TTL_CAP_MS = 15 * 60_000;

const duration = durationValue();

const pattern = z.string().min(1).max(1024);

/**
 * A workload pattern that begins with `**` matches every id of every attestation source (any
 * issuer's, any trust domain's): refused, so that "anyone who can attest" is never one typo away.
 */
const workloadPattern = pattern.superRefine((value, ctx) => {
  if (value.startsWith('**'))
    ctx.addIssue({
      code: 'custom',
      message: `"${value}" matches every workload of every attestation source: start it with the source's id prefix, e.g. "spiffe://example.org/**" or "k8s://prod/ns/payments/**"`,
    });
});

/**
 * A resource pattern with a "." or ".." path segment (before any `;params`) can never match: no
 * request may name such a resource (protocol/intent.ts resourceProblem).
 */
const resourcePattern = pattern.superRefine((value, ctx) => {
  const segments = value.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/');
  const dots = segments.map((seg) => seg.split(';')[0]!).find((seg) => /^[. ]*\.[. ]*$/.test(seg));
  if (dots !== undefined)
    ctx.addIssue({ code: 'custom', message: `can never match: requests may not name a resource with a "${dots.trim()}" path segment; write the path it stands for` });
});

export const BINDING_REQUIREMENTS = ['mtls', 'dpop', 'any', 'none'] as const;
export type BindingRequirement = (typeof BINDING_REQUIREMENTS)[number];

/** One policy rule: which workloads may ask for which intents, with which caps. */
export const ruleSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, . _ -'),
    description: z.string().max(512).optional(),
    /** Workload ids, exact or glob (`*` one segment, `**` the rest). */
    workloads: z.array(workloadPattern).min(1),
    /** Audiences this rule allows (exact). */
    audiences: z.array(z.string().min(1).max(512)).min(1),
    /** Actions this rule allows (exact, or "*" for any). */
    actions: z.array(z.string().min(1).max(128).regex(SCOPE_TOKEN, 'must be a scope token (no spaces)')).min(1),
    /** Resource patterns this rule allows; requests may only name resources these cover. */
    resources: z.array(resourcePattern).default([]),
    /**
     * Workloads (same patterns as `workloads`) that may act for this rule's workloads by token
     * exchange with an actor token (RFC 8693 §4.4, `may_act`). None by default: no delegation
     * unless a rule names the actor. The actor's own rules must allow the intent too.
     */
    actors: z.array(workloadPattern).default([]),
    max_ttl: duration
      .refine((ms) => ms >= TTL_FLOOR_MS, 'must be >= 30s')
      .refine((ms) => ms <= TTL_CAP_MS, 'must be <= 15m')
      .optional(),
    max_lifetime: duration.refine((ms) => ms >= TTL_FLOOR_MS, 'must be >= 30s').optional(),
    /**
     * Which proof-of-possession binding (cnf) tokens under this rule need: `mtls` (a client
     * certificate, RFC 8705), `dpop` (a DPoP key, RFC 9449), `any` of the two, or `none`. The
     * boolean of earlier configs keeps its meaning: true is `mtls`, false is `none`.
     */
    require_binding: z
      .union([z.enum(BINDING_REQUIREMENTS), z.boolean()])
      .default('none')
      .transform((v): BindingRequirement => (v === true ? 'mtls' : v === false ? 'none' : v)),
  })
  .strict();

export type RuleConfig = z.input<typeof ruleSchema>;
export type Rule = z.output<typeof ruleSchema>;

export const policySchema = z
  .array(ruleSchema)
  .default([])
  .superRefine((rules, ctx) => {
    const seen = new Set<string>();
    rules.forEach((rule, i) => {
      if (seen.has(rule.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name "${rule.name}"` });
      seen.add(rule.name);
    });
  });
