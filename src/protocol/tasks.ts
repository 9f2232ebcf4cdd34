import { z } from 'zod';
import { intentSchema, type GrantedIntent } from './intent.js';
import { MAX_TASK_TOKEN_BYTES } from './limits.js';

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

/** 201 response of POST /v1/tasks. */
export interface TaskStartResponse {
  access_token: string;
  /** `DPoP` when the token is bound to a DPoP key (RFC 9449 §5), else `Bearer`. */
  token_type: 'Bearer' | 'DPoP';
  issued_token_type: 'urn:ietf:params:oauth:token-type:access_token';
  grant: string;
  workload: string;
  expires_in: number;
  /** RFC 3339 time the token expires. */
  expires_at: string;
  /** RFC 3339 time the grant (the task's whole lifetime) ends. */
  grant_expires_at: string;
  scope: string;
  intent: GrantedIntent;
  rule: string;
}

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
export type TaskRenewResponse = TaskStartResponse & { generation: number };

/** 200 response of POST /v1/tasks/{grant}/end: the grant's state after the call. */
export interface TaskEndResponse {
  grant: string;
  /** `ended` by this call or an earlier one; `revoked` or `expired` if it already was. */
  status: 'ended' | 'revoked' | 'expired';
  /** RFC 3339 time the grant's authority ended. */
  ended_at: string;
}

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
export type IntrospectionResponse =
  | { active: false }
  | {
      active: true;
      iss: string;
      sub: string;
      aud: string;
      client_id: string;
      scope: string;
      token_type: 'Bearer' | 'DPoP';
      iat: number;
      nbf: number;
      exp: number;
      jti: string;
      /** jit-broker: the grant and task the token belongs to. */
      grant: string;
      txn: string;
      /** Seconds the token has left. */
      expires_in: number;
      /** When the grant ends (epoch seconds), unless ended or revoked first. */
      grant_exp: number;
      /** jit-broker: the policy rule that allowed the grant (from its record). */
      rule: string;
      authorization_details: unknown[];
      cnf?: { 'x5t#S256': string } | { jkt: string };
    };
