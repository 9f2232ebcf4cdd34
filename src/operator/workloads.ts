import { z } from 'zod';
import type { Operator } from '../auth/operators.js';
import type { WorkloadList, WorkloadRow } from '../protocol/operator.js';
import { decodeCursor, encodeCursor, MAX_CURSOR } from './cursor.js';
import { auditOperator, iso, pageLimitParam, parseParams, type OperatorDeps } from './deps.js';

export type { WorkloadRow };

export const workloadQuerySchema = z
  .object({
    limit: pageLimitParam.optional(),
    cursor: z.string().max(MAX_CURSOR).optional(),
  })
  .strict();

/**
 * GET /v1/workloads (auditor): workloads that had grants within the audit retention, most recently
 * seen first, from the workloads hint index, with their live grant counts. Paged with a cursor.
 */
export async function listWorkloads(deps: OperatorDeps, op: Operator, params: unknown): Promise<WorkloadList> {
  const q = parseParams(workloadQuerySchema, params);
  const now = deps.clock();
  const after = decodeCursor(q.cursor);
  const { workloads, next } = await deps.store.listWorkloads({
    now,
    retentionMs: deps.config.grants.audit_retention,
    limit: q.limit ?? 100,
    ...(after ? { after } : {}),
  });
  await auditOperator(deps, op, 'workloads.list', { count: workloads.length }, true);
  return {
    workloads: workloads.map((w) => ({ workload: w.id, live_grants: w.live, last_activity: iso(w.last_activity), last_seen: iso(w.last_seen) })),
    ...(next ? { cursor: encodeCursor(next) } : {}),
  };
}
