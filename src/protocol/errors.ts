import { z } from 'zod';

/** Error codes on the wire (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8693 §2.2.2, RFC 9396 §5, RFC 7009 §2.2.1, RFC 9449 §12.2). */
export const ERROR_CODES = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'invalid_token',
  'unauthorized_client',
  'access_denied',
  'invalid_target',
  'invalid_scope',
  'unsupported_grant_type',
  'unsupported_token_type',
  'invalid_authorization_details',
  'invalid_dpop_proof',
  'use_dpop_nonce',
  'not_found',
  'request_too_large',
  'rate_limited',
  'temporarily_unavailable',
  'server_error',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Machine-readable reasons an error may carry beside its code (`error_reason`), for failures a
 * client must tell apart from others with the same code:
 * - `replay_detected`: a superseded task token was presented (renew or end), so the grant has
 *   been revoked; never retry, start a new task.
 */
export const ERROR_REASONS = ['replay_detected'] as const;
export type ErrorReason = (typeof ERROR_REASONS)[number];

/** Body of every error response (RFC 6749 §5.2). */
export const errorBodySchema = z.object({
  error: z.enum(ERROR_CODES),
  error_description: z.string().describe('A human sentence saying what was wrong; never a secret or a stack trace'),
  error_reason: z.enum(ERROR_REASONS).optional(),
});
export type ErrorBody = z.infer<typeof errorBodySchema>;
