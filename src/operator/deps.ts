import { hostname } from 'node:os';
import type { ServiceMetrics } from '../metrics.js';
import { z } from 'zod';
import { isWellFormed } from '../protocol/unicode.js';
import type { Operator } from '../auth/operators.js';
import type { Config } from '../config/schema.js';
import { InvalidRequest } from '../errors.js';
import type { GrantStore, OperatorAction, OperatorEvent } from '../grants/store.js';
import type { Logger } from '../log.js';
import type { Keyring } from '../tokens/keyring.js';
import type { Policy } from '../policy/evaluate.js';
import type { AuditTails } from './audit-log.js';
import type { Clock } from '../util/clock.js';
import { describeZodError } from '../broker.js';
import { clip } from '../util/text.js';

/**
 * What the operator service functions need: the same store, keyring and clock the broker uses.
 * Each function takes the authenticated operator (Broker.operator checked it and its role) and
 * the request's parameters as they came (validated here with zod), and returns the response body.
 */
export interface OperatorDeps {
  config: Config;
  store: GrantStore;
  keyring: Keyring;
  clock: Clock;
  log: Logger;
  /** The running policy (policy explain). */
  policy: Policy;
  /** The live audit tails of this instance (GET /v1/audit/stream); closed with the broker. */
  tails?: AuditTails;
  /** Counts the grants operators revoke (metrics.ts); none when absent. */
  metrics?: Pick<ServiceMetrics, 'revoked'>;
  /** This broker instance, as key operations name it (default: hostname and pid). */
  instance?: string;
}

export const instanceName = (deps: OperatorDeps): string => deps.instance ?? `${hostname()}:${process.pid}`;

/** Grants examined at most per call (queries and the kill switch): Redis is never blocked for long. */
export const MAX_EXAMINED = 1000;

/**
 * One audit event for an operator's action, naming the operator. A change that cannot be
 * audited is refused before it is made (callers audit first where they can); a read's event is
 * written to the capped read stream and its failure fails the read (fail closed).
 */
export async function auditOperator(
  deps: OperatorDeps,
  op: Operator,
  action: OperatorAction,
  fields: Omit<OperatorEvent, 'type' | 'at' | 'action' | 'operator' | 'role'> = {},
  read = false,
): Promise<void> {
  const event: OperatorEvent = { type: 'operator.action', at: deps.clock(), action, operator: op.name, role: op.role, ...fields };
  if (event.selector !== undefined) event.selector = clip(event.selector, 4000);
  if (event.reason !== undefined) event.reason = clip(event.reason, 1000);
  await deps.store.appendOperatorAudit(event, { retentionMs: deps.config.grants.audit_retention, ...(read ? { read: true } : {}) });
  deps.log.info({ operator: op.name, role: op.role, action, ...(fields.count !== undefined ? { count: fields.count } : {}), ...(fields.kid ? { kid: fields.kid } : {}) }, 'operator action');
}

/** Parameters through their zod schema; anything else is a 400 naming the first problems. */
export function parseParams<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (!r.success) throw new InvalidRequest(describeZodError(r.error as never));
  return r.data;
}

export const iso = (ms: number): string => new Date(ms).toISOString();

/** A query's `limit`: 1..1000 rows, as a string in the query. */
export const pageLimitParam = z
  .string()
  .regex(/^\d{1,4}$/, 'must be a whole number from 1 to 1000')
  .transform(Number)
  .refine((n) => n >= 1 && n <= 1000, 'must be from 1 to 1000');

// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A parameter's text: well-formed Unicode (it may reach a Lua-decoded record), bounded, no control characters. */
export const paramText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((v) => isWellFormed(v) && !CONTROL.test(v), 'must be text without control characters');
