// jit-broker/sdk: the workload client. Imports only src/protocol/ and its own modules.
export { BrokerClient, Task, type BrokerClientOptions, type StartTaskOptions, type CallOptions, type RetryOptions, type Duration } from './client.js';
export { mtls, platformToken, githubActions, type AttestationSource, type MtlsSource, type PlatformTokenSource, type TlsMaterial } from './attestation.js';
export { DpopKey, SDK_DPOP_ALGORITHMS, type SdkDpopAlgorithm } from './dpop.js';
export { ManualClock, systemClock, type SdkClock } from './clock.js';
export {
  BrokerClientError,
  BrokerResponseError,
  ReplayDetectedError,
  BrokerUnreachableError,
  TaskEndedError,
  CertificateExpiredError,
  AttestationSourceError,
  AbortedError,
} from './errors.js';
export type { IntentRequest, GrantedIntent } from '../protocol/intent.js';
export type { ErrorCode, ErrorReason } from '../protocol/errors.js';
export { RENEW_RETRY_WINDOW_MS } from '../protocol/tasks.js';
