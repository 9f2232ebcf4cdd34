/**
 * Typed verification errors, in jose's model: one base class with a stable string `code`, a
 * subclass per kind of answer (401, 403, 503). Messages are public sentences: they never hold the
 * token or a secret, so a resource server may send them back as `error_description`.
 */

import { DPOP_ALGORITHMS } from '../protocol/dpop.js';

export type VerifyErrorCode =
  | 'token_missing'
  | 'token_malformed'
  | 'algorithm_not_allowed'
  | 'wrong_type'
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'bad_claims'
  | 'binding_required'
  | 'binding_mismatch'
  | 'dpop_proof_invalid'
  | 'dpop_replay_table_full'
  | 'action_not_granted'
  | 'resource_not_granted'
  | 'grant_inactive'
  | 'introspection_unavailable'
  | 'jwks_unavailable';

/** The RFC 6750 §3.1 error code of an answer, or `temporarily_unavailable` for 503. */
export type BearerErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'temporarily_unavailable' | 'invalid_dpop_proof';

export abstract class TaskTokenError extends Error {
  abstract readonly status: 401 | 403 | 503;
  abstract readonly error: BearerErrorCode;
  /** The scheme of the challenge: `DPoP` (RFC 9449 §7.1) when the failure is about a DPoP-bound token. */
  readonly scheme: 'Bearer' | 'DPoP';
  constructor(
    readonly code: VerifyErrorCode,
    message: string,
    options?: { cause?: unknown; scheme?: 'Bearer' | 'DPoP' },
  ) {
    super(message, options);
    this.scheme = options?.scheme ?? 'Bearer';
  }
}

/** 401 `invalid_token`: the token is not a valid task token for this resource server. */
export class InvalidTaskToken extends TaskTokenError {
  override readonly name = 'InvalidTaskToken';
  readonly status = 401 as const;
  readonly error = 'invalid_token' as const;
}

/** 401 `invalid_dpop_proof` (RFC 9449 §7.1, §12.2): the DPoP proof sent with a DPoP-bound token does not hold. */
export class InvalidDpopProof extends TaskTokenError {
  override readonly name = 'InvalidDpopProof';
  readonly status = 401 as const;
  readonly error = 'invalid_dpop_proof' as const;
  constructor(message: string) {
    super('dpop_proof_invalid', message, { scheme: 'DPoP' });
  }
}

/** 403 `insufficient_scope`: a valid token whose granted intent does not cover this request. */
export class IntentNotGranted extends TaskTokenError {
  override readonly name = 'IntentNotGranted';
  readonly status = 403 as const;
  readonly error = 'insufficient_scope' as const;
}

/** 503: the verifier could not decide (JWKS or introspection unreachable) and fails closed. */
export class VerifierUnavailable extends TaskTokenError {
  override readonly name = 'VerifierUnavailable';
  readonly status = 503 as const;
  readonly error = 'temporarily_unavailable' as const;
}

/** 401 without an error code (RFC 6750 §3.1): the request carried no bearer token. */
export class MissingTaskToken extends TaskTokenError {
  override readonly name = 'MissingTaskToken';
  readonly status = 401 as const;
  readonly error = 'invalid_request' as const;
  constructor(message = 'a task token is required (Authorization: Bearer)') {
    super('token_missing', message);
  }
}

/** The HTTP answer to a failed verification: status, RFC 6750 `WWW-Authenticate`, JSON body. */
export interface Challenge {
  status: 401 | 403 | 500 | 503;
  headers: Record<string, string>;
  body: { error: string; error_description: string };
}

const quoted = (s: string): string => `"${s.replace(/[\\"]/g, "'").replace(/[^\x20-\x7e]/g, '?')}"`;

/**
 * RFC 6750 §3: `WWW-Authenticate: Bearer` alone when no token came, with `error` and
 * `error_description` otherwise. Anything that is not a TaskTokenError is a 500 with no detail.
 */
export function challenge(err: unknown, opts: { realm?: string } = {}): Challenge {
  const realm = opts.realm ? [`realm=${quoted(opts.realm)}`] : [];
  if (!(err instanceof TaskTokenError)) {
    return { status: 500, headers: {}, body: { error: 'server_error', error_description: 'the token could not be verified' } };
  }
  const body = { error: err.error, error_description: err.message };
  if (err instanceof MissingTaskToken) {
    return { status: 401, headers: { 'www-authenticate': ['Bearer', realm.join(', ')].filter(Boolean).join(' ') }, body };
  }
  if (err instanceof VerifierUnavailable) return { status: 503, headers: { 'retry-after': '5' }, body };
  // RFC 9449 §7.1: a DPoP challenge names the proof algorithms accepted.
  const algs = err.scheme === 'DPoP' ? [`algs=${quoted(DPOP_ALGORITHMS.join(' '))}`] : [];
  const params = [...realm, `error=${quoted(err.error)}`, `error_description=${quoted(err.message)}`, ...algs];
  return { status: err.status, headers: { 'www-authenticate': `${err.scheme} ${params.join(', ')}` }, body };
}
