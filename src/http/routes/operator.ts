import type { Context, Hono } from 'hono';
import type { Operator, OperatorRole } from '../../auth/operators.js';
import type { CallContext } from '../../broker.js';
import { listKeys, rotateKey } from '../../operator/keys.js';
import { queryGrants, showGrant } from '../../operator/grants.js';
import { revokeGrants } from '../../operator/revoke.js';
import { listWorkloads } from '../../operator/workloads.js';
import { readJson } from '../body.js';
import type { OperatorDeps } from '../../operator/deps.js';
import { streamSSE } from 'hono/streaming';
import { AuditTails, readAuditLog, runTail, startTail } from '../../operator/audit-log.js';
import { explainPolicy } from '../../operator/explain.js';
import { json } from '../errors.js';
import type { RouteDeps } from '../call-context.js';

/** What an operator route's handler gets: the hono context, the authenticated operator, the call's transport facts. */
export type OperatorHandler = (c: Context, op: Operator, call: CallContext) => Promise<Response>;

/**
 * Wraps a route handler for operators: the caller must authenticate as a configured operator
 * (bearer operator credential or operator client certificate; failures count against the
 * per-address failure limit) whose role allows `role`; else 401 invalid_client or 403
 * access_denied, and the handler never runs. Use it for every operator route, e.g.
 *
 *     app.get('/v1/audit', operatorRoute(deps, 'auditor', async (c, op) => json(200, await readAuditLog(opDeps, op, c.req.query()))));
 *
 * `auditor` routes admit admins too. The handler audits its own action (operator/deps.ts auditOperator).
 */
export function operatorRoute(deps: Pick<RouteDeps, 'broker' | 'callContext'>, role: OperatorRole, handler: OperatorHandler) {
  return async (c: Context): Promise<Response> => {
    const call = deps.callContext(c);
    const op = await deps.broker.operator(call, role);
    return handler(c, op, call);
  };
}

/** The operator API: grant queries, the kill switch, workloads, signing keys (service functions in operator/). */
export function operatorRoutes(app: Hono, deps: RouteDeps, ops: OperatorDeps): void {
  app.get(
    '/v1/grants',
    operatorRoute(deps, 'auditor', async (c, op) => json(200, await queryGrants(ops, op, c.req.query()))),
  );
  app.post(
    '/v1/grants/revoke',
    operatorRoute(deps, 'admin', async (c, op) => json(200, await revokeGrants(ops, op, await readJson(c, deps.maxBodyBytes)))),
  );
  app.get(
    '/v1/grants/:id',
    operatorRoute(deps, 'auditor', async (c, op) => json(200, await showGrant(ops, op, c.req.param('id') ?? ''))),
  );
  app.get(
    '/v1/workloads',
    operatorRoute(deps, 'auditor', async (c, op) => json(200, await listWorkloads(ops, op, c.req.query()))),
  );
  app.get(
    '/v1/keys',
    operatorRoute(deps, 'auditor', async (_c, op) => json(200, await listKeys(ops, op))),
  );
  app.post(
    '/v1/keys/rotate',
    operatorRoute(deps, 'admin', async (_c, op) => json(200, await rotateKey(ops, op))),
  );
  app.get(
    '/v1/audit',
    operatorRoute(deps, 'auditor', async (c, op) => {
      const page = await readAuditLog(ops, op, c.req.query());
      if (page.format === 'json') return json(200, { order: page.order, events: page.events, cursor: page.cursor, done: page.done });
      // ndjson: one event per line, streamed; the continuation travels in headers.
      const lines = page.events.map((e) => `${JSON.stringify(e)}\n`);
      let i = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(ctl) {
          const chunk = lines.slice(i, i + 200).join('');
          i += 200;
          if (chunk) ctl.enqueue(new TextEncoder().encode(chunk));
          if (i >= lines.length) ctl.close();
        },
      });
      return new Response(body, {
        status: 200,
        headers: {
          'content-type': 'application/x-ndjson',
          'cache-control': 'no-store',
          'audit-order': page.order,
          'audit-done': String(page.done),
          ...(page.cursor ? { 'audit-cursor': page.cursor } : {}),
        },
      });
    }),
  );
  const tails = ops.tails ?? new AuditTails();
  app.get(
    '/v1/audit/stream',
    operatorRoute(deps, 'auditor', async (c, op) => {
      const ctl = tails.acquire();
      try {
        const start = await startTail(ops, op, c.req.query(), c.req.header('last-event-id'));
        const onClientGone = () => ctl.abort();
        c.req.raw.signal.addEventListener('abort', onClientGone, { once: true });
        return streamSSE(c, async (stream) => {
          stream.onAbort(onClientGone);
          try {
            await runTail(ops, tails, start, stream, ctl.signal);
          } finally {
            c.req.raw.signal.removeEventListener('abort', onClientGone);
            await stream.close();
            tails.release(ctl);
          }
        });
      } catch (e) {
        tails.release(ctl);
        throw e;
      }
    }),
  );
  app.post(
    '/v1/policy/explain',
    operatorRoute(deps, 'auditor', async (c, op) => json(200, await explainPolicy(ops, op, await readJson(c, deps.maxBodyBytes)))),
  );
}
