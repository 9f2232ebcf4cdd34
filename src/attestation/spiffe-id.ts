/**
 * SPIFFE IDs (SPIFFE-ID spec §2; X509-SVID §2, §3.1, §5.2).
 *
 * `spiffe://<trust-domain>/<path>`: the scheme is exactly `spiffe` (lowercase, as go-spiffe
 * requires), the trust domain only `[a-z0-9._-]` (so no uppercase, port, userinfo or
 * percent-encoding), path segments only `[A-Za-z0-9._-]`, never empty, `.` or `..`, no trailing
 * slash, no query or fragment, at most 2048 bytes in all and 255 for the trust domain.
 */

export const SPIFFE_PREFIX = 'spiffe://';
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface SpiffeId {
  id: string;
  trustDomain: string;
  /** The path including its leading `/`; empty for a trust domain's own id. */
  path: string;
}

export type SpiffeIdResult = { ok: true; value: SpiffeId } | { ok: false; problem: string };

/** Why `name` is not a valid trust domain name, or undefined when it is. */
export function trustDomainProblem(name: string): string | undefined {
  if (name.length === 0) return 'the trust domain is empty';
  if (name.length > MAX_TRUST_DOMAIN_BYTES) return `the trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`;
  if (name.includes('[') || name.includes(']')) return 'the trust domain may only contain a-z, 0-9, ".", "-" and "_" (no IP literal)';
  if (name.includes('@')) return 'the trust domain must not carry userinfo';
  if (name.includes(':')) return 'the trust domain must not carry a port';
  if (name.includes('%')) return 'the trust domain must not be percent-encoded';
  if (/[A-Z]/.test(name)) return 'the trust domain must be lowercase';
  if (!TRUST_DOMAIN.test(name)) return 'the trust domain may only contain a-z, 0-9, ".", "-" and "_"';
  return undefined;
}

/**
 * Parses a SPIFFE ID. `requirePath` demands a non-root path, as a leaf SVID's id must have
 * (X509-SVID §3.1); a trust domain's own id (`spiffe://td`) is valid only without it.
 */
export function parseSpiffeId(input: string, opts: { requirePath?: boolean } = {}): SpiffeIdResult {
  const fail = (problem: string): SpiffeIdResult => ({ ok: false, problem });
  if (Buffer.byteLength(input, 'utf8') > MAX_ID_BYTES) return fail(`a SPIFFE ID is at most ${MAX_ID_BYTES} bytes`);
  if (!input.startsWith(SPIFFE_PREFIX)) {
    return fail(/^spiffe:\/\//i.test(input) ? 'the scheme must be "spiffe" in lowercase' : 'the scheme must be "spiffe://"');
  }
  const rest = input.slice(SPIFFE_PREFIX.length);
  if (rest.includes('?')) return fail('a SPIFFE ID must not have a query');
  if (rest.includes('#')) return fail('a SPIFFE ID must not have a fragment');
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) return fail(tdProblem);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (path === '' || path === '/') {
    if (path === '/') return fail('the path must not end with "/"');
    if (opts.requirePath) return fail('a workload SPIFFE ID must have a path (spiffe://trust-domain/path)');
    return { ok: true, value: { id: input, trustDomain, path } };
  }
  if (path.endsWith('/')) return fail('the path must not end with "/"');
  for (const segment of path.slice(1).split('/')) {
    if (segment === '') return fail('the path must not contain empty segments ("//")');
    if (segment === '.' || segment === '..') return fail('the path must not contain "." or ".." segments');
    if (segment.includes('%')) return fail('the path must not be percent-encoded');
    if (!SEGMENT.test(segment)) return fail('path segments may only contain A-Z, a-z, 0-9, ".", "-" and "_"');
  }
  return { ok: true, value: { id: input, trustDomain, path } };
}
