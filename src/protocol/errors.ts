/** Error codes on the wire (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8693 §2.2.2, RFC 9396 §5, RFC 7009 §2.2.1). */
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
  'not_found',
  'request_too_large',
  'rate_limited',
  'temporarily_unavailable',
  'server_error',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Body of every error response. */
export interface ErrorBody {
  error: ErrorCode;
  error_description: string;
}
