import { UnreadableGrant } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../util/clock.js';
import type { GrantStore } from './store.js';

/** Give up after this long: the void marker (10 min) must outlive every retry. */
const RETRY_FOR_MS = 5 * 60_000;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;
/** Bound on grants waiting to be voided; beyond it they simply run to their lifetime end. */
const MAX_PENDING = 10_000;

/**
 * Grants whose create reply never came (OutcomeUnknown): the caller got a 503 and no token, but
 * Redis may still run the write. Each is voided (ended, or barred if not yet written) with
 * backoff until the store answers, so a failed request leaves no live grant holding a cap slot.
 */
export class UndeliveredGrants {
  private readonly pending = new Map<string, NodeJS.Timeout | undefined>();
  private closed = false;

  constructor(
    private readonly store: GrantStore,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  add(grantId: string, workload: string): void {
    if (this.closed || this.pending.has(grantId)) return;
    if (this.pending.size >= MAX_PENDING) {
      this.log.error({ grant: grantId, workload }, 'too many undelivered grants pending; this one lives until its lifetime ends');
      return;
    }
    this.pending.set(grantId, undefined);
    this.attempt(grantId, workload, this.clock() + RETRY_FOR_MS, FIRST_DELAY_MS);
  }

  get size(): number {
    return this.pending.size;
  }

  close(): void {
    this.closed = true;
    for (const timer of this.pending.values()) if (timer) clearTimeout(timer);
    if (this.pending.size) this.log.warn({ grants: [...this.pending.keys()] }, 'undelivered grants left unvoided at shutdown');
    this.pending.clear();
  }

  private attempt(grantId: string, workload: string, deadline: number, delay: number): void {
    this.store.voidGrant(grantId, workload, { now: this.clock() }).then(
      (outcome) => {
        this.pending.delete(grantId);
        this.log.warn({ grant: grantId, workload, outcome }, 'undelivered grant voided');
      },
      (e: unknown) => {
        if (this.closed || !this.pending.has(grantId)) return;
        // A record that does not decode will not decode on a retry either (the store logged it).
        if (this.clock() >= deadline || e instanceof UnreadableGrant) {
          this.pending.delete(grantId);
          this.log.error({ grant: grantId, workload, err: (e as Error).message }, 'undelivered grant could not be voided');
          return;
        }
        const timer = setTimeout(() => this.attempt(grantId, workload, deadline, Math.min(delay * 2, MAX_DELAY_MS)), delay);
        timer.unref();
        this.pending.set(grantId, timer);
      },
    );
  }
}
