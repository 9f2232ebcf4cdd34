import { randomBase64url } from '../util/random.js';
import type { TaskTokenClaims } from '../protocol/claims.js';
import { AUTHORIZATION_DETAILS_TYPE, type GrantedIntent } from '../protocol/intent.js';
import { TASK_TOKEN_TYP } from '../protocol/claims.js';
import type { ActorClaim, Confirmation } from '../protocol/claims.js';
import { toSeconds } from '../util/clock.js';
import type { SigningKey } from './keyring.js';
import { signJws } from './algorithms.js';

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
  /** A delegated grant's actors (RFC 8693 §4.1). */
  act?: ActorClaim;
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
  if (input.act) claims.act = input.act;
  return claims;
}

const b64url = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** The JWS signing input (header.payload) of a token of type `typ`, and how the key signs. */
function signing(claims: object, key: SigningKey, typ: string) {
  const input = `${b64url({ alg: key.alg, kid: key.kid, typ })}.${b64url(claims)}`;
  return { input, data: Buffer.from(input) };
}

/** Signs a task token (JWS compact, RFC 7515 §7.1) with header alg, kid and typ at+jwt, on this thread. */
export function signTaskToken(claims: TaskTokenClaims, key: SigningKey): string {
  const s = signing(claims, key, TASK_TOKEN_TYP);
  return `${s.input}.${signJws(key.alg, s.data, key.privateKey).toString('base64url')}`;
}

/**
 * The same, signed on libuv's thread pool: the event loop goes on serving other requests while
 * OpenSSL signs (a sixth of an issuance's CPU: bench/).
 */
export function signTaskTokenOffThread(claims: TaskTokenClaims, key: SigningKey): Promise<string> {
  return signOffThread(claims, key, TASK_TOKEN_TYP);
}

/** Signs a JWT of header type `typ` on libuv's thread pool (task tokens, Txn-Tokens). */
export function signOffThread(claims: object, key: SigningKey, typ: string): Promise<string> {
  const s = signing(claims, key, typ);
  return new Promise((resolve, reject) => {
    signJws(key.alg, s.data, key.privateKey, (err, signature) => (err ? reject(err) : resolve(`${s.input}.${signature.toString('base64url')}`)));
  });
}
