import type { TaskAuthorizationDetail } from './intent.js';

export const TASK_TOKEN_TYP = 'at+jwt';

/** Confirmation claim: RFC 8705 §3.1 (mTLS) or RFC 9449 §6.1 (DPoP). */
export type Confirmation = { 'x5t#S256': string } | { jkt: string };

/** Claims of a task token (RFC 9068 §2.2 + RFC 9396 §9.1 + the grant's own). */
export interface TaskTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  client_id: string;
  grant: string;
  txn: string;
  scope: string;
  authorization_details: TaskAuthorizationDetail[];
  cnf?: Confirmation;
}
