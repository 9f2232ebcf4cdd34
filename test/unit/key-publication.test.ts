/**
 * The MAC of a published signing key (issue 11 item 5): it covers the whole entry, under either
 * configured secret, and nothing else authenticates a key.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson, checkPublicationSecrets, isAuthenticKey, publishedKeyMac } from '../../src/grants/key-publication.js';
import type { PublishedKey } from '../../src/grants/store.js';

const A = 'secret-a-0123456789abcdef0123456789abcdef';
const B = 'secret-b-0123456789abcdef0123456789abcdef';
const jwk: Record<string, unknown> = { ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'k1', alg: 'ES256', use: 'sig' };
const key: PublishedKey = { kid: 'k1', jwk, created_at: 1_000, retire_at: 2_000, expires_at: 3_000 };

describe('published key MAC', () => {
  it('authenticates the entry under the signing secret, and under either of two configured', () => {
    const mac = publishedKeyMac(key, [A, B]);
    expect(isAuthenticKey(key, mac, [A])).toBe(true);
    expect(isAuthenticKey(key, mac, [B, A])).toBe(true);
    expect(isAuthenticKey(key, mac, [B])).toBe(false);
  });

  it('does not depend on member order', () => {
    const reordered: PublishedKey = { expires_at: 3_000, retire_at: 2_000, created_at: 1_000, jwk: Object.fromEntries(Object.entries(jwk).reverse()), kid: 'k1' };
    expect(isAuthenticKey(reordered, publishedKeyMac(key, [A]), [A])).toBe(true);
    expect(canonicalJson({ b: [2, { d: 1, c: 'x' }], a: 1 })).toBe('{"a":1,"b":[2,{"c":"x","d":1}]}');
  });

  it('covers every member: kid, each JWK member (alg too), an added JWK member and each time', () => {
    const mac = publishedKeyMac(key, [A]);
    const changed: PublishedKey[] = [
      { ...key, kid: 'k2' },
      { ...key, jwk: { ...jwk, alg: 'EdDSA' } },
      { ...key, jwk: { ...jwk, x: jwk.y } },
      { ...key, jwk: { ...jwk, use: 'enc' } },
      { ...key, jwk: { ...jwk, key_ops: ['verify'] } },
      { ...key, created_at: 999 },
      { ...key, retire_at: 2_001 },
      { ...key, expires_at: 30_000 },
    ];
    for (const c of changed) expect(isAuthenticKey(c, mac, [A]), JSON.stringify(c)).toBe(false);
  });

  it('refuses anything but a MAC-shaped string', () => {
    for (const mac of [undefined, null, 1, '', 'x'.repeat(43), `${publishedKeyMac(key, [A])}=`, { mac: publishedKeyMac(key, [A]) }]) {
      expect(isAuthenticKey(key, mac, [A])).toBe(false);
    }
  });

  it('a store gets no secret or a short one: refused, without repeating it', () => {
    for (const secrets of [undefined, [], [''], ['short-secret']]) {
      expect(() => checkPublicationSecrets(secrets)).toThrow(/needs a key publication secret of at least 32 characters/);
    }
    try {
      checkPublicationSecrets(['short-secret']);
    } catch (e) {
      expect((e as Error).message).not.toContain('short-secret');
    }
    expect(checkPublicationSecrets([A, B])).toEqual([A, B]);
  });
});
