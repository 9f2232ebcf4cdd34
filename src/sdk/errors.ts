import type { ErrorCode, ErrorReason } from '../protocol/errors.js';

/**
 * Errors of the workload client. One base class with a stable string `code` (as jose does), and a
 * subclass per failure a caller may want to handle apart. Messages never hold a token.
 */
export class BrokerClientError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The broker answered with an error: its `error` code, `error_description`, HTTP status and `error_reason`. */
export class BrokerResponseError extends BrokerClientError {
  declare readonly code: ErrorCode | 'unexpected_response';
  readonly status: number;
  readonly description: string;
  readonly reason: ErrorReason | undefined;
  /** Seconds the broker asked to wait (Retry-After), on 429 and 503. */
  readonly retryAfter: number | undefined;
  constructor(status: number, code: ErrorCode | 'unexpected_response', description: string, opts: { reason?: ErrorReason | undefined; retryAfter?: number | undefined } = {}) {
    super(code, `broker answered ${status} ${code}: ${description}`);
    this.status = status;
    this.description = description;
    this.reason = opts.reason;
    this.retryAfter = opts.retryAfter;
  }
}

/**
 * A superseded token was presented for this task's grant, so the broker revoked it: someone else
 * holds a token of this grant. Never retried; the task has ended. Start a new task.
 */
export class ReplayDetectedError extends BrokerResponseError {}

/** The broker could not be reached (connection refused or reset, TLS failure, timeout). */
export class BrokerUnreachableError extends BrokerClientError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('broker_unreachable', message, options);
  }
}

/** The task is over: its grant's lifetime ended, it was ended, or it failed. Start a new task. */
export class TaskEndedError extends BrokerClientError {
  constructor(code: 'task_expired' | 'task_ended' | 'renewal_uncertain', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The client certificate the task is bound to expired before the task ended. Start a new task. */
export class CertificateExpiredError extends BrokerClientError {
  constructor(message: string) {
    super('certificate_expired', message);
  }
}

/** An attestation source could not produce evidence (file unreadable, token endpoint failed). */
export class AttestationSourceError extends BrokerClientError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('attestation_unavailable', message, options);
  }
}

/** The caller's AbortSignal fired. */
export class AbortedError extends BrokerClientError {
  constructor(reason?: unknown) {
    super('aborted', 'the operation was aborted', reason === undefined ? undefined : { cause: reason });
  }
}
