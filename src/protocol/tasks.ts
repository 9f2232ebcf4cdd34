import { z } from 'zod';
import { actorClaimSchema, confirmationSchema } from './claims.js';
import { grantedIntentSchema, intentSchema, taskAuthorizationDetailSchema } from './intent.js';
import { MAX_TASK_TOKEN_BYTES } from './limits.js';
import { TOKEN_TYPE_NOT_APPLICABLE, txnContextSchema } from './txn-token.js';

/** Durations on the wire: integer seconds, or a string like "90s", "5m", "1h". */
export const durationInputSchema = z.union([
  z.number().int().positive().max(86_400 * 365),
  z.string().regex(/^\d{1,7}(ms|s|m|h|d)$/, 'must be a duration such as "90s", "5m" or "1h"'),
]);

/**
 * A platform token. Its size is bounded by the broker's one configured limit
 * (`attestation.oidc.max_token_bytes`, default 16 KiB: longer is a 401), applied by the attestor on
 * every path that reads one, within `http.max_body_bytes`; no second number here.
 */
export const oidcAttestationSchema = z.object({ kind: z.literal('oidc'), token: z.string().min(1) }).strict();

export const attestationSchema = z.discriminatedUnion('kind', [oidcAttestationSchema]);
export type AttestationRequest = z.infer<typeof attestationSchema>;

/** Body of POST /v1/tasks. */
export const taskStartRequestSchema = z
  .object({
    attestation: attestationSchema.optional(),
    intent: intentSchema,
    ttl: durationInputSchema.optional(),
    lifetime: durationInputSchema.optional(),
  })
  .strict();
export type TaskStartRequest = z.input<typeof taskStartRequestSchema>;

/** An RFC 3339 time, as every answer writes it. */
const time = z.iso.datetime({ offset: true });

/** 201 response of POST /v1/tasks. */
export const taskStartResponseSchema = z.object({
  access_token: z.string().describe('The task token (a JWT, RFC 9068)'),
  token_type: z.enum(['Bearer', 'DPoP']).describe('DPoP when the token is bound to a DPoP key (RFC 9449 §5), else Bearer'),
  issued_token_type: z.literal('urn:ietf:params:oauth:token-type:access_token'),
  grant: z.string().describe('The grant id: renew and end the task with it'),
  workload: z.string().describe('The attested workload id'),
  expires_in: z.number().int().nonnegative(),
  expires_at: time.describe('When the token expires'),
  grant_expires_at: time.describe("When the grant (the task's whole lifetime) ends"),
  scope: z.string().describe('The granted actions, space-separated'),
  intent: grantedIntentSchema,
  rule: z.string().describe('The policy rule that allowed the grant'),
});
export type TaskStartResponse = z.infer<typeof taskStartResponseSchema>;

/**
 * Body of POST /v1/tasks/{grant}/renew (may be empty over mTLS). The current task token travels
 * as `Authorization: Bearer`; the evidence re-attests the same workload (a fresh platform token
 * here, or the same client certificate on the connection).
 */
export const taskRenewRequestSchema = z
  .object({
    attestation: attestationSchema.optional(),
    ttl: durationInputSchema.optional(),
  })
  .strict();
export type TaskRenewRequest = z.input<typeof taskRenewRequestSchema>;

/**
 * How long after a renewal the token it superseded may be presented again to renew, by the same
 * workload with the same evidence issuer and binding, and get the grant's current token back
 * (same jti and exp, no new generation): a renewal whose answer was lost is safe to retry for
 * this long. Past it, or for any older token, presenting a superseded token is a replay and
 * revokes the grant (error_reason `replay_detected`).
 */
export const RENEW_RETRY_WINDOW_MS = 10_000;

/** 200 response of POST /v1/tasks/{grant}/renew: a new token for the same grant. */
export const taskRenewResponseSchema = taskStartResponseSchema.extend({
  generation: z.number().int().positive().describe("The token's place in the grant's sequence (the first token is 1)"),
});
export type TaskRenewResponse = z.infer<typeof taskRenewResponseSchema>;

/** 200 response of POST /v1/tasks/{grant}/end: the grant's state after the call. */
export const taskEndResponseSchema = z.object({
  grant: z.string(),
  status: z.enum(['ended', 'revoked', 'expired']).describe('`ended` by this call or an earlier one; `revoked` or `expired` if it already was'),
  ended_at: time.describe("When the grant's authority ended"),
});
export type TaskEndResponse = z.infer<typeof taskEndResponseSchema>;

/**
 * Form parameters of POST /oauth2/introspect and /oauth2/revoke (RFC 7662 §2.1, RFC 7009 §2.1).
 * Other parameters (a public client's `client_id`, say) are ignored, as RFC 6749 §3.2 requires.
 * A token longer than any task token the broker issues is a 400; a shorter one that does not
 * verify reads as unknown (RFC 7009 §2.2: 200; RFC 7662: inactive).
 */
export const tokenParamsSchema = z.object({
  token: z.string().min(1).max(MAX_TASK_TOKEN_BYTES, `must be at most ${MAX_TASK_TOKEN_BYTES} characters (no task token is longer)`),
  token_type_hint: z.string().min(1).max(64).optional(),
});

/** RFC 7662 §2.2: `active: false` alone, or the token's claims with the extensions we add. */
export const introspectionResponseSchema = z.union([
  z.object({ active: z.literal(false) }),
  z.object({
    active: z.literal(true),
    iss: z.string(),
    sub: z.string(),
    aud: z.string(),
    client_id: z.string(),
    scope: z.string(),
    token_type: z.enum(['Bearer', 'DPoP']),
    iat: z.number().int(),
    nbf: z.number().int(),
    exp: z.number().int(),
    jti: z.string(),
    grant: z.string().describe('jit-broker: the grant the token belongs to'),
    txn: z.string().describe('jit-broker: the task the token belongs to'),
    expires_in: z.number().int().describe('Seconds the token has left'),
    grant_exp: z.number().int().describe('When the grant ends (epoch seconds), unless ended or revoked first'),
    rule: z.string().describe('jit-broker: the policy rule that allowed the grant (from its record)'),
    authorization_details: z.array(taskAuthorizationDetailSchema),
    cnf: confirmationSchema.optional(),
    act: actorClaimSchema.optional().describe('A delegated token: the workload acting for `sub`, earlier actors nested (RFC 8693 §4.1)'),
  }),
  // A Transaction Token (protocol/txn-token.ts): its grant's record, in the Txn-Token's claims.
  z.object({
    active: z.literal(true),
    iss: z.string(),
    sub: z.string(),
    aud: z.string().describe('The trust domain'),
    scope: z.string().describe('The purpose of the transaction'),
    token_type: z.literal(TOKEN_TYPE_NOT_APPLICABLE),
    iat: z.number().int(),
    exp: z.number().int(),
    jti: z.string(),
    grant: z.string(),
    txn: z.string(),
    req_wl: z.string(),
    tctx: txnContextSchema,
    expires_in: z.number().int(),
    grant_exp: z.number().int(),
    rule: z.string(),
  }),
]);
export type IntrospectionResponse = z.infer<typeof introspectionResponseSchema>;

/** 200 response of POST /oauth2/revoke (RFC 7009 §2.2): empty, whether or not the token was known. */
export const revocationResponseSchema = z.object({});
