import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { BrokerError, InvalidClient, TokenMissing } from '../errors.js';
import type { Logger } from '../log.js';
import type { ErrorBody } from '../protocol/errors.js';
import { clip } from '../util/text.js';


/** Maps any thrown value to the JSON error contract; never a stack trace or a secret. */
export function errorResponse(err: unknown, c: Context, log: Logger): Response {
  if (err instanceof BrokerError) {
    const level = err.status >= 500 ? 'warn' : 'info';
    // Descriptions and paths can echo what the client sent (a path is up to 16 KiB): the log
    // keeps a bounded part, so one request cannot write a 64 KiB log line.
    const detail = err.detail === undefined ? undefined : clip(err.detail, 2048);
    log[level]({ code: err.code, status: err.status, detail, path: clip(c.req.path, 256) }, clip(err.description, 1024));
    const headers: Record<string, string> = {};
    if (err.retryAfter !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(err.retryAfter)));
    // RFC 9110 §15.5.2: a 401 names a scheme. Only a bearer task token that does not verify gets
    // RFC 6750's error="invalid_token" (§3.1); no error when none was sent, nor for evidence and
    // client credentials (their invalid_client is in the JSON body).
    // A failed HTTP Basic client authentication is challenged with Basic (RFC 6749 §5.2).
    if (err.status === 401)
      headers['WWW-Authenticate'] =
        err instanceof InvalidClient && err.challenge === 'Basic'
          ? 'Basic realm="jit-broker", charset="UTF-8"'
          : err.code === 'invalid_token' && !(err instanceof TokenMissing)
            ? 'Bearer realm="jit-broker", error="invalid_token"'
            : 'Bearer realm="jit-broker"';
    // The unread rest of an oversized body is not worth draining: close the connection after.
    if (err.status === 413) headers['Connection'] = 'close';
    return json(err.status, { error: err.code, error_description: err.description, ...(err.reason ? { error_reason: err.reason } : {}) }, headers);
  }
  if (err instanceof HTTPException) {
    if (err.status === 413) return json(413, { error: 'request_too_large', error_description: 'request body is too large' });
    return json(err.status, { error: 'invalid_request', error_description: err.message || 'invalid request' });
  }
  log.error({ err: err instanceof Error ? { name: err.name, message: err.message, stack: err.stack } : String(err), path: clip(c.req.path, 256) }, 'unhandled error');
  return json(500, { error: 'server_error', error_description: 'internal error' });
}

export function json(status: number, body: ErrorBody | object, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers },
  });
}
