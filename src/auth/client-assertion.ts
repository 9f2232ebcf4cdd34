import { createHash } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { REFUSED_HEADER_PARAMETERS } from '../attestation/oidc/verify.js';
import { InvalidClient } from '../errors.js';
import { JoseParseError, parseCompactJws } from '../protocol/jose-strict.js';
import { CLIENT_ASSERTION_ALGS } from './client-assertion-algs.js';

/** RFC 7523 §2.2 / OIDC Core §9: the assertion type of private_key_jwt. */
export const JWT_BEARER_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** An assertion is made for one request: one valid for longer than this is refused (RFC 7523 §3 item 4 lets us). */
export const MAX_ASSERTION_LIFETIME_MS = 5 * 60_000;

export interface AssertionCheck {
  /** Our issuer identifier, an accepted `aud`. */
  issuer: string;
  /** The URL of the endpoint called, the other accepted `aud` (RFC 7523 §3 item 3). */
  endpoint: string;
  now: number;
  leewayMs: number;
  /** The keys of the client named by `iss`, or undefined when it registered none. */
  keysOf(clientId: string): JWTVerifyGetKey | undefined;
  /** Records a `jti` as used (the grant store's useOnce): false when it already was. */
  useOnce(key: string, ttlMs: number): Promise<boolean>;
}

const refuse = (why: string) => new InvalidClient(`the client assertion is not valid: ${why}`);

/**
 * Verifies a private_key_jwt client assertion (RFC 7523 §3) and returns its client id: strict
 * JOSE parse, asymmetric `alg` only, no key-bearing header parameters, `iss` = `sub` = the
 * client id (and = the form's client_id, when sent), `aud` our issuer or this endpoint's URL,
 * `exp` required and at most MAX_ASSERTION_LIFETIME_MS ahead, `jti` required and used once.
 */
export async function verifyClientAssertion(assertion: string, formClientId: string | undefined, check: AssertionCheck): Promise<string> {
  let header: Record<string, unknown>;
  let payload: Record<string, unknown>;
  try {
    ({ header, payload } = parseCompactJws(assertion));
  } catch (e) {
    if (e instanceof JoseParseError) throw refuse(`it is not a well-formed JWT (${e.message})`);
    throw e;
  }
  if (!(CLIENT_ASSERTION_ALGS as readonly unknown[]).includes(header.alg)) throw refuse(`alg must be one of ${CLIENT_ASSERTION_ALGS.join(', ')}`);
  const refused = REFUSED_HEADER_PARAMETERS.find((name) => name in header);
  if (refused) throw refuse(`header parameter "${refused}" is not accepted`);
  const clientId = payload.iss;
  if (typeof clientId !== 'string' || clientId.length === 0) throw refuse('iss must be the client_id');
  if (formClientId !== undefined && formClientId !== clientId) throw refuse('iss differs from client_id');
  const keys = check.keysOf(clientId);
  if (!keys) throw new InvalidClient('client authentication failed: unknown client, or no private_key_jwt keys registered for it');
  let exp: number;
  let jti: unknown;
  try {
    const { payload: verified } = await jwtVerify(assertion, keys, {
      algorithms: [...CLIENT_ASSERTION_ALGS],
      issuer: clientId,
      subject: clientId,
      audience: [check.issuer, check.endpoint],
      requiredClaims: ['exp', 'jti'],
      clockTolerance: check.leewayMs / 1000,
      currentDate: new Date(check.now),
    });
    exp = verified.exp!;
    jti = verified.jti;
    // jose checks iat only against a maximum age: one from the future is refused here.
    if (verified.iat !== undefined && verified.iat * 1000 > check.now + check.leewayMs) throw refuse('iat is in the future');
  } catch (e) {
    if (e instanceof joseErrors.JOSEError) throw refuse(joseReason(e));
    throw e;
  }
  if (exp * 1000 > check.now + MAX_ASSERTION_LIFETIME_MS + check.leewayMs) throw refuse(`exp must be at most ${MAX_ASSERTION_LIFETIME_MS / 60_000} minutes ahead`);
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw refuse('jti must be a string of 1-256 characters');
  // Remembered until the assertion expires: after that, exp alone refuses it.
  const key = `client_assertion:${createHash('sha256').update(`${clientId}\n${jti}`).digest('base64url')}`;
  if (!(await check.useOnce(key, exp * 1000 - check.now + check.leewayMs))) throw refuse('its jti was already used (an assertion is good for one request)');
  return clientId;
}

/** What failed, in words that carry nothing of the assertion itself. */
function joseReason(e: InstanceType<typeof joseErrors.JOSEError>): string {
  if (e instanceof joseErrors.JWTExpired) return 'it has expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) return `claim ${e.claim} ${e.reason === 'missing' ? 'is missing' : 'is not as required'} (iss and sub = client_id, aud = the issuer or this endpoint, exp and jti present)`;
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'its signature does not verify';
  if (e instanceof joseErrors.JWKSNoMatchingKey || e instanceof joseErrors.JWKSMultipleMatchingKeys) return 'no single registered key of the client matches its kid and alg';
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'its alg is not accepted';
  return 'it could not be verified';
}
