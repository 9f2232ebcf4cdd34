import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { randomHex } from '../util/random.js';

/** An incoming X-Request-Id is kept when it is this: bounded, and nothing a log reader could trip on. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Methods labelled as themselves; any other is `other` (labels stay bounded). */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** The request's id: the caller's X-Request-Id when it is safe to echo and log, else a fresh one. */
export function requestIdOf(header: string | undefined): string {
  return header !== undefined && REQUEST_ID.test(header) ? header : randomHex(16);
}

/**
 * One log line per request (request id, method, route pattern, status, latency, client address)
 * and its latency in the metrics. Only the route pattern is named, never the path: a path holds
 * grant ids, and a mistaken one whatever the caller typed. The id is returned as X-Request-Id.
 */
export function requestLog(deps: { log: Logger; metrics?: Metrics; clientAddress: (c: Context) => string | undefined }): MiddlewareHandler {
  return async (c, next) => {
    const started = process.hrtime.bigint();
    const id = requestIdOf(c.req.header('x-request-id'));
    try {
      await next();
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const status = c.res.status;
      const matched = routePath(c, -1);
      // Only this middleware matched: no route (the 404 answer).
      const route = matched === '*' || matched === '/*' ? 'unmatched' : matched;
      const method = METHODS.has(c.req.method) ? c.req.method : 'other';
      c.res.headers.set('x-request-id', id);
      deps.metrics?.request(method, route, status, seconds);
      const client = deps.clientAddress(c);
      deps.log.info({ req_id: id, method, route, status, ms: Math.round(seconds * 1e6) / 1e3, ...(client ? { client } : {}) }, 'request');
    }
  };
}
