/**
 * The verifier of task tokens presented back to the broker (renew, end, introspect, revoke):
 * every RFC 8725 / RFC 9068 §4 check refuses on its own, and keys come from the keyring (ours,
 * then every instance's published keys, within their overlap).
 */
import { sign as nodeSign, createHash, createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryGrantStore } from '../../src/grants/memory-store.js';
import { silentLogger } from '../../src/log.js';
import { Keyring, type SigningAlg, type SigningKey } from '../../src/tokens/keyring.js';
import { signTaskToken, taskTokenClaims } from '../../src/tokens/mint.js';
import { InvalidToken } from '../../src/errors.js';
import { TokenDigests } from '../../src/tokens/token-digest.js';
import { TaskTokenVerifier } from '../../src/tokens/verify.js';

const MIN = 60_000;
const ISSUER = 'https://broker.test';
const GRANT = `g_${'a'.repeat(22)}_${'b'.repeat(22)}`;

let now = Date.UTC(2026, 10, 29, 12);
const clock = () => now;
const store = createMemoryGrantStore({ log: silentLogger });
const keyrings: Keyring[] = [];
afterEach(() => keyrings.splice(0).forEach((k) => k.stop()));

async function keyring(alg: SigningAlg = 'ES256') {
  const k = new Keyring({ alg, rotationMs: 60 * MIN, overlapMs: 20 * MIN, store, clock, log: silentLogger, jwksCacheMs: 0 });
  await k.start();
  keyrings.push(k);
  return k;
}
const digests = new TokenDigests('unit-test-key-publication-secret-0123456789');
const verifier = (k: Keyring) => new TaskTokenVerifier({ issuer: ISSUER, leewayMs: 30_000, clock, keys: k, digests });
const claims = (over: Record<string, unknown> = {}) => ({
  ...taskTokenClaims({
    issuer: ISSUER,
    workloadId: 'spiffe://td/w',
    grantId: GRANT,
    jti: 'jti-1',
    intent: { audience: 'api', actions: ['read'], resources: [], purpose: 'p', task: 't' },
    issuedAt: now,
    expiresAt: now + 5 * MIN,
  }),
  ...over,
});
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
/** Signs any header and payload with the key, as a forger holding it would. */
function forge(key: SigningKey, header: Record<string, unknown>, payload: unknown): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = key.alg === 'ES256' ? nodeSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' }) : nodeSign(null, Buffer.from(input), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

describe('TaskTokenVerifier', () => {
  it('accepts a task token this keyring signed (ES256, EdDSA and RS256)', async () => {
    for (const alg of ['ES256', 'EdDSA', 'RS256'] as const) {
      const k = await keyring(alg);
      const token = signTaskToken(claims(), k.signingKey());
      await expect(verifier(k).verify(token)).resolves.toMatchObject({ grant: GRANT, sub: 'spiffe://td/w', jti: 'jti-1' });
    }
  });

  it('accepts a token of another instance whose key is published, and not once its overlap is over', async () => {
    const a = await keyring();
    const b = await keyring();
    const token = signTaskToken(claims(), a.signingKey());
    await expect(verifier(b).verify(token)).resolves.toBeTruthy();
    a.stop();
    now += 60 * MIN + 20 * MIN + 1; // a's first key: retired at +60m, gone from the JWKS at +80m
    const late = new TaskTokenVerifier({ issuer: ISSUER, leewayMs: 30_000, clock, keys: b });
    await expect(late.verify(token)).rejects.toThrow(/unknown key/);
  });

  it('remembers a verified token, and still applies the time rules to it on every use', async () => {
    const k = await keyring();
    const v = verifier(k);
    const token = signTaskToken(claims(), k.signingKey());
    const first = await v.verify(token);
    expect(await v.verify(token)).toBe(first); // the same object: no second signature check
    const saved = now;
    now += 5 * MIN + 31_000; // past exp + leeway
    await expect(v.verify(token)).rejects.toThrow(/expired/);
    now = saved;
    // A tampered copy is another string: verified on its own, and refused.
    const flipped = `${token.slice(0, -10)}${token.at(-10) === 'A' ? 'B' : 'A'}${token.slice(-9)}`;
    await expect(v.verify(flipped)).rejects.toThrow(/signature/);
  });

  it('refuses each failed check with invalid_token, naming it', async () => {
    const { k, cases, header, key } = await failedChecks();
    for (const [what, token, message] of cases) {
      const result = verifier(k).verify(token);
      await expect(result, what).rejects.toBeInstanceOf(InvalidToken);
      await expect(result, what).rejects.toThrow(message);
    }
    // Within the leeway is fine.
    await expect(verifier(k).verify(forge(key, header, claims({ exp: Math.floor(now / 1000) - 10 })))).resolves.toBeTruthy();
  });

  it('skips only the signature check for the token a grant record vouches for (its keyed digest)', async () => {
    const k = await keyring();
    const token = signTaskToken(claims(), k.signingKey());
    const [h, p] = token.split('.');
    // Bytes the record vouches for are not checked against the signature: a broken one shows it.
    const unsigned = `${h}.${p}.${'A'.repeat(86)}`;
    await expect(verifier(k).verify(unsigned, digests.of(unsigned))).resolves.toMatchObject({ grant: GRANT, jti: 'jti-1' });
    // Anything but that token's keyed digest verifies the signature, and refuses.
    const refusals: [string, string | undefined][] = [
      ['no digest', undefined],
      ['another token\'s digest', digests.of(token)],
      ['a digest under another key', new TokenDigests('another-key-publication-secret-0123456789').of(unsigned)],
      ['a plain SHA-256', createHash('sha256').update(unsigned).digest().subarray(0, 16).toString('base64url')],
      ['not a digest', 'x'],
      ['a longer digest', `${digests.of(unsigned)}A`],
    ];
    for (const [what, recorded] of refusals) await expect(verifier(k).verify(unsigned, recorded), what).rejects.toThrow(/signature does not verify/);
    // A verifier without digests never skips the signature.
    await expect(new TaskTokenVerifier({ issuer: ISSUER, leewayMs: 30_000, clock, keys: k }).verify(unsigned, digests.of(unsigned))).rejects.toThrow(/signature/);
  });

  it('refuses a vouched-for token on every other check, with the same message', async () => {
    const { k, cases } = await failedChecks();
    for (const [what, token, message] of cases) {
      // The signature is what the digest stands in for: those cases pass it by design.
      if (/signature/.test(String(message))) continue;
      const result = verifier(k).verify(token, digests.of(token));
      await expect(result, what).rejects.toBeInstanceOf(InvalidToken);
      await expect(result, what).rejects.toThrow(message);
    }
    // The key still trusted: once revoked, the token it signed is refused however vouched for.
    const token = signTaskToken(claims(), k.signingKey());
    await expect(verifier(k).verify(token, digests.of(token))).resolves.toBeTruthy();
    k.revoke(k.signingKey().kid);
    await expect(verifier(k).verify(token, digests.of(token))).rejects.toThrow(/unknown key/);
  });
});

/** A token for each check the verifier makes, with the message refusing it. */
async function failedChecks() {
  const k = await keyring();
  const key = k.signingKey();
  const header = { alg: 'ES256', kid: key.kid, typ: 'at+jwt' };
  const good = forge(key, header, claims());
  const [h, p] = good.split('.');
  const hmac = (input: string) => createHmac('sha256', JSON.stringify(key.publicJwk)).update(input).digest('base64url');
  const hs = `${b64({ ...header, alg: 'HS256' })}.${p}`;
  const cases: [string, string, RegExp][] = [
    ['alg none', `${b64({ ...header, alg: 'none' })}.${p}.`, /accepted algorithm/],
    ['HS256 keyed with the public key', `${hs}.${hmac(hs)}`, /accepted algorithm/],
    ['typ JWT', forge(key, { ...header, typ: 'JWT' }, claims()), /typ must be at\+jwt/],
    ['no typ', forge(key, { alg: 'ES256', kid: key.kid }, claims()), /typ must be at\+jwt/],
    ['no kid', forge(key, { alg: 'ES256', typ: 'at+jwt' }, claims()), /names no signing key/],
    ['unknown kid', forge(key, { ...header, kid: 'nope' }, claims()), /unknown key/],
    ['alg differs from the key', forge(key, { ...header, alg: 'EdDSA' }, claims()), /algorithm differs/],
    ['crit', forge(key, { ...header, crit: ['exp'] }, claims()), /critical/],
    ['signature over other claims', `${h}.${b64(claims({ sub: 'spiffe://td/admin' }))}.${good.split('.')[2]}`, /signature/],
    ['short signature', `${h}.${p}.${'A'.repeat(10)}`, /signature/],
    ['other issuer', forge(key, header, claims({ iss: 'https://evil.test' })), /another issuer/],
    ['expired beyond the leeway', forge(key, header, claims({ exp: Math.floor(now / 1000) - 31 })), /expired/],
    ['not yet valid', forge(key, header, claims({ nbf: Math.floor(now / 1000) + 60 })), /not valid yet/],
    ['issued in the future', forge(key, header, claims({ iat: Math.floor(now / 1000) + 60 })), /not valid yet/],
    ['no grant claim', forge(key, header, claims({ grant: undefined })), /task-token claims/],
    ['a grant that is no grant id', forge(key, header, claims({ grant: 'g_x' })), /does not name a grant/],
    ['JSON that is no object', forge(key, header, [1, 2]), /task-token claims/],
    ['two parts', `${h}.${p}`, /compact JWS/],
    ['JWE-like five parts', `${h}.${p}.a.b.c`, /compact JWS/],
    ['too long', 'a'.repeat(20_000), /too long/],
  ];
  return { k, key, header, cases };
}
