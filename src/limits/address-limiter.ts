import { LimitExceeded } from '../errors.js';
import { refill, takeToken, type BucketState, type RateLimit } from '../util/token-bucket.js';

export interface AddressLimiterOptions extends RateLimit {
  /** Addresses tracked at most; beyond it the least recently failed is forgotten. */
  maxAddresses: number;
}

/**
 * Limits failed authentications per source address (evidence that does not attest, task tokens
 * and client credentials that do not verify), so nobody can scan tokens or burn the broker's
 * CPU on signature checks from one address. A request from an address whose bucket is empty is
 * refused before any verification; only failures take tokens, so a well-behaved caller is never
 * slowed. Kept in process memory (per instance, no Redis round trip on the hot path), bounded.
 */
export class AddressLimiter {
  private readonly buckets = new Map<string, BucketState>();

  constructor(private readonly opts: AddressLimiterOptions) {}

  /** Throws LimitExceeded (429) when the address has no failures left. */
  check(address: string | undefined, now: number): void {
    if (address === undefined) return;
    const state = this.buckets.get(address);
    if (!state) return;
    const earned = refill(state, this.opts, now);
    if (earned.tokens < 1) {
      const wait = Math.ceil((1 - earned.tokens) * this.opts.intervalMs);
      throw new LimitExceeded('too many failed authentication attempts from this address; retry later', {
        detail: `address ${address} is over its failed-authentication limit`,
        retryAfter: Math.max(1, Math.ceil(wait / 1000)),
      });
    }
  }

  /** Records one failure from the address. */
  failed(address: string | undefined, now: number): void {
    if (address === undefined) return;
    const state = this.buckets.get(address);
    const { state: next } = takeToken(state, this.opts, now);
    // Map order is insertion order: re-insert so the oldest entry is the least recently failed.
    this.buckets.delete(address);
    this.buckets.set(address, next ?? refill(state, this.opts, now));
    if (this.buckets.size > this.opts.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}
