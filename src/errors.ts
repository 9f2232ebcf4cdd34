import type { ErrorCode, ErrorReason } from './protocol/errors.js';

/**
 * One base class with a stable `code` (as jose does). `description` is public and goes into
 * `error_description`; `detail` is operator-only and goes to the log, never to the client.
 */
export class BrokerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly description: string;
  readonly detail: string | undefined;
  /** Seconds a client should wait before retrying (429/503). */
  readonly retryAfter: number | undefined;
  /** A machine-readable reason beside the code (protocol/errors.ts ERROR_REASONS). */
  readonly reason: ErrorReason | undefined;

  constructor(
    code: ErrorCode,
    status: number,
    description: string,
    opts: { detail?: string; retryAfter?: number; cause?: unknown; reason?: ErrorReason } = {},
  ) {
    super(description, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.description = description;
    this.detail = opts.detail;
    this.retryAfter = opts.retryAfter;
    this.reason = opts.reason;
  }
}

type Opts = { detail?: string; retryAfter?: number; cause?: unknown; reason?: ErrorReason };

export class InvalidRequest extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_request', 400, description, opts);
  }
}

/**
 * The caller could not be authenticated (RFC 6749 §5.2 `invalid_client`). `challenge: 'Basic'`
 * after a failed HTTP Basic attempt: §5.2 wants the challenge of the scheme the client used.
 */
export class InvalidClient extends BrokerError {
  readonly challenge: 'Basic' | undefined;
  constructor(description: string, opts?: Opts & { challenge?: 'Basic' }) {
    super('invalid_client', 401, description, opts);
    this.challenge = opts?.challenge;
  }
}

/** The workload could not be authenticated: its evidence is missing, malformed, untrusted or expired. */
export class AttestationFailed extends InvalidClient {}

/** A presented task token that does not verify (RFC 6750 §3.1 `invalid_token`, 401). */
export class InvalidToken extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_token', 401, description, opts);
  }
}

/** No token was presented at all: RFC 6750 §3.1 names no error in the challenge then. */
export class TokenMissing extends InvalidToken {}

export class InvalidGrant extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_grant', 400, description, opts);
  }
}

/** Policy refused the intent. */
export class AccessDenied extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('access_denied', 403, description, opts);
  }
}

export class NotFound extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('not_found', 404, description, opts);
  }
}

export class RequestTooLarge extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('request_too_large', 413, description, opts);
  }
}

export class LimitExceeded extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('rate_limited', 429, description, opts);
  }
}

/** A dependency (Redis, an issuer's keys, the signing key) is unavailable: fail closed. */
export class Unavailable extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('temporarily_unavailable', 503, description, { retryAfter: 1, ...opts });
  }
}

/**
 * A write was sent but its reply never came (timeout, connection lost): it may or may not have
 * happened. Still a 503 to the caller; the caller of the store makes the outcome definite.
 */
export class OutcomeUnknown extends Unavailable {}

/**
 * A grant record exists but does not decode (written by an older broker, or by someone else with
 * access to Redis): its grant can be neither read nor changed, and nothing may claim it was. A
 * server error (500) naming no detail; the grant id and the problem go to the log.
 */
export class UnreadableGrant extends BrokerError {
  constructor(readonly grantId: string, problem: string) {
    super('server_error', 500, 'the grant record could not be read', { detail: `grant ${grantId}: ${problem}` });
  }
}

/** Configuration is invalid; `problems` lists each by its path. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** RFC 8693 §2.2.2 / RFC 8707 §2: the audience or resource is one no token can be issued for. */
export class InvalidTarget extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_target', 400, description, opts);
  }
}

/** RFC 6749 §5.2: the requested scope is missing, malformed or more than the policy grants. */
export class InvalidScope extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_scope', 400, description, opts);
  }
}

/** RFC 6749 §5.2: a grant type the token endpoint does not implement. */
export class UnsupportedGrantType extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('unsupported_grant_type', 400, description, opts);
  }
}

/** RFC 9396 §5: authorization_details that are malformed, of an unknown type or not as the type defines. */
export class InvalidAuthorizationDetails extends BrokerError {
  constructor(description: string, opts?: Opts) {
    super('invalid_authorization_details', 400, description, opts);
  }
}
