import { createHmac, timingSafeEqual } from 'node:crypto';
import type { PublishedKey, RevokedKey } from './store.js';

/**
 * Published signing keys are authenticated with a secret the broker instances share outside
 * Redis (config `tokens.key_publication_secret`, env JIT_KEY_PUBLICATION_SECRET): write access to
 * Redis alone must never add a key that brokers trust (DESIGN.md "Redis data model").
 *
 * The MAC is HMAC-SHA256 over a domain label and the canonical JSON of the whole entry (kid, the
 * public JWK with its alg, created_at, retire_at, expires_at): changing any member, adding one
 * to the JWK, or moving a key's times invalidates it.
 */
const LABEL = 'jit-broker published signing key v1\n';

/** The shortest secret config accepts (`openssl rand -hex 32` gives 64 characters). */
export const MIN_PUBLICATION_SECRET_LENGTH = 32;

/**
 * JSON with object members sorted by name at every level (arrays keep their order): one encoding
 * for one value, whatever order its members were written or parsed in. Published keys hold only
 * strings, integers, arrays and objects.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const members = Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value);
}

const mac = (key: PublishedKey, secret: string): Buffer =>
  createHmac('sha256', secret)
    .update(LABEL + canonicalJson({ kid: key.kid, jwk: key.jwk, created_at: key.created_at, retire_at: key.retire_at, expires_at: key.expires_at }))
    .digest();

/** The MAC this instance stores with a key it publishes (base64url), under its first secret. */
export function publishedKeyMac(key: PublishedKey, secrets: readonly string[]): string {
  return mac(key, secrets[0]!).toString('base64url');
}

/** Whether `presented` is the MAC of `key` under any of the secrets (constant-time per secret). */
export function isAuthenticKey(key: PublishedKey, presented: unknown, secrets: readonly string[]): boolean {
  if (typeof presented !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(presented)) return false;
  const given = Buffer.from(presented, 'base64url');
  let ok = false;
  for (const secret of secrets) ok = timingSafeEqual(mac(key, secret), given) || ok;
  return ok;
}

/** Refuses a store without a secret to authenticate keys with (fails closed at construction). */
export function checkPublicationSecrets(secrets: readonly string[] | undefined): readonly string[] {
  if (!secrets || secrets.length === 0 || secrets.some((s) => typeof s !== 'string' || s.length < MIN_PUBLICATION_SECRET_LENGTH)) {
    throw new Error(
      `the Redis grant store needs a key publication secret of at least ${MIN_PUBLICATION_SECRET_LENGTH} characters ` +
        '(tokens.key_publication_secret or JIT_KEY_PUBLICATION_SECRET), shared by every broker instance and kept out of Redis',
    );
  }
  return [...secrets];
}

/**
 * Revocation marks of signing keys are authenticated the same way, under their own label: write
 * access to Redis alone can neither forge a mark nor move one to another key or time.
 */
const REVOKED_LABEL = 'jit-broker revoked signing key v1\n';

const revokedMac = (mark: RevokedKey, secret: string): Buffer =>
  createHmac('sha256', secret)
    .update(REVOKED_LABEL + canonicalJson({ kid: mark.kid, revoked_at: mark.revoked_at, by: mark.by, until: mark.until }))
    .digest();

export function revokedKeyMac(mark: RevokedKey, secrets: readonly string[]): string {
  return revokedMac(mark, secrets[0]!).toString('base64url');
}

export function isAuthenticRevocation(mark: RevokedKey, presented: unknown, secrets: readonly string[]): boolean {
  if (typeof presented !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(presented)) return false;
  const given = Buffer.from(presented, 'base64url');
  let ok = false;
  for (const secret of secrets) ok = timingSafeEqual(revokedMac(mark, secret), given) || ok;
  return ok;
}
