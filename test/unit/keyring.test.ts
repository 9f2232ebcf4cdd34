import { createLocalJWKSet, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { createMemoryGrantStore } from '../../src/grants/memory-store.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { freePort } from '../../src/util/net.js';
import { silentLogger } from '../../src/log.js';
import { Keyring, type SigningAlg } from '../../src/tokens/keyring.js';
import { signTaskToken, taskTokenClaims } from '../../src/tokens/mint.js';

const MIN = 60_000;

function setup(alg: SigningAlg = 'ES256') {
  let now = Date.UTC(2026, 10, 28, 12);
  const clock = () => now;
  const store = createMemoryGrantStore({ log: silentLogger });
  const make = () => new Keyring({ alg, rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 0 });
  return { store, make, advance: (ms: number) => (now += ms), clock };
}

async function sign(keyring: Keyring, now: number) {
  const claims = taskTokenClaims({
    issuer: 'http://broker.test',
    workloadId: 'spiffe://td/w',
    grantId: 'g_000000000000_00000000000000000000000000000000',
    jti: 'jti',
    intent: { audience: 'api', actions: ['read'], resources: [], purpose: 'p', task: 't' },
    issuedAt: now,
    expiresAt: now + 5 * MIN,
  });
  return signTaskToken(claims, keyring.signingKey());
}

describe('keyring', () => {
  it('publishes the current and the next key before the next is used', async () => {
    const { make } = setup();
    const k = make();
    await k.start();
    expect(k.notReady()).toBeUndefined();
    const jwks = await k.jwks();
    expect(jwks.keys).toHaveLength(2);
    const current = k.signingKey().kid;
    expect(jwks.keys.map((j) => j.kid)).toContain(current);
    for (const j of jwks.keys) expect(j.d).toBeUndefined();
    k.stop();
  });

  it('rotates on schedule; old tokens verify through the overlap, then the key leaves the JWKS', async () => {
    const { make, advance, clock } = setup();
    const k = make();
    await k.start();
    const first = k.signingKey().kid;
    const oldToken = await sign(k, clock());
    advance(61 * MIN); // past retire_at: the next (already published) key takes over
    const second = k.signingKey().kid;
    expect(second).not.toBe(first);
    await new Promise((r) => setTimeout(r, 20)); // background publish of the new next key
    const during = await k.jwks();
    expect(during.keys.map((j) => j.kid)).toEqual(expect.arrayContaining([first, second]));
    await expect(jwtVerify(oldToken, createLocalJWKSet(during), { currentDate: new Date(clock() - 58 * MIN) })).resolves.toBeTruthy();
    advance(21 * MIN); // retired key's overlap is over
    const after = await k.jwks();
    expect(after.keys.map((j) => j.kid)).not.toContain(first);
    k.stop();
  });

  it('serves the union of two instances sharing one store', async () => {
    const { make, clock } = setup();
    const a = make();
    const b = make();
    await a.start();
    await b.start();
    const tokenA = await sign(a, clock());
    const tokenB = await sign(b, clock());
    const jwksFromB = createLocalJWKSet(await b.jwks());
    const jwksFromA = createLocalJWKSet(await a.jwks());
    const at = { currentDate: new Date(clock()) };
    await expect(jwtVerify(tokenA, jwksFromB, at)).resolves.toBeTruthy();
    await expect(jwtVerify(tokenB, jwksFromA, at)).resolves.toBeTruthy();
    a.stop();
    b.stop();
  });

  it('signs EdDSA when selected', async () => {
    const { make, clock } = setup('EdDSA');
    const k = make();
    await k.start();
    const token = await sign(k, clock());
    const { protectedHeader } = await jwtVerify(token, createLocalJWKSet(await k.jwks()), { algorithms: ['EdDSA'], currentDate: new Date(clock()) });
    expect(protectedHeader).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    k.stop();
  });

  it('fails closed (503) when its key could not be published', async () => {
    // A real Redis client pointed at a port where nothing listens.
    const store = createRedisGrantStore({ url: `redis://127.0.0.1:${await freePort()}`, commandTimeoutMs: 200, log: silentLogger });
    const k = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock: Date.now, log: silentLogger });
    await k.start();
    expect(k.notReady()).toMatch(/not published/);
    expect(() => k.signingKey()).toThrow(expect.objectContaining({ status: 503, code: 'temporarily_unavailable' }));
    k.stop();
    await store.close();
  });
});
