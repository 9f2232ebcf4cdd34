// jit-broker/verify: the resource-server verifier of task tokens. Imports protocol/ and its own modules only.
export { createVerifier } from './verifier.js';
export type { IntrospectionOptions, VerifierOptions, VerifyOptions, VerifiedTask, GrantedTaskIntent, Verifier } from './verifier.js';
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
export { createNodeVerifier, bearerToken, authorizationToken, dpopRequest, peerCertificate, sendChallenge, type NodeVerifyOptions } from './node.js';
export type { TlsOptions } from './http.js';
export type { Confirmation, TaskTokenClaims } from '../protocol/claims.js';
