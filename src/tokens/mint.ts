import { sign } from 'node:crypto';
import { randomBase64url } from '../util/random.js';
import type { TaskTokenClaims } from '../protocol/claims.js';
import { AUTHORIZATION_DETAILS_TYPE, type GrantedIntent } from '../protocol/intent.js';
import { TASK_TOKEN_TYP } from '../protocol/claims.js';
import type { Confirmation } from '../protocol/claims.js';
import { toSeconds } from '../util/clock.js';
import type { SigningKey } from './keyring.js';

export const newTokenId = (): string => randomBase64url(16);

export interface TaskTokenInput {
  issuer: string;
  workloadId: string;
  grantId: string;
  jti: string;
  intent: GrantedIntent;
  /** ms since epoch */
  issuedAt: number;
  expiresAt: number;
  cnf?: Confirmation;
}

/** The claims of a task token (DESIGN.md "Task token"; RFC 9068 §2.2, RFC 9396 §9.1). */
export function taskTokenClaims(input: TaskTokenInput): TaskTokenClaims {
  const { intent } = input;
  const iat = toSeconds(input.issuedAt);
  const claims: TaskTokenClaims = {
    iss: input.issuer,
    sub: input.workloadId,
    aud: intent.audience,
    iat,
    nbf: iat,
    exp: toSeconds(input.expiresAt),
    jti: input.jti,
    client_id: input.workloadId,
    grant: input.grantId,
    txn: intent.task,
    scope: intent.actions.join(' '),
    authorization_details: [
      {
        type: AUTHORIZATION_DETAILS_TYPE,
        locations: [intent.audience],
        actions: intent.actions,
        resources: intent.resources,
        purpose: intent.purpose,
        identifier: intent.task,
      },
    ],
  };
  if (input.cnf) claims.cnf = input.cnf;
  return claims;
}

const b64url = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * Signs a task token (JWS compact, RFC 7515 §7.1) with header alg, kid and typ at+jwt. ES256
 * signatures are the raw r||s form JWS requires (RFC 7518 §3.4), not DER.
 */
export function signTaskToken(claims: TaskTokenClaims, key: SigningKey): string {
  const input = `${b64url({ alg: key.alg, kid: key.kid, typ: TASK_TOKEN_TYP })}.${b64url(claims)}`;
  const data = Buffer.from(input);
  const signature =
    key.alg === 'ES256' ? sign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' }) : sign(null, data, key.privateKey);
  return `${input}.${signature.toString('base64url')}`;
}
