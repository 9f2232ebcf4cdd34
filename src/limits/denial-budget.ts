import { refill, type BucketState, type RateLimit } from '../util/token-bucket.js';

export interface DenialBudgetOptions {
  /** Denials recorded one by one per source address. */
  perAddress: RateLimit;
  /** Denials recorded one by one per workload. */
  perWorkload: RateLimit;
  /** Addresses, and workloads, remembered at most each (the least recently denied forgotten). */
  maxTracked: number;
}

/**
 * How many denials are written to the audit log one by one: a token bucket per source address
 * and one per workload, and a denial is written only when both hold a token. In process (per
 * broker instance) and bounded: each map forgets its least recently denied key beyond
 * `maxTracked`, so the budget's own state does not grow with the number of callers.
 */
export class DenialBudget {
  private readonly addresses: BoundedBuckets;
  private readonly workloads: BoundedBuckets;

  constructor(opts: DenialBudgetOptions) {
    this.addresses = new BoundedBuckets(opts.perAddress, opts.maxTracked);
    this.workloads = new BoundedBuckets(opts.perWorkload, opts.maxTracked);
  }

  /**
   * Takes one token from the address's bucket (when there is an address) and one from the
   * workload's, and answers true; or takes none and answers false when either is empty.
   */
  admit(address: string | undefined, workloadKey: string, now: number): boolean {
    const a = address === undefined ? undefined : this.addresses.earned(address, now);
    const w = this.workloads.earned(workloadKey, now);
    if ((a && a.tokens < 1) || w.tokens < 1) return false;
    if (address !== undefined && a) this.addresses.take(address, a);
    this.workloads.take(workloadKey, w);
    return true;
  }
}

/** Token buckets by key, at most `max` of them (Map order is recency: the oldest is forgotten). */
class BoundedBuckets {
  private readonly buckets = new Map<string, BucketState>();

  constructor(
    private readonly rate: RateLimit,
    private readonly max: number,
  ) {}

  earned(key: string, now: number): BucketState {
    return refill(this.buckets.get(key), this.rate, now);
  }

  take(key: string, earned: BucketState): void {
    this.buckets.delete(key);
    this.buckets.set(key, { tokens: earned.tokens - 1, at: earned.at });
    if (this.buckets.size > this.max) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }
}
