import { z } from 'zod';
import { taskAuthorizationDetailSchema } from './intent.js';

export const TASK_TOKEN_TYP = 'at+jwt';

/** Confirmation claim: RFC 8705 §3.1 (mTLS) or RFC 9449 §6.1 (DPoP). */
export const confirmationSchema = z.union([z.object({ 'x5t#S256': z.string().min(1) }).strict(), z.object({ jkt: z.string().min(1) }).strict()]);
export type Confirmation = z.infer<typeof confirmationSchema>;

/**
 * The claims of a task token as a verifier must find them: the shape is checked after the
 * signature, so a token this broker did not mint cannot pass for one.
 */
export const taskTokenClaimsSchema = z.object({
  iss: z.string().min(1),
  sub: z.string().min(1).max(2048),
  aud: z.string().min(1),
  iat: z.number().int().nonnegative(),
  nbf: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
  jti: z.string().min(1).max(256),
  client_id: z.string().min(1),
  grant: z.string().min(1).max(256),
  txn: z.string().min(1),
  scope: z.string(),
  authorization_details: z.array(taskAuthorizationDetailSchema).min(1),
  cnf: confirmationSchema.optional(),
});
/** Claims of a task token (RFC 9068 §2.2 + RFC 9396 §9.1 + the grant's own). */
export type TaskTokenClaims = z.infer<typeof taskTokenClaimsSchema>;
