import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { createMemoryGrantStore } from '../../src/grants/memory-store.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { freePort } from '../../src/util/net.js';
import { startRedisServer, TEST_KEY_PUBLICATION_SECRETS } from '../helpers/redis.js';
import { silentLogger } from '../../src/log.js';
import { Keyring, KEY_PUBLICATION_LEAD_MS, MAX_PUBLISHED_KEYS, type SigningAlg } from '../../src/tokens/keyring.js';
import { signTaskToken, taskTokenClaims } from '../../src/tokens/mint.js';

const MIN = 60_000;
const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;

function setup(alg: SigningAlg = 'ES256') {
  let now = Date.UTC(2026, 10, 28, 12);
  const clock = () => now;
  const store = createMemoryGrantStore({ log: silentLogger });
  const make = () => new Keyring({ alg, rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 0 });
  return { store, make, advance: (ms: number) => (now += ms), clock };
}

function sign(keyring: Keyring, now: number): string {
  const claims = taskTokenClaims({
    issuer: 'http://broker.test',
    workloadId: 'spiffe://td/w',
    grantId: 'g_0000000000000000000000_0000000000000000000000',
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
    await k['maintain'](); // joins the background run that publishes the new next key
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
    const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: `redis://127.0.0.1:${await freePort()}`, commandTimeoutMs: 200, log: silentLogger });
    const k = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock: Date.now, log: silentLogger });
    await k.start();
    expect(k.notReady()).toMatch(/not published/);
    expect(() => k.signingKey()).toThrow(expect.objectContaining({ status: 503, code: 'temporarily_unavailable' }));
    k.stop();
    await store.close();
  });

  it('a rotation driven by the maintenance timer makes exactly one new next key', async () => {
    const { make, advance, store, clock } = setup();
    const k = make();
    await k.start();
    for (let i = 0; i < 3; i++) {
      advance(61 * MIN);
      await k['maintain'](); // what the timer does when the current key is due
    }
    // current + next + retired ones still within the 20 min overlap (only the latest one).
    const published = await store.publishedKeys(clock());
    expect(published).toHaveLength(3);
    expect(published.map((p) => p.kid)).toContain(k.signingKey().kid);
    k.stop();
  });

  it('keeps its own keys in the JWKS even when the store lost them', async () => {
    const server = await startRedisServer();
    const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: server.url, commandTimeoutMs: 500, log: silentLogger });
    const k = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock: Date.now, log: silentLogger, jwksCacheMs: 0 });
    try {
      await k.start();
      const kid = k.signingKey().kid;
      await server.restart(); // data is not kept: the published keys are gone
      for (let i = 0; i < 50 && !(await store.ping().then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
      expect(await store.publishedKeys(Date.now())).toEqual([]);
      expect((await k.jwks()).keys.map((j) => j.kid)).toContain(kid);
    } finally {
      k.stop();
      await store.close();
      await server.stop();
    }
  });

  it('serves every unexpired key of many instances: no live token loses its key', async () => {
    const { make, advance, clock } = setup();
    const rings = Array.from({ length: 12 }, () => make());
    for (const r of rings) await r.start();
    const tokens: Array<{ token: string; at: number }> = [];
    for (let round = 0; round < 3; round++) {
      for (const r of rings) tokens.push({ token: sign(r, clock()), at: clock() });
      advance(61 * MIN); // every instance rotates; the keys that signed above are now retired
      for (const r of rings) r.signingKey();
      await Promise.all(rings.map((r) => r['maintain']())); // the new next keys are published
    }
    const jwks = createLocalJWKSet(await rings[0]!.jwks());
    // Tokens of the last round are within the overlap: each must verify with the served JWKS.
    for (const { token, at } of tokens.slice(-rings.length)) {
      await expect(jwtVerify(token, jwks, { currentDate: new Date(at + MIN) })).resolves.toBeTruthy();
    }
    for (const r of rings) r.stop();
  });

  it('fails closed instead of exceeding the published-key cap', async () => {
    const { make } = setup();
    const rings = Array.from({ length: MAX_PUBLISHED_KEYS / 2 }, () => make());
    for (const r of rings) await r.start();
    for (const r of rings) expect(r.notReady()).toBeUndefined();
    const extra = make();
    await extra.start();
    expect(extra.notReady()).toMatch(/signing keys are published already \(cap 64\)/);
    expect(() => extra.signingKey()).toThrow(expect.objectContaining({ status: 503 }));
    for (const r of [...rings, extra]) r.stop();
  });

  it('with Redis down: stops signing once rotation is overdue, and keeps serving the last known JWKS', async () => {
    const server = await startRedisServer();
    let now = Date.UTC(2026, 10, 28, 12);
    const clock = () => now;
    const store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: server.url, commandTimeoutMs: 200, log: silentLogger });
    const other = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 0 });
    const k = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 0 });
    try {
      await other.start();
      await k.start();
      const union = await k.jwks();
      expect(union.keys).toHaveLength(4);
      await server.stop();

      // The JWKS stays whole while the store cannot answer.
      const during = await k.jwks();
      expect(during.keys.map((j) => j.kid).sort()).toEqual(union.keys.map((j) => j.kid).sort());

      // The next key was published at start, so the first rotation still works ...
      now += 61 * MIN;
      expect(() => k.signingKey()).not.toThrow();
      await k['maintain'](); // the new next key's publication fails (Redis is down)
      // ... but the one after has no published successor: past retire time, never sign.
      now += 60 * MIN;
      expect(() => k.signingKey()).toThrow(expect.objectContaining({ status: 503, detail: expect.stringMatching(/rotation pending/) }));

      // The outage outlasts many rotations: the keys made before it are all past retiring.
      now += 20 * 60 * MIN;
      await server.restart();
      for (let i = 0; i < 50 && !(await store.ping().then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
      await k['maintain'](); // one run of the timer: a fresh next key, published, rotated onto
      expect(() => k.signingKey()).not.toThrow();
      const key = k.signingKey();
      expect(key.retireAt).toBeGreaterThan(now);
      expect((await store.publishedKeys(now)).map((p) => p.kid)).toContain(key.kid);
    } finally {
      k.stop();
      other.stop();
      await store.close();
      await server.stop();
    }
  });
});

describe('revoked signing keys (issue 13: the kill switch by key id)', () => {
  it('the holder stops signing with a revoked key at once; no instance accepts or serves it again, even if the mark vanishes', async () => {
    const redis = await startRedisServer();
    let now = Date.now();
    const clock = () => now;
    const stores = [0, 1].map(() => createRedisGrantStore({ url: redis.url, keyPrefix: 'kr:', keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger }));
    const [holder, other] = stores.map((store) => new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 1000 }));
    try {
      await holder!.start();
      await other!.start();
      const kid = holder!.signingKey().kid;
      expect(await other!.verificationKey(kid)).toBeDefined();

      // Revoked on another instance: the authenticated mark in the store tells every broker.
      await stores[1]!.revokeKey({ kid, revoked_at: now, by: 'root', until: now + 60 * MIN });
      other!.revoke(kid);
      expect(await other!.verificationKey(kid)).toBeUndefined();
      // The holder learns it once its JWKS cache (1 s here) runs out, and moves to its next key.
      now += 1001;
      expect(await holder!.verificationKey(kid)).toBeUndefined();
      expect(holder!.signingKey().kid).not.toBe(kid);
      expect((await holder!.jwks()).keys.map((k) => k.kid)).not.toContain(kid);

      // A mark that no secret authenticates revokes nothing.
      const raw = stores[0]!.redis;
      const victim = other!.signingKey().kid;
      await raw.hset('kr:keys:revoked', victim, JSON.stringify({ kid: victim, revoked_at: now, by: 'mallory', until: now + 60 * MIN, mac: 'A'.repeat(43) }));
      now += 1001;
      expect(await holder!.verificationKey(victim)).toBeDefined();
      expect(other!.signingKey().kid).toBe(victim);

      // Deleting the mark (Redis write access) does not un-revoke the key on brokers that saw it.
      await raw.hdel('kr:keys:revoked', kid);
      now += 1001;
      expect(await holder!.verificationKey(kid)).toBeUndefined();
      expect(await other!.verificationKey(kid)).toBeUndefined();
    } finally {
      holder?.stop();
      other?.stop();
      for (const s of stores) await s.close();
      await redis.stop();
    }
  });
});

describe('a kid this instance has not seen yet (a replica that just started or rotated)', () => {
  /** Calls of one Redis command so far (INFO commandstats of a private server). */
  async function calls(redis: { info(section: string): Promise<string> }, command: string): Promise<number> {
    const m = new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await redis.info('commandstats'));
    return m ? Number(m[1]) : 0;
  }

  it('is looked up in the store before it is refused, inside the union JWKS cache period', async () => {
    const redis = await startRedisServer();
    const now = Date.now();
    const clock = () => now; // frozen: A's 1 s union cache never runs out on its own here
    const stores = [0, 1].map(() => createRedisGrantStore({ url: redis.url, keyPrefix: 'kid:', keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger }));
    const [a, b] = stores.map((store) => new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 1000 }));
    try {
      await a!.start();
      expect((await a!.jwks()).keys).toHaveLength(2); // A's union is cached now, without B
      await b!.start();
      const kid = b!.signingKey().kid;
      const found = await a!.verificationKey(kid);
      expect(found, "A finds B's brand-new key in the store").toBeDefined();
      const token = sign(b!, now);
      await expect(jwtVerify(token, found!.key, { currentDate: new Date(now) })).resolves.toBeTruthy();
      // And A's JWKS endpoint serves it too: a verifier that met the new kid and refetched finds it.
      expect((await a!.jwks({ recent: true })).keys.map((k) => k.kid)).toContain(kid);

      // A key revoked in the store (authenticated mark) is not found by the lookup.
      const c = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store: stores[1]!, clock, log: silentLogger, jwksCacheMs: 1000 });
      await c.start();
      const revokedKid = c.signingKey().kid;
      await stores[1]!.revokeKey({ kid: revokedKid, revoked_at: now, by: 'root', until: now + 60 * MIN });
      expect(await a!.verificationKey(revokedKid)).toBeUndefined();
      c.stop();

      // A key written to Redis without the publication secret is not trusted by the lookup (past
      // the lead, so the lookup reads the store again).
      const forged = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store: createMemoryGrantStore({ log: silentLogger }), clock, log: silentLogger });
      await forged.start();
      const fk = forged.signingKey();
      await stores[0]!.redis.hset('kid:keys', fk.kid, JSON.stringify({ kid: fk.kid, jwk: fk.publicJwk, created_at: now, retire_at: now + MIN, expires_at: now + 2 * MIN, mac: 'A'.repeat(43) }));
      await new Promise((r) => setTimeout(r, KEY_PUBLICATION_LEAD_MS + 1));
      const readsBefore = await calls(stores[0]!.redis, 'hgetall');
      expect(await a!.verificationKey(fk.kid)).toBeUndefined();
      expect(await calls(stores[0]!.redis, 'hgetall'), 'the lookup read the store').toBeGreaterThan(readsBefore);
      forged.stop();
    } finally {
      a?.stop();
      b?.stop();
      for (const s of stores) await s.close();
      await redis.stop();
    }
  });

  it('two rotations in quick succession: the key signing after them is in every instance’s JWKS at once', async () => {
    const redis = await startRedisServer();
    const now = Date.now();
    const clock = () => now;
    const stores = [0, 1].map(() => createRedisGrantStore({ url: redis.url, keyPrefix: 'rot:', keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger }));
    const [a, b] = stores.map((store) => new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 1000 }));
    try {
      await a!.start();
      await b!.start();
      for (let i = 0; i < 3; i++) {
        await b!.jwks({ recent: true }); // B has just read the union
        const first = await a!.rotateNow();
        const second = await a!.rotateNow(); // onto the key the first one made and published
        expect(second.previous).toBe(first.current);
        expect(second.current).not.toBe(second.previous);
        const token = sign(a!, now);
        expect(kidOf(token)).toBe(second.current);
        expect((await b!.jwks({ recent: true })).keys.map((k) => k.kid), 'B serves the key A signs with now').toContain(second.current);
        expect(await b!.verificationKey(second.current!), 'B verifies it').toBeDefined();
      }
    } finally {
      a?.stop();
      b?.stop();
      for (const st of stores) await st.close();
      await redis.stop();
    }
  });

  it('a key revoked here leaves the JWKS at once, even when the union was read a moment before', async () => {
    const { make } = setup();
    const k = make();
    await k.start();
    const kid = k.signingKey().kid;
    expect((await k.jwks({ recent: true })).keys.map((j) => j.kid)).toContain(kid);
    k.revoke(kid);
    expect((await k.jwks({ recent: true })).keys.map((j) => j.kid)).not.toContain(kid);
    expect((await k.jwks()).keys.map((j) => j.kid)).not.toContain(kid);
    expect(await k.verificationKey(kid)).toBeUndefined();
    k.stop();
  });

  it('a flood of unknown kids costs a bounded number of store reads, never one per request', async () => {
    const redis = await startRedisServer();
    const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'flood:', keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
    const now = Date.now();
    const k = new Keyring({ alg: 'ES256', rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock: () => now, log: silentLogger, jwksCacheMs: 1000 });
    try {
      await k.start();
      await k.jwks();
      const before = await calls(store.redis, 'hgetall');
      const started = performance.now();
      // 2,000 junk kids, 200 at a time in 10 waves a lead apart: every one is refused.
      for (let wave = 0; wave < 10; wave++) {
        const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => k.verificationKey(`junk-${wave}-${i}`)));
        expect(answers.every((x) => x === undefined)).toBe(true);
        await new Promise((r) => setTimeout(r, KEY_PUBLICATION_LEAD_MS));
      }
      const elapsed = performance.now() - started;
      const reads = (await calls(store.redis, 'hgetall')) - before;
      // New union reads (3 HGETALLs each: marks, keys, marks) start more than KEY_PUBLICATION_LEAD_MS apart.
      const bound = 3 * (Math.ceil(elapsed / KEY_PUBLICATION_LEAD_MS) + 1);
      expect(reads).toBeGreaterThan(0);
      expect(reads).toBeLessThanOrEqual(bound);
      expect(reads).toBeLessThan(2000);
    } finally {
      k.stop();
      await store.close();
      await redis.stop();
    }
  });
});
