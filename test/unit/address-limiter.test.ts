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
    // One token earned: one attempt; its success gives the token back, and the bucket, full, goes.
    limiter.admit('10.0.0.1', t + 10_000)(false);
    fail(limiter, '10.0.0.1', t + 10_000);
    expect(() => limiter.admit('10.0.0.1', t + 10_000)).toThrow();
    expect(() => limiter.admit(undefined, t)).not.toThrow();
  });

  it('holds exactly under concurrency once an address has failed: each attempt reserves a token first', () => {
    const limiter = new AddressLimiter({ burst: 5, intervalMs: 3_600_000, maxAddresses: 100 });
    fail(limiter, '10.0.0.1', 0); // 4 left
    const admitted: ((failed: boolean) => void)[] = [];
    let refused = 0;
    for (let i = 0; i < 100; i++) {
      try {
        admitted.push(limiter.admit('10.0.0.1', 0));
      } catch {
        refused++;
      }
    }
    expect({ admitted: admitted.length, refused }).toEqual({ admitted: 4, refused: 96 });
    for (const settle of admitted) settle(true);
    expect(() => limiter.admit('10.0.0.1', 0)).toThrow();
  });

  it('counts IPv6 addresses per /64 and IPv4-mapped addresses as IPv4', () => {
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(addressKey('10.1.2.3')).toBe('10.1.2.3');
    const limiter = new AddressLimiter({ burst: 1, intervalMs: 60_000, maxAddresses: 100 });
    fail(limiter, '2001:db8:1:2::1', 0);
    expect(() => limiter.admit('2001:db8:1:2::99', 0)).toThrow();
    expect(() => limiter.admit('2001:db8:1:3::1', 0)).not.toThrow();
  });

  it('stays bounded: beyond maxAddresses the least recently failed address is forgotten', () => {
    const limiter = new AddressLimiter({ burst: 1, intervalMs: 60_000, maxAddresses: 100 });
    for (let i = 0; i < 1000; i++) fail(limiter, `10.0.${i >> 8}.${i & 255}`, 0);
    expect(limiter.size).toBe(100);
    expect(() => limiter.admit('10.0.0.0', 0)).not.toThrow(); // forgotten
    expect(() => limiter.admit('10.0.3.231', 0)).toThrow(); // the latest is remembered
  });
});
