/** The per-address limit on failed authentications: exact, bounded, IPv6 by /64. */
import { describe, expect, it } from 'vitest';
import { AddressLimiter, addressKey } from '../../src/limits/address-limiter.js';

describe('AddressLimiter', () => {
  const fail = (l: AddressLimiter, address: string, t: number) => l.admit(address, t)(true);

  it('refuses an address after `burst` failures until a token is earned; success never counts', () => {
    const limiter = new AddressLimiter({ burst: 3, intervalMs: 10_000, maxAddresses: 100 });
    const t = 1_000_000;
    for (let i = 0; i < 10; i++) limiter.admit('10.0.0.1', t)(false);
    expect(limiter.size).toBe(0); // a clean address keeps nothing
    for (let i = 0; i < 3; i++) fail(limiter, '10.0.0.1', t);
    expect(() => limiter.admit('10.0.0.1', t)).toThrow(expect.objectContaining({ status: 429, retryAfter: 10 }));
    expect(() => limiter.admit('10.0.0.2', t)).not.toThrow();
    expect(() => limiter.admit('10.0.0.1', t + 9_999)).toThrow();
    // One token earned: one attempt; its success gives the token back.
    limiter.admit('10.0.0.1', t + 10_000)(false);
    fail(limiter, '10.0.0.1', t + 10_000);
    expect(() => limiter.admit('10.0.0.1', t + 10_000)).toThrow();
    // Refilled to full, the address is clean again.
    limiter.admit('10.0.0.1', t + 1_000_000)(false);
    expect(limiter.size).toBe(0);
    expect(() => limiter.admit(undefined, t)).not.toThrow();
  });

  it('holds exactly under concurrency once half the budget is spent: each attempt reserves first', () => {
    const limiter = new AddressLimiter({ burst: 6, intervalMs: 3_600_000, maxAddresses: 100 });
    for (let i = 0; i < 3; i++) fail(limiter, '10.0.0.1', 0); // 3 left: half spent
    const admitted: ((failed: boolean) => void)[] = [];
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      try {
        admitted.push(limiter.admit('10.0.0.1', 0));
      } catch {
        refused++;
      }
    }
    expect({ admitted: admitted.length, refused }).toEqual({ admitted: 3, refused: 97 });
    for (const settle of admitted) settle(true);
    expect(() => limiter.admit('10.0.0.1', 0)).toThrow();
  });

  it('does not cap a busy caller with a stray failure, and gives back what successes reserved', () => {
    const limiter = new AddressLimiter({ burst: 20, intervalMs: 6_000, maxAddresses: 100 });
    fail(limiter, '10.0.0.1', 0);
    const inFlight = Array.from({ length: 200 }, () => limiter.admit('10.0.0.1', 0));
    inFlight.forEach((settle) => settle(false));
    // Half spent: reservations; successes return theirs, so the budget stays as it was.
    for (let i = 0; i < 10; i++) fail(limiter, '10.0.0.1', 0);
    for (let i = 0; i < 5; i++) limiter.admit('10.0.0.1', 0)(false);
    const left = Array.from({ length: 9 }, () => limiter.admit('10.0.0.1', 0));
    expect(() => limiter.admit('10.0.0.1', 0)).toThrow();
    left.forEach((settle) => settle(false));
    expect(() => limiter.admit('10.0.0.1', 0)).not.toThrow();
  });

  it('gives a reserved token back only to the bucket it came from', () => {
    const limiter = new AddressLimiter({ burst: 4, intervalMs: 3_600_000, maxAddresses: 100 });
    for (let i = 0; i < 2; i++) fail(limiter, '10.0.0.1', 0); // 2 left (half): reserving from now on
    const settle = limiter.admit('10.0.0.1', 0); // 1 left
    for (let i = 0; i < 200; i++) fail(limiter, `10.9.${i >> 8}.${i & 255}`, 0); // evicts 10.0.0.1
    for (let i = 0; i < 3; i++) fail(limiter, '10.0.0.1', 0); // a new bucket: 1 left
    settle(false); // must not refill the new bucket to 2
    fail(limiter, '10.0.0.1', 0);
    expect(() => limiter.admit('10.0.0.1', 0)).toThrow();
  });

  it('counts IPv6 addresses per prefix (default /64) and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2:0:0:0:0/64');
    expect(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2:0:0:0:0/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0:0:0:0:0/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0:0:0:0:0/64');
    expect(addressKey('1::2:3:4:5:1.2.3.4')).toBe('1:0:2:3:0:0:0:0/64');
    expect(addressKey('::')).toBe('0:0:0:0:0:0:0:0/64');
    expect(addressKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('::ffff:a01:203')).toBe('10.1.2.3');
    expect(addressKey('10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('fd00::a:1', 128)).toBe('fd00:0:0:0:0:0:a:1/128');
    expect(addressKey('fd00::a:1', 104)).toBe('fd00:0:0:0:0:0:0:0/104');
    expect(addressKey('2001:db8:abcd:12ff::1', 56)).toBe('2001:db8:abcd:1200:0:0:0:0/56');
    const limiter = new AddressLimiter({ burst: 1, intervalMs: 60_000, maxAddresses: 100 });
    fail(limiter, '2001:db8:1:2::1', 0);
    expect(() => limiter.admit('2001:db8:1:2::99', 0)).toThrow();
    expect(() => limiter.admit('2001:db8:1:3::1', 0)).not.toThrow();
    const perHost = new AddressLimiter({ burst: 1, intervalMs: 60_000, maxAddresses: 100, ipv6PrefixBits: 128 });
    fail(perHost, 'fd00::a:1', 0);
    expect(() => perHost.admit('fd00::a:1', 0)).toThrow();
    expect(() => perHost.admit('fd00::b:2', 0)).not.toThrow();
  });

  it('stays bounded: beyond maxAddresses the least recently failed address is forgotten', () => {
    const limiter = new AddressLimiter({ burst: 1, intervalMs: 60_000, maxAddresses: 100 });
    for (let i = 0; i < 1000; i++) fail(limiter, `10.0.${i >> 8}.${i & 255}`, 0);
    expect(limiter.size).toBe(100);
    expect(() => limiter.admit('10.0.0.0', 0)).not.toThrow(); // forgotten
    expect(() => limiter.admit('10.0.3.231', 0)).toThrow(); // the latest is remembered
  });
});
