import type { Context, Hono } from 'hono';
import type { Operator, OperatorRole } from '../../auth/operators.js';
import type { CallContext } from '../../broker.js';
import { listKeys, rotateKey } from '../../operator/keys.js';
import { queryGrants, showGrant } from '../../operator/grants.js';
import { revokeGrants } from '../../operator/revoke.js';
import { listWorkloads } from '../../operator/workloads.js';
import { readJson } from '../body.js';
import type { OperatorDeps } from '../../operator/deps.js';
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
}
