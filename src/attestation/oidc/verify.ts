/**
 * Platform-token validation, following the shared inbound checklist (STANDARDS §2.13, RFC 8725),
 * every rule in one place (README "Attestation rules"):
 *
 * 1. size (`max_token_bytes`, checked by the attestor before anything else) and the strict JOSE
 *    parse (protocol/jose-strict.ts: canonical base64url, no duplicate members, bounded nesting);
 * 2. the header: `jku`, `x5u`, `jwk`, `x5c`, `b64` and `crit` refused (keys come only from the
 *    issuer's configured source; no URL from a token is ever dereferenced), `typ` absent or
 *    JWT/JOSE (never a token of ours: `at+jwt`, `txntoken+jwt`, …), `kid` a string when present;
 * 3. the issuer, by exact `iss`; its `alg` allow-list; a `kid` unless `require_kid: false`;
 * 4. claim types: `exp`, `nbf`, `iat` finite JSON numbers, `sub` a non-empty string;
 * 5. jose `jwtVerify`: signature by a key of this issuer only (by `kid`, or the single usable key
 *    for the `alg`), exact `iss`, `aud`, required `exp` (and `iat` while `max_token_age` is set),
 *    the issuer's leeway (≤ 60 s) and the injected clock;
 * 6. the time rules again (also on every cache hit): a future `iat` beyond the leeway, the age
 *    (`max_token_age`) and the lifetime (`max_token_lifetime`).
 */
import { errors as joseErrors, jwtVerify } from 'jose';
import { AttestationFailed, BrokerError } from '../../errors.js';
import { epochSeconds, isExpired, timeClaimsProblem, type TimeProblem } from '../../tokens/time-claims.js';
import type { Clock } from '../../util/clock.js';
import { JoseParseError, parseCompactJws, type ParsedJws } from '../../protocol/jose-strict.js';
import type { OidcIssuerConfig } from './config.js';
import { describeError, type IssuerKeys, type IssuerState, type Resolver } from './keys.js';
import type { Claims } from './mappings.js';

/** `typ` values of a plain JWT (RFC 7515 §4.1.9, §9.2.1; RFC 7519 §5.1): case-insensitive, `application/` optional. */
const PLAIN_JWT_TYP = /^(application\/)?(jwt|jose)$/i;
const TASK_TOKEN_TYPS = new Set(['at+jwt', 'application/at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'dpop+jwt']);
/**
 * Header parameters a platform token may not carry (RFC 8725 §3.10): keys and certificates come
 * only from the issuer's configured key source, never from a URL or key in the token; `b64` and
 * `crit` (RFC 7797, RFC 7515 §4.1.11) would change how the token is read.
 */
export const REFUSED_HEADER_PARAMETERS = ['jku', 'x5u', 'jwk', 'x5c', 'b64', 'crit'] as const;
const TIME_CLAIMS = ['exp', 'nbf', 'iat'] as const;

/** The strict parse and every issuer-independent header rule; throws AttestationFailed. */
export function parsePlatformToken(token: string): ParsedJws {
  let parsed: ParsedJws;
  try {
    parsed = parseCompactJws(token);
  } catch (e) {
    if (e instanceof JoseParseError) throw new AttestationFailed(`platform token is malformed: ${e.message}`);
    throw new AttestationFailed('platform token is malformed', { detail: describeError(e) });
  }
  const { header } = parsed;
  for (const name of REFUSED_HEADER_PARAMETERS) {
    if (Object.hasOwn(header, name))
      throw new AttestationFailed(`platform token header parameter "${name}" is not accepted (keys come only from the issuer's configured key source)`);
  }
  // Explicit typing (RFC 8725 §3.11/§3.12): our own task tokens are never platform evidence.
  if (header.typ !== undefined && !(typeof header.typ === 'string' && PLAIN_JWT_TYP.test(header.typ))) {
    const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : '';
    const shown = typeof header.typ === 'string' && /^[\w.+/-]{1,64}$/.test(header.typ) ? ` "${header.typ}"` : '';
    const hint = TASK_TOKEN_TYPS.has(typ) ? ' (access, transaction and workload tokens are never accepted as platform evidence)' : '';
    throw new AttestationFailed(`platform token type${shown} is not accepted${hint}`, {
      detail: `typ ${JSON.stringify(header.typ)?.slice(0, 100)}; accepted: absent, JWT or JOSE (any case, optional application/ prefix)`,
    });
  }
  if (header.kid !== undefined && typeof header.kid !== 'string') throw new AttestationFailed('platform token kid must be a string');
  return parsed;
}

/** Claim types checked before the signature (RFC 7519 §2 NumericDate, §4.1.2 sub). */
function claimTypesProblem(claims: Record<string, unknown>): AttestationFailed | undefined {
  for (const name of TIME_CLAIMS) {
    const v = claims[name];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v))) return new AttestationFailed(`platform token claim "${name}" must be a finite number`);
  }
  if (typeof claims.sub !== 'string' || claims.sub === '') return new AttestationFailed('platform token claim "sub" must be a non-empty string');
  return undefined;
}

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
  const { exp, nbf, iat } = claims;
  const problem = timeClaimsProblem(claims, nowMs, cfg.leeway, cfg.max_token_age);
  if (problem)
    return new AttestationFailed(TIME_PROBLEMS[problem], { detail: `exp ${String(exp)}, nbf ${String(nbf)}, iat ${String(iat)}, max_token_age ${String(cfg.max_token_age)}` });
  const lifetime = tokenLifetime(claims, nowMs);
  if (lifetime.seconds * 1000 > cfg.max_token_lifetime)
    return new AttestationFailed(`platform token lifetime (${lifetime.from}) is longer than the issuer allows (max_token_lifetime ${cfg.max_token_lifetime / 1000}s)`, {
      detail: `exp ${String(exp)}, nbf ${String(nbf)}, iat ${String(iat)}: ${lifetime.seconds}s`,
    });
  return undefined;
}

/** How long the token is valid: `exp - iat`, else `exp - nbf`, else `exp - now` (whole seconds of the clock, as jose counts). */
export function tokenLifetime(claims: Claims, nowMs: number): { seconds: number; from: string } {
  const exp = claims.exp as number;
  if (typeof claims.iat === 'number') return { seconds: exp - claims.iat, from: 'exp - iat' };
  if (typeof claims.nbf === 'number') return { seconds: exp - claims.nbf, from: 'exp - nbf' };
  return { seconds: exp - epochSeconds(nowMs), from: 'exp - now' };
}

/** A token that passed every check: its issuer, the key set that verified it, and its claims. */
export interface VerifiedPlatformToken {
  state: IssuerState;
  keys: Resolver;
  claims: Claims;
}

/**
 * Validates a platform token of a configured issuer; throws AttestationFailed (4xx) or Unavailable
 * (503). The caller has checked its size (`max_token_bytes`).
 */
export async function verifyPlatformToken(token: string, issuers: IssuerKeys, clock: Clock): Promise<VerifiedPlatformToken> {
  // 1–2. Strict parse and the header rules, before the issuer is even chosen.
  const { header, payload: unverified } = parsePlatformToken(token);

  // 3. The issuer by exact iss, its alg allow-list, its kid rule.
  if (typeof unverified.iss !== 'string')
    throw new AttestationFailed('token issuer is not trusted', { detail: 'token has no iss claim' });
  const state = issuers.get(unverified.iss);
  if (!state) throw new AttestationFailed('token issuer is not trusted', { detail: `iss ${unverified.iss.slice(0, 300)}` });
  const cfg = state.cfg;
  if (typeof header.alg !== 'string' || !(cfg.algorithms as string[]).includes(header.alg))
    throw new AttestationFailed('platform token algorithm is not allowed', {
      detail: `alg ${JSON.stringify(header.alg)?.slice(0, 40)} is not in [${cfg.algorithms.join(', ')}] for issuer ${cfg.issuer}`,
    });
  // A named key (§2.13), before any key lookup. Without one (require_kid: false), jose uses the
  // one key of this issuer that fits the alg, and refuses when there are several: it never tries each.
  if (cfg.require_kid && typeof header.kid !== 'string')
    throw new AttestationFailed('platform token does not name its signing key (kid)', {
      detail: `issuer ${cfg.issuer} requires a kid header (require_kid)`,
    });

  // 3b. Claim types, before the signature.
  const typeProblem = claimTypesProblem(unverified);
  if (typeProblem) throw typeProblem;

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
