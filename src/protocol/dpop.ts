import { constants, createHash, createPublicKey, verify as verifySignature, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { JoseParseError, parseCompactJws } from './jose-strict.js';

/**
 * DPoP proofs (RFC 9449): the one checker of a `DPoP` header, shared by the broker (task routes,
 * token endpoint) and the resource-server verifier. It decides everything a proof says by itself
 * (§4.3 steps 1-11 except jti tracking, which needs state: the caller records the jti once after
 * everything else about the request is checked). node:crypto only, so verify/ can ship it.
 */

/** Asymmetric algorithms only (§4.2: never `none`, never a MAC). Published as `dpop_signing_alg_values_supported`. */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const;
export type DpopAlgorithm = (typeof DPOP_ALGORITHMS)[number];
/** A proof carries a public key and a few claims: an RSA-4096 one is under 2 KiB. */
export const MAX_DPOP_PROOF_BYTES = 8192;

/**
 * Why a proof is refused: `invalid_dpop_proof` (§12.2), or `use_dpop_nonce` (§8, §9) when it
 * lacks the nonce the server issues. The message is a public sentence (never the proof).
 */
export class DpopProofError extends Error {
  override readonly name = 'DpopProofError';
  constructor(
    readonly error: 'invalid_dpop_proof' | 'use_dpop_nonce',
    message: string,
    readonly detail?: string,
  ) {
    super(message);
  }
}

export interface VerifiedProof {
  /** RFC 7638 SHA-256 thumbprint of the proof's key: the token's `cnf.jkt`. */
  jkt: string;
  jti: string;
  /** When the proof stops being acceptable (ms): its jti must be remembered until then. */
  acceptableUntil: number;
}

export interface DpopProofCheck {
  proof: string;
  /** The request's method and its public URI (query and fragment are ignored). */
  htm: string;
  htu: string;
  now: number;
  /** How far `iat` may be from now (ms), either way. */
  windowMs: number;
  /** The access token presented with the proof: its hash must be `ath`. */
  accessToken?: string;
  /** When the server issues nonces: whether a nonce is one it issued recently. */
  nonce?: (value: string) => boolean;
}

const b64u = z.string().min(1).max(1024).regex(/^[A-Za-z0-9_-]+$/);
/** The public members RFC 7638 §3.2 hashes, per key type; anything private is refused before. */
const jwkSchema = z.discriminatedUnion('kty', [
  z.looseObject({ kty: z.literal('EC'), crv: z.enum(['P-256', 'P-384', 'P-521']), x: b64u, y: b64u }),
  z.looseObject({ kty: z.literal('OKP'), crv: z.enum(['Ed25519', 'Ed448']), x: b64u }),
  z.looseObject({ kty: z.literal('RSA'), n: b64u, e: b64u }),
]);
type PublicJwk = z.infer<typeof jwkSchema>;
/** Members only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
/** Key parameters each algorithm needs (RFC 7518 §3.4, RFC 8037 §3.1, RFC 9864). */
const KEY_OF: Record<DpopAlgorithm, { kty: string; crv?: readonly string[] }> = {
  ES256: { kty: 'EC', crv: ['P-256'] },
  ES384: { kty: 'EC', crv: ['P-384'] },
  ES512: { kty: 'EC', crv: ['P-521'] },
  EdDSA: { kty: 'OKP', crv: ['Ed25519', 'Ed448'] },
  Ed25519: { kty: 'OKP', crv: ['Ed25519'] },
  RS256: { kty: 'RSA' },
  RS384: { kty: 'RSA' },
  RS512: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  PS384: { kty: 'RSA' },
  PS512: { kty: 'RSA' },
};

const claimsSchema = z.object({
  jti: z.string().min(8, 'jti must be a unique random string').max(256),
  htm: z.string().min(1).max(16),
  htu: z.string().min(1).max(2048),
  iat: z.number().int().nonnegative(),
  ath: z.string().max(128).optional(),
  nonce: z.string().max(256).optional(),
});

const invalid = (message: string, detail?: string) => new DpopProofError('invalid_dpop_proof', message, detail);

/** Checks one DPoP proof per RFC 9449 §4.3; throws DpopProofError. */
export function checkDpopProof(check: DpopProofCheck): VerifiedProof {
  const { proof } = check;
  if (proof.length > MAX_DPOP_PROOF_BYTES) throw invalid(`the DPoP proof is over ${MAX_DPOP_PROOF_BYTES} bytes`);
  let header: Record<string, unknown>;
  let payload: Record<string, unknown>;
  try {
    ({ header, payload } = parseCompactJws(proof));
  } catch (e) {
    if (e instanceof JoseParseError) throw invalid(`the DPoP proof is not a well-formed JWT: ${e.message}`);
    throw e;
  }
  if (header.typ !== 'dpop+jwt') throw invalid('the DPoP proof must have header typ "dpop+jwt"');
  const alg = DPOP_ALGORITHMS.find((a) => a === header.alg);
  if (!alg) throw invalid(`the DPoP proof's alg must be an asymmetric one of ${DPOP_ALGORITHMS.join(', ')}`);
  for (const name of ['crit', 'b64', 'jku', 'x5u', 'x5c', 'kid'])
    if (name in header) throw invalid(`the DPoP proof's header must not carry "${name}": its key is the jwk`);
  if (typeof header.jwk === 'object' && header.jwk !== null && PRIVATE_MEMBERS.some((m) => m in (header.jwk as object)))
    throw invalid("the DPoP proof's jwk must be a public key: it carries private key members");
  const jwk = jwkSchema.safeParse(header.jwk);
  if (!jwk.success) throw invalid('the DPoP proof\'s header must carry its public key as "jwk" (kty EC, OKP or RSA with its public members)');
  const wanted = KEY_OF[alg];
  const crv = jwk.data.kty === 'RSA' ? undefined : jwk.data.crv;
  if (jwk.data.kty !== wanted.kty || (wanted.crv && !(crv !== undefined && wanted.crv.includes(crv)))) throw invalid(`the DPoP proof's jwk is not a ${alg} key`);
  verifyProofSignature(proof, alg, publicKey(jwk.data, alg));

  const claims = claimsSchema.safeParse(payload);
  if (!claims.success) {
    const i = claims.error.issues[0]!;
    throw invalid(`the DPoP proof's claims are invalid: ${i.path.join('.') || 'claims'}: ${i.message}`);
  }
  const c = claims.data;
  if (c.htm !== check.htm) throw invalid(`the DPoP proof's htm must be the request's method, ${check.htm}`);
  if (normalizedHtu(c.htu) !== normalizedHtu(check.htu)) throw invalid(`the DPoP proof's htu must be this request's URI, ${stripQuery(check.htu)}`);
  const iatMs = c.iat * 1000;
  if (Math.abs(check.now - iatMs) > check.windowMs)
    throw invalid(`the DPoP proof's iat is more than ${Math.round(check.windowMs / 1000)}s from the server's time: make a fresh proof`);
  if (check.nonce) {
    if (c.nonce === undefined) throw new DpopProofError('use_dpop_nonce', "a DPoP nonce is required: put the DPoP-Nonce response header's value in the proof's nonce claim");
    if (!check.nonce(c.nonce)) throw new DpopProofError('use_dpop_nonce', "the DPoP proof's nonce is not current: use the DPoP-Nonce response header's value");
  }
  if (check.accessToken !== undefined && c.ath !== accessTokenHash(check.accessToken))
    throw invalid("the DPoP proof's ath must be the base64url SHA-256 of the presented access token");
  return { jkt: jwkThumbprint(jwk.data), jti: c.jti, acceptableUntil: iatMs + check.windowMs };
}

function publicKey(jwk: PublicJwk, alg: DpopAlgorithm): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch {
    throw invalid(`the DPoP proof's jwk is not a ${alg} public key`);
  }
  // RFC 7518 §3.3 and §3.5: RSA keys of 2048 bits or more.
  if (jwk.kty === 'RSA' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) throw invalid("the DPoP proof's RSA key must have at least 2048 bits");
  return key;
}

function verifyProofSignature(proof: string, alg: DpopAlgorithm, key: KeyObject): void {
  const dot = proof.lastIndexOf('.');
  const data = Buffer.from(proof.slice(0, dot));
  const signature = Buffer.from(proof.slice(dot + 1), 'base64url');
  const bits = alg.slice(2);
  const hash = alg === 'EdDSA' || alg === 'Ed25519' ? null : `sha${bits}`;
  let ok: boolean;
  try {
    if (alg.startsWith('ES')) {
      const size = { ES256: 64, ES384: 96, ES512: 132 }[alg as 'ES256' | 'ES384' | 'ES512'];
      ok = signature.length === size && verifySignature(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
    } else if (alg.startsWith('PS')) {
      ok = verifySignature(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    } else {
      ok = verifySignature(hash, data, key, signature);
    }
  } catch {
    ok = false;
  }
  if (!ok) throw invalid("the DPoP proof's signature does not verify with its jwk");
}

/** RFC 7638 §3: the SHA-256 of the required public members, in lexicographic order, as base64url. */
export function jwkThumbprint(jwk: PublicJwk): string {
  const members =
    jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : jwk.kty === 'OKP' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x } : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

/** RFC 9449 §4.2 `ath`: base64url SHA-256 of the access token's ASCII text. */
export const accessTokenHash = (token: string): string => createHash('sha256').update(token, 'ascii').digest('base64url');

const stripQuery = (uri: string): string => uri.replace(/[?#].*$/s, '');

/**
 * A URI as §4.3 compares `htu` (RFC 3986 §6.2.2 and §6.2.3): query and fragment dropped, scheme
 * and host lower-cased, default port and dot segments removed (WHATWG URL does these), then
 * percent-encodings of unreserved characters decoded and the others' hex upper-cased. A value
 * that is no absolute URI compares as itself (so never equal to a real one).
 */
export function normalizedHtu(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `invalid:${value}`;
  }
  const path = url.pathname.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => {
    const ch = String.fromCharCode(parseInt(hex, 16));
    return /[A-Za-z0-9\-._~]/.test(ch) ? ch : `%${hex.toUpperCase()}`;
  });
  return `${url.protocol}//${url.host}${path}`;
}
