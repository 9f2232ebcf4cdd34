import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { calculateJwkThumbprint, compactVerify, importJWK, type JWK } from 'jose';
import { z } from 'zod';
import { BrokerError } from '../errors.js';
import { JoseParseError, parseCompactJws } from '../protocol/jose-strict.js';

/**
 * DPoP proofs (RFC 9449): the one checker of a `DPoP` header, for every route that takes one
 * (the task routes, the token endpoint). It decides everything a proof says by itself (§4.3
 * steps 1-10 except jti tracking); the caller then records the jti once in the workload's slot
 * (GrantStore.useProofJti), after everything else about the request is checked.
 */

/** Asymmetric algorithms only (§4.2: never `none`, never a MAC). Published as `dpop_signing_alg_values_supported`. */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const;
/** A proof carries a public key and a few claims: an RSA-4096 one is under 2 KiB. */
export const MAX_DPOP_PROOF_BYTES = 8192;

/** RFC 9449 §12.2 `invalid_dpop_proof` (400 at the broker, which is an authorization server). */
export class InvalidDpopProof extends BrokerError {
  constructor(description: string, opts?: { detail?: string }) {
    super('invalid_dpop_proof', 400, description, opts);
  }
}

/** RFC 9449 §8: the proof must carry the nonce the broker issues (sent in `DPoP-Nonce`). */
export class UseDpopNonce extends BrokerError {
  constructor(description: string) {
    super('use_dpop_nonce', 400, description);
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
  /** The request's method and its public URI (no query or fragment). */
  htm: string;
  htu: string;
  now: number;
  /** How far `iat` may be from now (ms), either way. */
  windowMs: number;
  /** The access token presented with the proof: its hash must be `ath`. */
  accessToken?: string;
  /** When the broker issues nonces: whether a nonce is one it issued recently. */
  nonce?: (value: string) => boolean;
}

const jwkSchema = z.looseObject({ kty: z.enum(['EC', 'OKP', 'RSA']) });
/** Members only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

const claimsSchema = z.object({
  jti: z.string().min(8, 'jti must be a unique random string').max(256),
  htm: z.string().min(1).max(16),
  htu: z.string().min(1).max(2048),
  iat: z.number().int().nonnegative(),
  ath: z.string().max(128).optional(),
  nonce: z.string().max(256).optional(),
});

/** Checks one DPoP proof per RFC 9449 §4.3; throws InvalidDpopProof or UseDpopNonce. */
export async function verifyDpopProof(check: DpopProofCheck): Promise<VerifiedProof> {
  const { proof } = check;
  if (proof.length > MAX_DPOP_PROOF_BYTES) throw new InvalidDpopProof(`the DPoP proof is over ${MAX_DPOP_PROOF_BYTES} bytes`);
  let header: Record<string, unknown>;
  let payload: Record<string, unknown>;
  try {
    ({ header, payload } = parseCompactJws(proof));
  } catch (e) {
    if (e instanceof JoseParseError) throw new InvalidDpopProof(`the DPoP proof is not a well-formed JWT: ${e.message}`);
    throw e;
  }
  if (header.typ !== 'dpop+jwt') throw new InvalidDpopProof('the DPoP proof must have header typ "dpop+jwt"');
  const alg = header.alg;
  if (typeof alg !== 'string' || !(DPOP_ALGORITHMS as readonly string[]).includes(alg))
    throw new InvalidDpopProof(`the DPoP proof's alg must be an asymmetric one of ${DPOP_ALGORITHMS.join(', ')}`);
  for (const name of ['crit', 'b64', 'jku', 'x5u', 'x5c', 'kid'])
    if (name in header) throw new InvalidDpopProof(`the DPoP proof's header must not carry "${name}": its key is the jwk`);
  const jwk = jwkSchema.safeParse(header.jwk);
  if (!jwk.success) throw new InvalidDpopProof('the DPoP proof\'s header must carry its public key as "jwk" (kty EC, OKP or RSA)');
  if (PRIVATE_MEMBERS.some((m) => m in jwk.data)) throw new InvalidDpopProof('the DPoP proof\'s jwk must be a public key: it carries private key members');

  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK(jwk.data as JWK, alg);
  } catch {
    throw new InvalidDpopProof(`the DPoP proof's jwk is not a ${alg} public key`);
  }
  try {
    await compactVerify(proof, key, { algorithms: [alg] });
  } catch (e) {
    throw new InvalidDpopProof('the DPoP proof\'s signature does not verify with its jwk', { detail: e instanceof Error ? e.message : String(e) });
  }

  const claims = claimsSchema.safeParse(payload);
  if (!claims.success) {
    const i = claims.error.issues[0]!;
    throw new InvalidDpopProof(`the DPoP proof's claims are invalid: ${i.path.join('.') || 'claims'}: ${i.message}`);
  }
  const c = claims.data;
  if (c.htm !== check.htm) throw new InvalidDpopProof(`the DPoP proof's htm must be the request's method, ${check.htm}`);
  if (normalizedHtu(c.htu) !== normalizedHtu(check.htu)) throw new InvalidDpopProof(`the DPoP proof's htu must be this request's URI, ${check.htu}`);
  const iatMs = c.iat * 1000;
  if (Math.abs(check.now - iatMs) > check.windowMs)
    throw new InvalidDpopProof(`the DPoP proof's iat is more than ${Math.round(check.windowMs / 1000)}s from the broker's time: make a fresh proof`);
  if (check.nonce) {
    if (c.nonce === undefined) throw new UseDpopNonce('this broker requires a DPoP nonce: put the DPoP-Nonce response header value in the proof\'s nonce claim');
    if (!check.nonce(c.nonce)) throw new UseDpopNonce('the DPoP proof\'s nonce is not current: use the DPoP-Nonce response header value');
  }
  if (check.accessToken !== undefined && c.ath !== accessTokenHash(check.accessToken))
    throw new InvalidDpopProof('the DPoP proof\'s ath must be the base64url SHA-256 of the presented access token');
  return { jkt: await calculateJwkThumbprint(jwk.data as JWK, 'sha256'), jti: c.jti, acceptableUntil: iatMs + check.windowMs };
}

/** RFC 9449 §4.2 `ath`: base64url SHA-256 of the access token's ASCII text. */
export const accessTokenHash = (token: string): string => createHash('sha256').update(token, 'ascii').digest('base64url');

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

/**
 * Stateless server nonces (§8): the HMAC of a time window under a secret every instance shares,
 * so any instance accepts any instance's nonce with no shared state. The current and the previous
 * window's nonces are accepted: a nonce lives between one and two `rotationMs`.
 */
export class DpopNonces {
  constructor(
    private readonly secret: string,
    private readonly rotationMs: number,
  ) {}

  /** The nonce to send now (`DPoP-Nonce`). */
  current(now: number): string {
    return this.of(Math.floor(now / this.rotationMs));
  }

  accepts(value: string, now: number): boolean {
    const window = Math.floor(now / this.rotationMs);
    const given = Buffer.from(value);
    return [window, window - 1].some((w) => {
      const expected = Buffer.from(this.of(w));
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
  }

  private of(window: number): string {
    return createHmac('sha256', this.secret).update(`jit-broker dpop nonce ${window}`).digest().subarray(0, 18).toString('base64url');
  }
}
