import { isDeepStrictEqual } from 'node:util';
import type { Grant } from '../grants/store.js';
import { actorClaim, type TaskTokenClaims } from '../protocol/claims.js';
import { taskTokenClaims } from './mint.js';

/** The claims a task token carries that say what it may do: they must be its grant's record. */
export type RecordedClaims = Pick<TaskTokenClaims, 'sub' | 'client_id' | 'grant' | 'aud' | 'scope' | 'txn' | 'authorization_details' | 'cnf' | 'act'>;

/**
 * The intent claims of any token of this grant, built from the record the way minting builds
 * them (mint.ts taskTokenClaims): what introspection answers, and what a presented token must
 * carry. The record's intent never changes after creation, so this holds for every generation.
 */
export function recordedClaims(grant: Grant): RecordedClaims {
  const c = taskTokenClaims({
    issuer: '',
    workloadId: grant.workload,
    grantId: grant.id,
    jti: grant.token_jti,
    intent: { audience: grant.audience, actions: grant.actions, resources: grant.resources, purpose: grant.purpose, task: grant.task },
    issuedAt: 0,
    expiresAt: grant.token_exp,
    ...(grant.cnf ? { cnf: grant.cnf } : {}),
    ...(grant.act ? { act: actorClaim(grant.act.map((a) => a.sub)) } : {}),
  });
  return { sub: c.sub, client_id: c.client_id, grant: c.grant, aud: c.aud, scope: c.scope, txn: c.txn, authorization_details: c.authorization_details, cnf: c.cnf, act: c.act };
}

/**
 * Why a verified task token is not one its grant's record vouches for, or undefined when it is.
 * The grant record is the authority (DESIGN.md): a token whose intent claims (subject, client,
 * audience, scope, task, authorization details, binding, actors) differ from the record is worth nothing,
 * however it came to be signed. The grant's latest token must also carry the recorded expiry.
 * Superseded tokens (another jti) are the callers' business: renew and end treat them as replay.
 * Every operation of broker.ts that acts on a presented token asks this first.
 */
export function recordMismatch(claims: TaskTokenClaims, grant: Grant): string | undefined {
  const recorded = recordedClaims(grant);
  for (const name of Object.keys(recorded) as (keyof RecordedClaims)[]) {
    if (!isDeepStrictEqual(claims[name], recorded[name])) return `${name} differs from the grant record`;
  }
  if (claims.jti === grant.token_jti && claims.exp * 1000 !== grant.token_exp) return 'exp differs from the grant record';
  return undefined;
}
