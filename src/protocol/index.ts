// The wire contract shared by the server, the SDK and the verifier. Imports nothing else of ours.
export * from './errors.js';
export * from './intent.js';
export * from './tasks.js';
export * from './claims.js';
export * from './limits.js';
export * from './unicode.js';
export * from './match.js';
export * from './denials.js';
export * from './discovery.js';
export * from './operator.js';
export * from './token.js';
export * from './txn-token.js';
