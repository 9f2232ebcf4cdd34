import { isIPv6 } from 'node:net';
import { LimitExceeded } from '../errors.js';
import { refill, type BucketState, type RateLimit } from '../util/token-bucket.js';

export interface AddressLimiterOptions extends RateLimit {
  /** Addresses tracked at most; beyond it the least recently failed is forgotten. */
  maxAddresses: number;
}

/** What the caller reports once the attempt is over. */
export type Settle = (failed: boolean) => void;

/**
 * Limits failed authentications per source address (evidence that does not attest, task tokens
 * and client credentials that do not verify), so nobody can scan tokens or burn the broker's
 * CPU on signature checks from one address. Only failures count, so a well-behaved caller is
 * never slowed: an address without recent failures has no bucket and passes freely. Once an
 * address has failed, each attempt from it reserves a token before verification and gets it back
 * on success, so concurrent attempts cannot overrun the limit. Per instance, in memory, bounded;
 * IPv6 addresses count per /64 (one host holds a whole /64).
 */
export class AddressLimiter {
  private readonly buckets = new Map<string, BucketState>();

  constructor(private readonly opts: AddressLimiterOptions) {}

  /** Admits one attempt, or throws LimitExceeded (429) when the address has no failures left. */
  admit(address: string | undefined, now: number): Settle {
    if (address === undefined) return () => undefined;
    const key = addressKey(address);
    const state = this.buckets.get(key);
    if (!state) return (failed) => failed && this.failedOnce(key, now);
    const earned = refill(state, this.opts, now);
    if (earned.tokens < 1) {
      const wait = Math.ceil((1 - earned.tokens) * this.opts.intervalMs);
      throw new LimitExceeded('too many failed authentication attempts from this address; retry later', {
        detail: `address ${address} is over its failed-authentication limit`,
        retryAfter: Math.max(1, Math.ceil(wait / 1000)),
      });
    }
    this.buckets.set(key, { tokens: earned.tokens - 1, at: earned.at });
    return (failed) => {
      if (failed) return;
      const b = this.buckets.get(key);
      if (!b) return;
      const back = refill(b, this.opts, now);
      if (back.tokens + 1 >= this.opts.burst) this.buckets.delete(key); // clean again
      else this.buckets.set(key, { tokens: back.tokens + 1, at: back.at });
    };
  }

  /** A failure that reserved nothing (the address had no bucket when it was admitted). */
  private failedOnce(key: string, now: number): void {
    const earned = refill(this.buckets.get(key), this.opts, now);
    // Map order is insertion order: re-insert so the oldest entry is the least recently failed.
    this.buckets.delete(key);
    this.buckets.set(key, { tokens: Math.max(0, earned.tokens - 1), at: earned.at });
    if (this.buckets.size > this.opts.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}

/** The limiter's key: an IPv4 address as is (also IPv4-mapped IPv6), an IPv6 address by its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const bare = address.split('%')[0]!;
  if (!isIPv6(bare)) return address;
  const [head, tail] = bare.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
