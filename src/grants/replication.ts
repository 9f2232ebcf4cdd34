import { Cluster, type Redis } from 'ioredis';
import { OutcomeUnknown } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * Acknowledged grant writes survive a failover: a task start, renewal, end, revocation or void is
 * answered only once `minReplicas` replicas of the primary that owns its slot have it (Redis WAIT).
 * WAIT is not consensus: it makes a loss on failover unlikely, not impossible (docs/failover.md).
 */
export interface Replication {
  /** Replicas that must acknowledge each grant write. */
  readonly minReplicas: number;
  /** How long WAIT blocks for them (ms); it must stay below the store's command timeout. */
  readonly timeoutMs: number;
}

/**
 * Attempts, the first included, at an end, revocation or void whose WAIT came short: each runs the
 * (idempotent) closing again with its WAIT. Bounded, so a caller gets its 503 within
 * REPLICATION_ATTEMPTS × (command + WAIT timeout).
 */
export const REPLICATION_ATTEMPTS = 3;

/** The lua write scripts a grant write runs (redis-store.ts defines them). */
export type GrantWriteScript = 'jitCreateGrant' | 'jitRenewGrant' | 'jitRevokeReplay' | 'jitCloseGrant';

export const NOT_REPLICATED = 'the grant store could not confirm the change on its replicas in time; retry';

/**
 * A write the primary made but fewer than `minReplicas` replicas acknowledged within the WAIT
 * timeout. An OutcomeUnknown: the caller gets a 503 with Retry-After, and a failover could still
 * lose the write. `value` is what the write answered (the first attempt's, when retried).
 */
export class NotReplicated extends OutcomeUnknown {
  constructor(
    readonly op: string,
    readonly replicas: number,
    readonly wanted: number,
    readonly value: unknown,
  ) {
    super(NOT_REPLICATED, { detail: `${op}: written on the primary, acknowledged by ${replicas} of ${wanted} replicas within the WAIT timeout` });
  }
}

/**
 * Runs one grant write script and, when replication is asked for, `WAIT minReplicas timeout` in the
 * same explicit pipeline. The pipeline matters on a Cluster: it goes to the node that owns its keys'
 * slot, so WAIT counts that primary's replicas (a keyless WAIT sent alone would go to any node).
 * Without replication the script goes out as before (auto-pipelined with other requests' commands).
 * A script error rejects, as the command itself would; `replicas` is undefined when nothing waited.
 *
 * A Cluster client follows MOVED for a command sent alone, but not for a pipeline one of whose
 * replies (WAIT's) is no error: with a slot map from before a failover, every such write would
 * answer MOVED until the client's periodic refresh (seconds). So a write answered MOVED or ASK
 * (Redis ran nothing) refreshes the slot map and is sent once more.
 */
export async function runGrantWrite(
  redis: Redis | Cluster,
  replication: Replication | undefined,
  script: GrantWriteScript,
  args: readonly (string | number)[],
): Promise<{ reply: (string | number)[]; replicas: number | undefined }> {
  if (!replication) return { reply: await redis[script](...args), replicas: undefined };
  for (let attempt = 1; ; attempt++) {
    const replies = await redis.pipeline([[script, ...args], ['wait', replication.minReplicas, replication.timeoutMs]]).exec();
    const [written, waited] = replies ?? [];
    if (!written || !waited) throw new Error(`${script}: the pipeline answered ${replies?.length ?? 0} of 2 replies`);
    if (written[0]) {
      if (attempt < 2 && redis instanceof Cluster && isRedirection(written[0])) {
        await new Promise<void>((resolve) => redis.refreshSlotsCache(() => resolve()));
        continue;
      }
      throw written[0];
    }
    if (waited[0]) throw waited[0];
    return { reply: written[1] as (string | number)[], replicas: Number(waited[1]) };
  }
}

/** MOVED or ASK: the node does not serve the key's slot (now), and ran nothing. */
const isRedirection = (e: Error): boolean => /^(MOVED|ASK) /.test(e.message);

/** Throws NotReplicated (carrying `value`) when WAIT counted fewer replicas than asked for. */
export function requireReplicas(replication: Replication | undefined, replicas: number | undefined, op: string, value: unknown): void {
  if (replication && replicas !== undefined && replicas < replication.minReplicas) throw new NotReplicated(op, replicas, replication.minReplicas, value);
}

/**
 * An end, revocation or void, retried while its WAIT comes short (REPLICATION_ATTEMPTS in all);
 * the first attempt's answer is the one returned (a retry finds the grant already closed). Still
 * short after that: logged at error level and thrown, so the caller hears 503, never a success.
 */
export async function untilReplicated<T>(log: Logger, grant: string, attempt: () => Promise<T>): Promise<T> {
  let first: NotReplicated | undefined;
  for (let i = 0; i < REPLICATION_ATTEMPTS; i++) {
    try {
      const value = await attempt();
      return first ? (first.value as T) : value;
    } catch (e) {
      if (!(e instanceof NotReplicated)) throw e;
      first ??= e;
    }
  }
  log.error({ op: first!.op, grant, replicas: first!.replicas, wanted: first!.wanted, attempts: REPLICATION_ATTEMPTS }, 'grant change made on the primary but not confirmed on enough replicas: answered 503; a failover now could lose it');
  throw first!;
}
