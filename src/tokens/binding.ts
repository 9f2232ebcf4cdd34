import { createHash } from 'node:crypto';
import type { X509Evidence } from '../attestation/x509.js';
import { InvalidToken } from '../errors.js';
import type { Confirmation, TaskTokenClaims } from '../protocol/claims.js';

/** RFC 8705 §3.1: a certificate's `x5t#S256`, the base64url SHA-256 of its DER. */
export const certificateThumbprint = (der: Uint8Array): string => createHash('sha256').update(der).digest('base64url');

/** Whether two bindings (`cnf`) are the same key: both absent, or the same thumbprint. */
export function sameConfirmation(a: Confirmation | undefined, b: Confirmation | undefined): boolean {
  if (!a || !b) return a === b;
  if ('x5t#S256' in a) return 'x5t#S256' in b && a['x5t#S256'] === b['x5t#S256'];
  return 'jkt' in b && a.jkt === b.jkt;
}

/**
 * A bound token may only be used with its key (RFC 8705 §3): the client certificate on this
 * connection (or from the trusted proxy) must be the one its `cnf.x5t#S256` names.
 */
export function checkBinding(
  claims: TaskTokenClaims,
  certificate: X509Evidence | undefined,
  failure: (message: string) => Error = (m) => new InvalidToken(m),
): void {
  const cnf = claims.cnf;
  if (!cnf) return;
  if (!('x5t#S256' in cnf)) throw failure('this token is bound to a proof-of-possession key this broker does not check here');
  const leaf = certificate && !certificate.problem ? certificate.chain[0] : undefined;
  const thumbprint = leaf ? certificateThumbprint(leaf) : undefined;
  if (thumbprint !== cnf['x5t#S256']) throw failure('this token is bound to a client certificate: present that certificate');
}
