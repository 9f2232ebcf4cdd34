import { z } from 'zod';
import { actorClaimSchema } from './claims.js';

/**
 * The answers of the operator API (GET /v1/grants, /v1/workloads, /v1/keys, /v1/audit,
 * POST /v1/grants/revoke, /v1/keys/rotate, /v1/policy/explain): their schemas, and the types the
 * service functions in operator/ return. Times are RFC 3339 unless named otherwise.
 */

const time = z.iso.datetime({ offset: true });

/** Every event type of the operators' merged log. */
export const LOG_EVENT_TYPES = [
  'grant.issued',
  'grant.denied',
  'grant.renewed',
  'grant.ended',
  'grant.revoked',
  'grant.replay_detected',
  'key.published',
  'key.retired',
  'operator.action',
] as const;
export type LogEventType = (typeof LOG_EVENT_TYPES)[number];

export const GRANT_STATUSES = ['active', 'expired', 'ended', 'revoked'] as const;
/** A grant's status as operators see it: `expired` is derived at read time (nothing is written at expiry). */
export type GrantRowStatus = (typeof GRANT_STATUSES)[number];

export const evidenceKindSchema = z.enum(['oidc', 'x509']);
export type EvidenceKind = z.infer<typeof evidenceKindSchema>;

/** One grant as the operator API shows it. */
export const grantRowSchema = z.object({
  grant: z.string(),
  workload: z.string(),
  evidence: z.object({ kind: evidenceKindSchema, issuer: z.string() }),
  task: z.string(),
  purpose: z.string(),
  intent: z.object({ audience: z.string(), actions: z.array(z.string()), resources: z.array(z.string()) }),
  rule: z.string(),
  created_at: time,
  expires_at: time,
  token_expires_at: time,
  generation: z.number().int(),
  status: z.enum(GRANT_STATUSES),
  closed_by: z.string().optional().describe('Who ended or revoked it: `holder`, `operator:<name>`, `resource_server:<name>`, `replay_detected`, `not_delivered`'),
  kid: z.string().optional().describe('The signing key of its latest token'),
  binding: z.enum(['x5t#S256', 'jkt']).optional().describe('The token is bound to a certificate (`x5t#S256`) or a DPoP key (`jkt`)'),
  act: actorClaimSchema.optional().describe('A delegated grant: the workload acting for `workload` (it renews the grant), earlier actors nested, as the token\'s `act` claim (RFC 8693 §4.1)'),
});
export type GrantRow = z.infer<typeof grantRowSchema>;

/** GET /v1/grants. */
export const grantPageSchema = z.object({
  grants: z.array(grantRowSchema),
  cursor: z.string().optional().describe('Present when more may follow: pass it back to continue (a page may be short when filters skipped many grants)'),
});
export type GrantPage = z.infer<typeof grantPageSchema>;

/** One lifecycle event of a grant's workload stream (`at` in ms since the epoch). */
/** What a grant's lifecycle event may say beside its type, time and workload. */
const grantEventFields = {
  grant: z.string().optional(),
  rule: z.string().optional(),
  reason: z.string().optional(),
  audience: z.string().optional(),
  actions: z.array(z.string()).optional(),
  task: z.string().optional(),
  generation: z.number().int().optional(),
  count: z.number().int().optional().describe('A denial summary: how many denials past the audit budget it stands for'),
  operator: z.string().optional().describe('The operator who acted, or who revoked'),
  actor: z.string().optional().describe('A delegated grant\'s actor, on its issuance and renewals'),
};

export const grantEventSchema = z.object({
  id: z.string().optional(),
  type: z.enum(LOG_EVENT_TYPES.filter((t) => t.startsWith('grant.')) as [string, ...string[]]),
  at: z.number().int().describe('ms since the epoch'),
  workload: z.string(),
  ...grantEventFields,
});

/** GET /v1/grants/{id}: the grant and its audit history. */
export const grantDetailSchema = grantRowSchema.extend({ events: z.array(grantEventSchema) });

/** One published signing key, as GET /v1/keys lists it. */
export const keyRowSchema = z.object({
  kid: z.string(),
  alg: z.string(),
  created_at: time,
  retire_at: time.describe('After this the key signs nothing more'),
  expires_at: time.describe('After this the key leaves the JWKS'),
  this_instance: z.boolean().describe('Whether the instance that answered holds its private half'),
  state: z.enum(['current', 'next', 'retired']).optional(),
});
export type KeyRow = z.infer<typeof keyRowSchema>;

/** GET /v1/keys. */
export const keyListSchema = z.object({
  instance: z.string(),
  keys: z.array(keyRowSchema),
  revoked: z.array(z.object({ kid: z.string(), revoked_at: time, by: z.string() })),
});
export type KeyList = z.infer<typeof keyListSchema>;

/** POST /v1/keys/rotate. */
export const rotateResultSchema = z.object({
  instance: z.string().describe('The instance that rotated: each broker instance signs with keys of its own'),
  rotated: z.boolean(),
  previous_kid: z.string().optional(),
  current_kid: z.string().optional(),
  note: z.string(),
});
export type RotateResult = z.infer<typeof rotateResultSchema>;

/** POST /v1/grants/revoke (the kill switch). */
export const revokeResultSchema = z.object({
  revoked: z.number().int().describe('Grants revoked by this call (in a dry run: that would be)'),
  done: z.boolean().describe('True when nothing more matches: the operation is complete'),
  cursor: z.string().optional().describe('Pass back to continue when `done` is false'),
  dry_run: z.boolean().optional(),
  grants: z.array(z.string()).optional().describe('Dry run: the live grants this call matched'),
  key: z
    .object({ kid: z.string(), held_by_this_instance: z.boolean(), instance: z.string() })
    .optional()
    .describe('Revocation by key_id: whether the instance that answered held the key'),
});
export type RevokeResult = z.infer<typeof revokeResultSchema>;

export const workloadRowSchema = z.object({
  workload: z.string(),
  live_grants: z.number().int().describe('Live grants now (active and unexpired)'),
  last_activity: time.describe('Its latest lifecycle event'),
  last_seen: time.describe('When it last started a task (refreshed about once a minute per broker instance)'),
});
export type WorkloadRow = z.infer<typeof workloadRowSchema>;

/** GET /v1/workloads. */
export const workloadListSchema = z.object({ workloads: z.array(workloadRowSchema), cursor: z.string().optional() });
export type WorkloadList = z.infer<typeof workloadListSchema>;

/** One event as GET /v1/audit returns it (also its ndjson lines and SSE data). Absent members are left out. */
export const auditLogEntrySchema = z.object({
  id: z.string().describe('Position in the merged log (an SSE event id; opaque to clients)'),
  type: z.enum(LOG_EVENT_TYPES),
  at: time.describe('When the broker recorded it'),
  workload: z.string().optional(),
  ...grantEventFields,
  role: z.enum(['auditor', 'admin']).optional(),
  action: z.string().optional(),
  selector: z.string().optional(),
  dry_run: z.boolean().optional(),
  done: z.boolean().optional(),
  kid: z.string().optional(),
  alg: z.string().optional(),
  instance: z.string().optional(),
  retire_at: time.optional(),
});
export type AuditLogEntry = z.infer<typeof auditLogEntrySchema>;

/** GET /v1/audit (format=json). */
export const auditLogResponseSchema = z.object({
  order: z.enum(['asc', 'desc']),
  events: z.array(auditLogEntrySchema),
  cursor: z.string().nullable().describe('Pass as `cursor` (with the same filters) for the next page; null: a desc walk finished'),
  done: z.boolean().describe('desc: no older events; asc: caught up with the log (call again later with the cursor)'),
});
export type AuditLogResponse = z.infer<typeof auditLogResponseSchema>;

/** A part of a request that a rule can refuse. */
export const INTENT_PARTS = ['workload', 'audience', 'actions', 'resources', 'evidence_kind'] as const;
export type IntentPart = (typeof INTENT_PARTS)[number];

/** What one rule refuses of a request. */
export const ruleRefusalSchema = z.object({
  parts: z.array(z.enum(INTENT_PARTS)).describe('The parts refused, in the order workload, audience, actions, resources, evidence_kind'),
  workload: z.string().optional().describe('The rule does not name this workload'),
  audience: z.string().optional(),
  actions: z.array(z.string()),
  resources: z.array(z.string()),
  resources_required: z.boolean().optional().describe('The rule scopes tokens to resources but the request named none'),
  evidence_kind: z
    .object({ required: z.literal('x509'), presented: evidenceKindSchema })
    .optional()
    .describe('The rule requires a bound token and this evidence kind cannot bind one'),
});
export type RuleRefusal = z.infer<typeof ruleRefusalSchema>;

/** POST /v1/policy/explain. */
export const explanationSchema = z.object({
  decision: z.enum(['allow', 'deny']),
  workload: z.string(),
  evidence_kind: evidenceKindSchema.nullable().describe('As asked; null when the request left it open'),
  rule: z.string().nullable().describe('The rule that allows the request (allow), else null'),
  granted: z
    .object({
      audience: z.string(),
      actions: z.array(z.string()),
      resources: z.array(z.string()),
      max_ttl_ms: z.number().int().nullable(),
      max_lifetime_ms: z.number().int().nullable(),
      require_binding: z.boolean(),
    })
    .nullable()
    .describe('Allow only: what a task start would be granted and under which caps'),
  reason: z.string().nullable().describe('Deny only: the sentence a task start answers with (error_description)'),
  not_allowed: ruleRefusalSchema.nullable().describe('Deny only: the parts of the intent that no rule for this workload allows, each on its own'),
  closest_rule: z
    .object({ name: z.string(), refused: ruleRefusalSchema })
    .nullable()
    .describe('Deny only: the rule needing the fewest changes, and what it refuses; null when the policy is empty'),
  rules_for_workload: z.number().int().describe('How many rules name this workload'),
});
export type Explanation = z.infer<typeof explanationSchema>;
