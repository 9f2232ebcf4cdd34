import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { InvalidToken } from '../errors.js';
import { isGrantId } from '../grants/ids.js';
import { TASK_TOKEN_TYP, taskTokenClaimsSchema, type TaskTokenClaims } from '../protocol/claims.js';
import { MAX_TASK_TOKEN_BYTES } from '../protocol/limits.js';
import type { Clock } from '../util/clock.js';
import { timeClaimsProblem } from './time-claims.js';
import { isSigningAlg, keyFitsAlg, verifyJws, type SigningAlg } from './algorithms.js';
import type { TokenDigests } from './token-digest.js';

/** Where the verifier finds public keys by kid (the keyring: ours, then every instance's). */
export interface VerificationKeys {
  verificationKey(kid: string): Promise<{ key: KeyObject; alg: SigningAlg } | undefined>;
}

export interface TaskTokenVerifierOptions {
  issuer: string;
  leewayMs: number;
  clock: Clock;
  keys: VerificationKeys;
  /** The keyed digests grant records keep of their latest token (token-digest.ts); none: always verify signatures. */
  digests?: TokenDigests;
}

/**
 * A grant record's digest of its latest token, with the digests that keyed it: a presented token
 * whose digest it is was minted by a broker, byte for byte, so its signature need not be verified.
 */
export interface RecordedDigest {
  digests: TokenDigests;
  recorded: string;
}

/** Verified task tokens remembered at most (about 1 KiB each). */
export const VERIFIED_CACHE_MAX = 10_000;

/**
 * Verifies task tokens this broker (or another instance sharing its store) minted, when they are
 * presented back to it: renewal, end, introspection, revocation. The inbound-validation steps of
 * RFC 8725 / RFC 9068 §4: compact JWS only; `alg` from our allow-list and equal to the key's; `typ`
 * exactly `at+jwt`; `kid` known; signature; `iss` exact; `exp` future and `nbf`/`iat` not future
 * beyond the leeway; claims of the task-token shape. No `aud` check: the audience is the resource
 * server's, and the token comes back to its issuer. Grant state is the caller's business.
 */
export class TaskTokenVerifier {
  /**
   * Tokens whose signature and claims already verified, by the token itself: resource servers
   * introspect the same token many times. A hit re-checks only the time rules. The key need not
   * be looked up again: it stays published for key_overlap >= max_ttl + leeway after it last
   * signed, so a token outlives its key's publication never (it expires first). Bounded; the
   * oldest entry leaves first.
   */
  private readonly verified = new Map<string, TaskTokenClaims>();

  constructor(private readonly opts: TaskTokenVerifierOptions) {}

  /**
   * The claims of `token`, or InvalidToken. `recordedDigest`: the token digest of the grant record
   * the caller read (Grant.token_digest). When it is the presented token's keyed digest, the
   * signature check alone is skipped: the record vouches for the bytes, and every other check
   * (header, the key still trusted, issuer, claims, time) runs as for any token. Anything else
   * (absent, another token's, not ours) verifies the signature, so the answer is the same either way.
   */
  async verify(token: string, recordedDigest?: string): Promise<TaskTokenClaims> {
    const known = this.verified.get(token);
    if (known) return this.timely(known);
    const { digests } = this.opts;
    const vouch = digests && recordedDigest !== undefined ? { digests, recorded: recordedDigest } : undefined;
    const claims = this.timely(await this.verifyUncached(token, vouch));
    if (this.verified.size >= VERIFIED_CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(token, claims);
    return claims;
  }

  /** The time rules, on every use (cached or not). */
  private timely(claims: TaskTokenClaims): TaskTokenClaims {
    const problem = timeClaimsProblem(claims, this.opts.clock(), this.opts.leewayMs);
    if (problem) {
      throw new InvalidToken(problem === 'expired' ? 'the token has expired' : 'the token is not valid yet');
    }
    return claims;
  }

  private async verifyUncached(token: string, vouch: RecordedDigest | undefined): Promise<TaskTokenClaims> {
    const payload = await verifiedPayload(token, TASK_TOKEN_TYP, 'task token', this.opts.keys, vouch);
    const parsed = taskTokenClaimsSchema.safeParse(payload);
    if (!parsed.success) throw new InvalidToken('the token does not carry task-token claims');
    const claims: TaskTokenClaims = parsed.data;
    if (claims.iss !== this.opts.issuer) throw new InvalidToken('the token was issued by another issuer');
    if (!isGrantId(claims.grant)) throw new InvalidToken('the token does not name a grant');
    return deepFreeze(claims);
  }
}

/**
 * The payload of a JWT this broker (or another instance) signed, of header type `typ`: compact
 * JWS only; `alg` from our allow-list and equal to the key's; `typ` exact; `kid` known; no `crit`;
 * signature, unless `vouch` is the token's own keyed digest (then only the signature is skipped).
 * The claims are the caller's to check.
 */
export async function verifiedPayload(token: string, typ: string, kind: string, keys: VerificationKeys, vouch?: RecordedDigest): Promise<Record<string, unknown> | undefined> {
  if (token.length > MAX_TASK_TOKEN_BYTES) throw new InvalidToken('the token is too long');
  const parts = token.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]*$/.test(p))) throw new InvalidToken('the token is not a compact JWS');
  const [h, p, s] = parts as [string, string, string];
  const header = decodeJson(h);
  if (!header || typeof header.alg !== 'string' || !isSigningAlg(header.alg)) throw new InvalidToken('the token is not signed with an accepted algorithm');
  if (header.typ !== typ) throw new InvalidToken(`the token is not a ${kind} (typ must be ${typ})`);
  if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > 256) throw new InvalidToken('the token names no signing key');
  if (header.crit !== undefined) throw new InvalidToken('the token has critical header parameters we do not understand');
  const found = await keys.verificationKey(header.kid);
  if (!found) throw new InvalidToken('the token was not signed by this broker (unknown key)');
  if (found.alg !== header.alg) throw new InvalidToken('the token was not signed by this broker (algorithm differs from its key)');
  if (vouch?.digests.matches(token, vouch.recorded)) return decodeJson(p);
  const data = Buffer.from(`${h}.${p}`);
  const signature = Buffer.from(s, 'base64url');
  if (!verifyJws(found.alg, data, found.key, signature)) throw new InvalidToken('the token signature does not verify');
  return decodeJson(p);
}

/** The JWT header type of a compact token, read without verifying anything (to pick its verifier). */
export function headerType(token: string): unknown {
  const dot = token.indexOf('.');
  return dot > 0 && dot <= 4096 ? decodeJson(token.slice(0, dot))?.typ : undefined;
}

/** Cached claims are shared by every caller: nothing may change them. */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function decodeJson(segment: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A public KeyObject from a published JWK, or undefined when it is not one of ours. */
export function publicKeyFromJwk(jwk: JWK): { key: KeyObject; alg: SigningAlg } | undefined {
  const alg = jwk.alg;
  if (!isSigningAlg(alg)) return undefined;
  try {
    const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    return keyFitsAlg(key, alg) ? { key, alg } : undefined;
  } catch {
    return undefined;
  }
}
