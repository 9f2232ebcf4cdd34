import { isDeepStrictEqual } from 'node:util';
import type { Grant } from '../grants/store.js';
import type { GrantedIntent } from '../protocol/intent.js';
import { TXN_TOKEN_TYP, txnTokenClaimsSchema, type TxnRequestContext, type TxnTokenClaims } from '../protocol/txn-token.js';
import { InvalidToken } from '../errors.js';
import { isGrantId } from '../grants/ids.js';
import type { Clock } from '../util/clock.js';
import { timeClaimsProblem } from './time-claims.js';
import { verifiedPayload, type VerificationKeys } from './verify.js';
import { toSeconds } from '../util/clock.js';
import type { SigningKey } from './keyring.js';
import { signOffThread } from './mint.js';

export interface TxnTokenInput {
  issuer: string;
  /** The configured trust domain: the token's `aud`. */
  trustDomain: string;
  workloadId: string;
  grantId: string;
  jti: string;
  intent: GrantedIntent;
  /** ms since epoch */
  issuedAt: number;
  expiresAt: number;
  rctx: TxnRequestContext;
}

/**
 * The claims of a Txn-Token (draft-ietf-oauth-transaction-tokens, "JWT Body Claims"): the
 * workload is the subject and the requesting workload (it asked for its own token); `scope` is
 * the task's purpose and `tctx` its granted actions and resources.
 */
export function txnTokenClaims(input: TxnTokenInput): TxnTokenClaims {
  const { intent } = input;
  return {
    iss: input.issuer,
    iat: toSeconds(input.issuedAt),
    exp: toSeconds(input.expiresAt),
    aud: input.trustDomain,
    txn: intent.task,
    sub: input.workloadId,
    scope: intent.purpose,
    req_wl: input.workloadId,
    tctx: { actions: intent.actions, resources: intent.resources },
    rctx: input.rctx,
    jti: input.jti,
    grant: input.grantId,
  };
}

/** Signs a Txn-Token: header alg, kid and typ txntoken+jwt. */
export const signTxnToken = (claims: TxnTokenClaims, key: SigningKey): Promise<string> => signOffThread(claims, key, TXN_TOKEN_TYP);

/**
 * Why a verified Txn-Token is not one its grant's record vouches for, or undefined when it is
 * (as tokens/record-match.ts for task tokens): subject, audience, task, purpose and context must
 * be the record's, and the token the grant's one token with its recorded expiry.
 */
export function txnRecordMismatch(claims: TxnTokenClaims, grant: Grant): string | undefined {
  const recorded = {
    sub: grant.workload,
    req_wl: grant.workload,
    aud: grant.audience,
    txn: grant.task,
    scope: grant.purpose,
    tctx: { actions: grant.actions, resources: grant.resources },
    grant: grant.id,
    jti: grant.token_jti,
    exp: Math.floor(grant.token_exp / 1000),
  };
  for (const [name, value] of Object.entries(recorded)) {
    if (!isDeepStrictEqual(claims[name as keyof TxnTokenClaims], value)) return `${name} differs from the grant record`;
  }
  if (grant.cnf) return 'the grant is bound, and Txn-Tokens never are';
  return undefined;
}

/**
 * Verifies Txn-Tokens this broker (or another instance) minted when they come back to it
 * (introspection): the JWS checks of task tokens with `typ` txntoken+jwt, claims of the
 * Txn-Token shape, `iss` exact, not expired. The audience is the trust domain's business.
 */
export class TxnTokenVerifier {
  constructor(private readonly opts: { issuer: string; leewayMs: number; clock: Clock; keys: VerificationKeys }) {}

  async verify(token: string): Promise<TxnTokenClaims> {
    const parsed = txnTokenClaimsSchema.safeParse(await verifiedPayload(token, TXN_TOKEN_TYP, 'Txn-Token', this.opts.keys));
    if (!parsed.success) throw new InvalidToken('the token does not carry Txn-Token claims');
    const claims = parsed.data;
    if (claims.iss !== this.opts.issuer) throw new InvalidToken('the token was issued by another issuer');
    if (!isGrantId(claims.grant)) throw new InvalidToken('the token does not name a grant');
    const problem = timeClaimsProblem(claims, this.opts.clock(), this.opts.leewayMs);
    if (problem) throw new InvalidToken(problem === 'expired' ? 'the token has expired' : 'the token is not valid yet');
    return claims;
  }
}
