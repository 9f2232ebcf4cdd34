import { z } from 'zod';
import { intentSchema, type GrantedIntent } from './intent.js';

/** Durations on the wire: integer seconds, or a string like "90s", "5m", "1h". */
export const durationInputSchema = z.union([
  z.number().int().positive().max(86_400 * 365),
  z.string().regex(/^\d{1,7}(ms|s|m|h|d)$/, 'must be a duration such as "90s", "5m" or "1h"'),
]);

export const oidcAttestationSchema = z
  .object({ kind: z.literal('oidc'), token: z.string().min(1).max(16_384) })
  .strict();

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
  token_type: 'Bearer';
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
