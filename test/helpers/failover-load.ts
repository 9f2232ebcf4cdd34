import { decodeJwt } from 'jose';
import { expect } from 'vitest';
import type { Answer } from '../../bench/failover-load.js';
import type { Grant } from '../../src/grants/store.js';

/** The load itself lives in bench/ (bench/failover.ts measures the same window); the checks are here. */
export { issuanceLoadThroughFailover, timeline, workloadOf, type Answer, type LoadOptions, type LoadResult } from '../../bench/failover-load.js';

/** Every answer is a 201 with a token, or a 503 with Retry-After and a JSON error: nothing else, ever. */
export function expectOnlyTokensOr503(answers: Answer[]): void {
  const wrong = answers.filter((a) => {
    if (a.status === 201) return typeof a.body.access_token !== 'string' || typeof a.body.grant !== 'string';
    if (a.status !== 503) return true;
    return !/^[1-9][0-9]*$/.test(a.retryAfter ?? '') || a.body.error !== 'temporarily_unavailable' || typeof a.body.error_description !== 'string';
  });
  expect(wrong.slice(0, 5).map((a) => ({ status: a.status, retryAfter: a.retryAfter, body: a.body, error: a.error }))).toEqual([]);
}

/**
 * Every 201's grant, read by `read` (which goes to the primary now serving it, directly): there,
 * for the token's workload, active, with the token's jti. Returns the grants found.
 */
export async function expectEveryTokenHasItsGrant(answers: Answer[], read: (grantId: string) => Promise<Grant | null>): Promise<Grant[]> {
  const issued = answers.filter((a) => a.status === 201);
  const missing: string[] = [];
  const found: Grant[] = [];
  for (let i = 0; i < issued.length; i += 50) {
    await Promise.all(
      issued.slice(i, i + 50).map(async (a) => {
        const claims = decodeJwt(a.body.access_token as string);
        const grant = await read(String(claims.grant));
        if (!grant || grant.workload !== claims.sub || grant.status !== 'active' || grant.token_jti !== claims.jti) {
          missing.push(`${String(claims.grant)}: ${grant ? `${grant.status} for ${grant.workload}` : 'no grant'}`);
        } else found.push(grant);
      }),
    );
  }
  expect(missing).toEqual([]);
  return found;
}
