import { isIPv4, isIPv6 } from 'node:net';
import { LimitExceeded } from '../errors.js';
import { refill, waitForToken, type BucketState, type RateLimit } from '../util/token-bucket.js';

export interface AddressLimiterOptions extends RateLimit {
  /** Addresses tracked at most; beyond it the least recently failed is forgotten. */
  maxAddresses: number;
  /** IPv6 addresses count per prefix of this length (64: one host holds a /64). */
  ipv6PrefixBits?: number;
}

/** What the caller reports once the attempt is over. */
export type Settle = (failed: boolean) => void;

/**
 * Limits failed authentications per source address (evidence that does not attest, task tokens
 * and client credentials that do not verify), so nobody can scan tokens or burn the broker's
 * CPU on signature checks from one address. Only failures count: an address without recent
 * failures has no bucket and passes freely, whatever its concurrency.
 *
 * Once an address has spent half its budget, each attempt from it reserves a token before
 * verification and gets it back on success, so concurrent attempts cannot overrun what is left;
 * before that, only attempts already in flight when it crosses half can exceed the limit. (A
 * busy caller with a stray failure is thus never held to a concurrency cap.) Per instance, in
 * memory, bounded.
 */
export class AddressLimiter {
  private readonly buckets = new Map<string, BucketState>();
  private readonly prefixBits: number;

  constructor(private readonly opts: AddressLimiterOptions) {
    this.prefixBits = opts.ipv6PrefixBits ?? 64;
  }

  /** Admits one attempt, or throws LimitExceeded (429) when the address has no failures left. */
  admit(address: string | undefined, now: number): Settle {
    if (address === undefined) return () => undefined;
    const key = addressKey(address, this.prefixBits);
    const state = this.buckets.get(key);
    const earned = state && refill(state, this.opts, now);
    if (earned && earned.tokens < 1) {
      const wait = waitForToken(earned, this.opts);
      throw new LimitExceeded('too many failed authentication attempts from this address; retry later', {
        detail: `address ${address} is over its failed-authentication limit`,
        retryAfter: Math.max(1, Math.ceil(wait / 1000)),
      });
    }
    if (earned && earned.tokens >= this.opts.burst) this.buckets.delete(key); // clean again
    if (!earned || earned.tokens > this.opts.burst / 2) return (failed) => failed && this.spend(key, now);
    const reserved = { tokens: earned.tokens - 1, at: earned.at };
    this.buckets.set(key, reserved);
    return (failed) => {
      if (failed) return this.touch(key);
      // Give the token back only to the bucket it came from (not one made after an eviction).
      if (this.buckets.get(key) !== reserved) return;
      const back = refill(reserved, this.opts, now);
      this.buckets.set(key, { tokens: Math.min(this.opts.burst, back.tokens + 1), at: back.at });
    };
  }

  /** A failure that reserved nothing: take a token now (never below zero). */
  private spend(key: string, now: number): void {
    const earned = refill(this.buckets.get(key), this.opts, now);
    this.buckets.set(key, { tokens: Math.max(0, earned.tokens - 1), at: earned.at });
    this.touch(key);
  }

  /** Marks the address as the most recently failed (Map order is insertion order), then bounds the map. */
  private touch(key: string): void {
    const state = this.buckets.get(key);
    if (!state) return;
    this.buckets.delete(key);
    this.buckets.set(key, state);
    if (this.buckets.size > this.opts.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}

/**
 * The limiter's key: an IPv4 address as is (also IPv4-mapped IPv6), an IPv6 address by its
 * first `prefixBits` bits (`2001:db8:1:2::/64`).
 */
export function addressKey(address: string, prefixBits = 64): string {
  const bare = address.split('%')[0]!;
  if (!isIPv6(bare)) return address;
  const groups = ipv6Groups(bare);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
  const masked = groups.map((g, i) => {
    const keep = Math.max(0, Math.min(16, prefixBits - 16 * i));
    return keep === 0 ? 0 : g & (0xffff << (16 - keep)) & 0xffff;
  });
  return `${masked.map((g) => g.toString(16)).join(':')}/${prefixBits}`;
}

/** The eight 16-bit groups of a valid IPv6 address (a dotted IPv4 tail is two groups). */
function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted && isIPv4(dotted[1]!)) {
    const [a, b, c, d] = dotted[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const left = parse(head);
  const right = parse(tail ?? '');
  return tail === undefined ? left : [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
}
