import { describe, expect, it } from 'vitest';
import { randomBase64url, randomHex } from '../../src/util/random.js';

describe('pooled random ids', () => {
  it('never repeats across many pool refills, and has the asked length and alphabet', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) seen.add(randomHex(16)); // ~80 refills of the 4 KiB pool
    expect(seen.size).toBe(20_000);
    for (const id of [...seen].slice(0, 100)) expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(randomBase64url(16)).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(randomHex(12)).toMatch(/^[0-9a-f]{24}$/);
  });

  it('draws fresh bytes for ids that straddle a refill', () => {
    // 4096 / 12 is not whole: some calls land on the boundary and must refill first.
    const ids = Array.from({ length: 2000 }, () => randomHex(12));
    expect(new Set(ids).size).toBe(ids.length);
  });
});
