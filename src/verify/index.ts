// jit-broker/verify: the resource-server verifier of task tokens. Imports protocol/ and its own modules only.
export { createVerifier } from './verifier.js';
export type { IntrospectionOptions, VerifierOptions, VerifyOptions, VerifiedTask, VerifiedTxn, GrantedTaskIntent, Verifier } from './verifier.js';
export { TASK_TOKEN_ALGORITHMS, type TaskTokenAlgorithm } from './jwks.js';
export { certificateDer, x5tS256, type ClientCertificate } from './binding.js';
export type { Duration } from './duration.js';
export {
  TaskTokenError,
  InvalidTaskToken,
  IntentNotGranted,
  VerifierUnavailable,
  MissingTaskToken,
  InvalidDpopProof,
  challenge,
  type Challenge,
  type VerifyErrorCode,
  type BearerErrorCode,
} from './errors.js';
export { createNodeVerifier, createNodeTxnVerifier, bearerToken, authorizationToken, txnTokenHeader, dpopRequest, peerCertificate, sendChallenge, type NodeVerifyOptions } from './node.js';
export type { TlsOptions } from './http.js';
export type { Confirmation, TaskTokenClaims } from '../protocol/claims.js';
export { TXN_TOKEN_HEADER, TXN_TOKEN_TYP, type TxnTokenClaims, type TxnContext, type TxnRequestContext } from '../protocol/txn-token.js';
