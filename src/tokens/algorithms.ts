import { generateKeyPair, sign, verify, type KeyObject, type SignKeyObjectInput } from 'node:crypto';
import { promisify } from 'node:util';

/**
 * The algorithms task tokens are signed with (config tokens.algorithm), and how node:crypto does
 * each. ES256 is the default (small keys and signatures, fast); RS256 is there because RFC 9068
 * §2.1 says every JWT access-token server MUST support it; EdDSA is the fastest to verify.
 */
export const SIGNING_ALGS = ['ES256', 'EdDSA', 'RS256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

/** RSA keys are 2048 bits (RFC 7518 §3.3: at least that). */
const RSA_BITS = 2048;

const generate = promisify(generateKeyPair) as (
  type: 'ec' | 'ed25519' | 'rsa',
  options?: { namedCurve?: string; modulusLength?: number },
) => Promise<{ privateKey: KeyObject; publicKey: KeyObject }>;

/** A new key pair for `alg`. */
export function generateSigningKeyPair(alg: SigningAlg): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  if (alg === 'EdDSA') return generate('ed25519');
  if (alg === 'RS256') return generate('rsa', { modulusLength: RSA_BITS });
  return generate('ec', { namedCurve: 'P-256' });
}

/** The digest node:crypto's sign/verify take for `alg` (EdDSA hashes internally). */
const digestOf = (alg: SigningAlg): string | null => (alg === 'EdDSA' ? null : 'sha256');

/** The key as node:crypto signs with it: ES256 signatures are the raw r||s JWS requires (RFC 7518 §3.4), not DER. */
const signingKey = (alg: SigningAlg, key: KeyObject): KeyObject | SignKeyObjectInput =>
  alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key;

/** Signs `data` (the JWS signing input) for the JWS signature of `alg`; with `callback`, on libuv's thread pool. */
export function signJws(alg: SigningAlg, data: Buffer, key: KeyObject): Buffer;
export function signJws(alg: SigningAlg, data: Buffer, key: KeyObject, callback: (err: Error | null, signature: Buffer) => void): void;
export function signJws(alg: SigningAlg, data: Buffer, key: KeyObject, callback?: (err: Error | null, signature: Buffer) => void): Buffer | void {
  if (callback) return sign(digestOf(alg), data, signingKey(alg, key), callback);
  return sign(digestOf(alg), data, signingKey(alg, key));
}

/** Whether `signature` is a JWS signature of `alg` over `data` by `key`. */
export function verifyJws(alg: SigningAlg, data: Buffer, key: KeyObject, signature: Buffer): boolean {
  if (alg === 'ES256') return signature.length === 64 && verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  return verify(digestOf(alg), data, key, signature);
}

/** The key type `alg` needs: a published JWK of another type is not one of ours. */
export function keyFitsAlg(key: KeyObject, alg: SigningAlg): boolean {
  if (alg === 'ES256') return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  if (alg === 'EdDSA') return key.asymmetricKeyType === 'ed25519';
  return key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= RSA_BITS;
}

export const isSigningAlg = (value: unknown): value is SigningAlg => (SIGNING_ALGS as readonly unknown[]).includes(value);
