/**
 * The time rules every inbound JWT obeys (platform tokens and our own task tokens alike), with
 * jose's exact comparisons and order (jwt_claims_set.js): whole seconds rounded down, `nbf` not
 * in the future, `exp` present and in the future, `iat` within `maxAgeMs` when one is set, and
 * (our addition) `iat` not in the future. Leeway applies to each (at most 30 s for task tokens, 60 s per platform-token issuer).
 */
export type TimeProblem = 'not_yet_valid' | 'expired' | 'too_old' | 'issued_in_future';

export interface TimeClaims {
  exp?: unknown;
  nbf?: unknown;
  iat?: unknown;
}

/** jose's clock: whole seconds, rounded down. */
export const epochSeconds = (nowMs: number): number => Math.floor(nowMs / 1000);

/** `exp` missing, or `exp <= now - leeway`. */
export const isExpired = (exp: unknown, nowMs: number, leewayMs: number): boolean =>
  typeof exp !== 'number' || exp <= epochSeconds(nowMs) - leewayMs / 1000;

export function timeClaimsProblem(claims: TimeClaims, nowMs: number, leewayMs: number, maxAgeMs?: number): TimeProblem | undefined {
  const now = epochSeconds(nowMs);
  const tol = leewayMs / 1000;
  const { nbf, iat } = claims;
  if (typeof nbf === 'number' && nbf > now + tol) return 'not_yet_valid';
  if (isExpired(claims.exp, nowMs, leewayMs)) return 'expired';
  if (maxAgeMs !== undefined && (typeof iat !== 'number' || now - iat - tol > Math.floor(maxAgeMs / 1000))) return 'too_old';
  if (typeof iat === 'number' && iat > now + tol) return 'issued_in_future';
  return undefined;
}
