/**
 * Platform-token validation, following the shared inbound checklist (STANDARDS §2.13, RFC 8725):
 * issuer picked by exact `iss` from an unverified decode, then `typ` (never a token of ours:
 * `at+jwt`, `txntoken+jwt`, …), the `alg` allow-list, a `kid` in the header (unless the issuer
 * sets `require_kid: false`), then jose `jwtVerify` with the issuer's asymmetric `alg` allow-list,
 * exact `iss`, `aud`, required `exp` (and `iat` while `max_token_age` is set), leeway ≤ 30 s, and
 * the injected clock.
 */
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import { AttestationFailed, BrokerError } from '../../errors.js';
import { isExpired, timeClaimsProblem, type TimeProblem } from '../../tokens/time-claims.js';
import type { Clock } from '../../util/clock.js';
import type { OidcIssuerConfig } from './config.js';
import { describeError, type IssuerKeys, type IssuerState, type Resolver } from './keys.js';
import type { Claims } from './mappings.js';

export const MAX_TOKEN_LENGTH = 16_384;

const ACCEPTED_TYP = new Set(['jwt', 'application/jwt']);
const TASK_TOKEN_TYPS = new Set(['at+jwt', 'application/at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'dpop+jwt']);

/** Maps a jose verification failure to the public error (detail stays operator-only). */
function fromJose(e: unknown, cfg: OidcIssuerConfig): BrokerError {
  if (e instanceof BrokerError) return e;
  const detail = describeError(e);
  const fail = (description: string) => new AttestationFailed(description, { detail, cause: e });
  if (e instanceof joseErrors.JWTExpired) return fail(e.claim === 'iat' ? 'platform token is too old' : 'platform token has expired');
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return fail(`platform token lacks the required "${e.claim}" claim`);
    switch (e.claim) {
      case 'aud':
        return new AttestationFailed('platform token audience is not accepted', {
          detail: `aud ${JSON.stringify(e.payload.aud)?.slice(0, 300)} contains none of ${cfg.audiences.join(', ')}`,
          cause: e,
        });
      case 'iss':
        return fail('token issuer is not trusted');
      case 'nbf':
        return fail('platform token is not yet valid');
      case 'iat':
        return fail('platform token was issued in the future');
      default:
        return fail(`platform token claim ${e.claim} is invalid`);
    }
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return fail('platform token signature is invalid');
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return fail('platform token algorithm is not allowed');
  if (e instanceof joseErrors.JWKSNoMatchingKey) return fail('platform token signing key is not known');
  if (e instanceof joseErrors.JWKSMultipleMatchingKeys) return fail('platform token does not identify its signing key (kid)');
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) return fail('platform token is malformed');
  if (e instanceof joseErrors.JOSENotSupported) return fail('platform token algorithm or key type is not supported');
  return fail('platform token could not be verified');
}

/** jose's `exp` rule (`exp <= now - tolerance` is expired); also used to prune the cache. */
export const hasExpired = (exp: unknown, cfg: OidcIssuerConfig, nowMs: number) => isExpired(exp, nowMs, cfg.leeway);

const TIME_PROBLEMS: Record<TimeProblem, string> = {
  not_yet_valid: 'platform token is not yet valid',
  expired: 'platform token has expired',
  too_old: 'platform token is too old',
  issued_in_future: 'platform token was issued in the future',
};

/**
 * The time rules of a verified token (src/tokens/time-claims.ts), re-applied on every use (also
 * to cached verifications) exactly as jose applies them, so that a cache hit is never looser.
 */
export function timeProblem(claims: Claims, cfg: OidcIssuerConfig, nowMs: number): AttestationFailed | undefined {
  const problem = timeClaimsProblem(claims, nowMs, cfg.leeway, cfg.max_token_age);
  if (!problem) return undefined;
  const { exp, nbf, iat } = claims;
  return new AttestationFailed(TIME_PROBLEMS[problem], { detail: `exp ${String(exp)}, nbf ${String(nbf)}, iat ${String(iat)}, max_token_age ${String(cfg.max_token_age)}` });
}

/** A token that passed every check: its issuer, the key set that verified it, and its claims. */
export interface VerifiedPlatformToken {
  state: IssuerState;
  keys: Resolver;
  claims: Claims;
}

/** Validates a platform token of a configured issuer; throws AttestationFailed (4xx) or Unavailable (503). */
export async function verifyPlatformToken(token: string, issuers: IssuerKeys, clock: Clock): Promise<VerifiedPlatformToken> {
  // 1. Unverified decode, only to choose the issuer's configuration.
  let header: ProtectedHeaderParameters;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    unverified = decodeJwt(token);
  } catch (e) {
    throw new AttestationFailed('platform token is malformed', { detail: describeError(e) });
  }
  if (typeof unverified.iss !== 'string')
    throw new AttestationFailed('token issuer is not trusted', { detail: 'token has no iss claim' });
  const state = issuers.get(unverified.iss);
  if (!state) throw new AttestationFailed('token issuer is not trusted', { detail: `iss ${unverified.iss.slice(0, 300)}` });
  const cfg = state.cfg;

  // 2. Explicit typing (RFC 8725 §3.11/§3.12): our own task tokens are never platform evidence.
  if (header.typ !== undefined) {
    const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : '';
    if (!ACCEPTED_TYP.has(typ)) {
      const shown = typeof header.typ === 'string' && /^[\w.+/-]{1,64}$/.test(header.typ) ? ` "${header.typ}"` : '';
      const hint = TASK_TOKEN_TYPS.has(typ) ? ' (access, transaction and workload tokens are never accepted as platform evidence)' : '';
      throw new AttestationFailed(`platform token type${shown} is not accepted${hint}`, {
        detail: `typ ${JSON.stringify(header.typ)?.slice(0, 100)}; accepted: absent, JWT, application/jwt`,
      });
    }
  }

  // 3. Algorithm allow-list before any key lookup (jose enforces it again below).
  if (typeof header.alg !== 'string' || !(cfg.algorithms as string[]).includes(header.alg))
    throw new AttestationFailed('platform token algorithm is not allowed', {
      detail: `alg ${JSON.stringify(header.alg)?.slice(0, 40)} is not in [${cfg.algorithms.join(', ')}] for issuer ${cfg.issuer}`,
    });

  // 3b. A named key (§2.13), before any key lookup: without a kid, jose would accept a
  // signature by whichever published key happens to fit the alg.
  if (cfg.require_kid && typeof header.kid !== 'string')
    throw new AttestationFailed('platform token does not name its signing key (kid)', {
      detail: `issuer ${cfg.issuer} requires a kid header (require_kid)`,
    });

  // 4. Signature and claims.
  const keys = await issuers.currentKeys(state);
  const nowMs = clock();
  let claims: Claims;
  try {
    const result = await jwtVerify(token, issuers.resolverFor(state, keys), {
      algorithms: cfg.algorithms,
      issuer: cfg.issuer,
      audience: cfg.audiences,
      requiredClaims: cfg.max_token_age !== undefined ? ['exp', 'iat'] : ['exp'],
      clockTolerance: cfg.leeway / 1000,
      ...(cfg.max_token_age !== undefined ? { maxTokenAge: Math.floor(cfg.max_token_age / 1000) } : {}),
      currentDate: new Date(nowMs),
    });
    claims = result.payload as Claims;
  } catch (e) {
    throw fromJose(e, cfg);
  }
  const problem = timeProblem(claims, cfg, nowMs);
  if (problem) throw problem;
  return { state, keys, claims };
}
