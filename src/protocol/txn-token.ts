import { z } from 'zod';

/**
 * Transaction Tokens (draft-ietf-oauth-transaction-tokens): a short-lived JWT naming the
 * workload, the task and its granted context for the calls of one transaction inside a trust
 * domain. Issued by the token endpoint on request (RFC 8693 `requested_token_type`), sent
 * between workloads in the `Txn-Token` header, never in `Authorization`. Wire shapes only.
 */

/** The draft's "JWT Header": `typ` MUST be this. */
export const TXN_TOKEN_TYP = 'txntoken+jwt';
/** The draft's token type identifier (RFC 8693 `requested_token_type` and `issued_token_type`). */
export const TOKEN_TYPE_TXN_TOKEN = 'urn:ietf:params:oauth:token-type:txn_token';
/** RFC 8693 §2.2.1: the `token_type` of a token that is not an OAuth access token. */
export const TOKEN_TYPE_NOT_APPLICABLE = 'N_A';
/** The HTTP header a Txn-Token travels in (exactly one). */
export const TXN_TOKEN_HEADER = 'Txn-Token';

/** `tctx`: the granted intent the whole call chain works under (immutable). */
export const txnContextSchema = z.object({ actions: z.array(z.string()), resources: z.array(z.string()) });
export type TxnContext = z.infer<typeof txnContextSchema>;

/** `rctx`: where the request came from: the requester's address (when known) and how it was authenticated (evidence kind). */
export const txnRequestContextSchema = z.object({ req_ip: z.string().optional(), authn: z.string() });
export type TxnRequestContext = z.infer<typeof txnRequestContextSchema>;

/**
 * The claims of a Txn-Token (unknown members are dropped, not refused, as for task tokens): the draft's (`iss`, `iat`, `exp`, `aud` the trust domain, `txn` the
 * task id, `sub` the workload, `scope` the purpose, `req_wl`, `tctx`, `rctx`), plus `jti` and
 * `grant`, which tie the token to the grant that records it (introspection and revocation).
 */
export const txnTokenClaimsSchema = z
  .object({
    iss: z.string().min(1),
    iat: z.number().int().nonnegative(),
    exp: z.number().int().positive(),
    aud: z.string().min(1),
    txn: z.string().min(1),
    sub: z.string().min(1).max(2048),
    scope: z.string().min(1),
    req_wl: z.string().min(1),
    tctx: txnContextSchema,
    rctx: txnRequestContextSchema,
    jti: z.string().min(1).max(256),
    grant: z.string().min(1).max(256),
  });
export type TxnTokenClaims = z.infer<typeof txnTokenClaimsSchema>;
