import { verify as verifySignature } from 'node:crypto';
import { JoseParseError, parseCompactJws } from '../protocol/jose-strict.js';
import { MAX_TASK_TOKEN_BYTES } from '../protocol/limits.js';
import { InvalidTaskToken } from './errors.js';
import type { JwksCache, TaskTokenAlgorithm } from './jwks.js';

const FORBIDDEN_HEADER = ['jku', 'x5u', 'jwk', 'x5c', 'b64', 'crit'];

/** What a token of one kind must be before its claims are read. */
export interface JwsExpectation {
  /** The header `typ` (compared case-insensitively, with or without `application/`, RFC 8725 §3.11). */
  typ: string;
  /** How error messages name the token: "task token", "Txn-Token". */
  kind: string;
  algorithms: readonly TaskTokenAlgorithm[];
  jwks: JwksCache;
}

/**
 * The payload of a broker-signed compact JWS, after the checks every token kind shares: strict
 * JOSE parsing before any key lookup (DESIGN.md "Standards to follow"), `alg` allowed, `typ`
 * exact, no `jku`/`x5u`/`jwk`/`x5c`/`b64`/`crit`, a `kid` the JWKS publishes for that alg, and
 * the signature. Claims are the caller's.
 */
export async function verifiedJwsPayload(token: string, expect: JwsExpectation): Promise<Record<string, unknown>> {
  const { kind, typ } = expect;
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TASK_TOKEN_BYTES) {
    throw new InvalidTaskToken('token_malformed', `the token is not a ${kind} (empty or too long)`);
  }
  let header: Record<string, unknown>;
  let payload: Record<string, unknown>;
  try {
    ({ header, payload } = parseCompactJws(token));
  } catch (e) {
    if (e instanceof JoseParseError) throw new InvalidTaskToken('token_malformed', `the token is not a well-formed JWS: ${e.message}`);
    throw e;
  }
  const alg = expect.algorithms.find((a) => a === header.alg);
  if (!alg) throw new InvalidTaskToken('algorithm_not_allowed', 'the token is not signed with an accepted algorithm');
  if (typeof header.typ !== 'string' || header.typ.toLowerCase().replace(/^application\//, '') !== typ) {
    throw new InvalidTaskToken('wrong_type', `the token is not a ${kind} (typ must be ${typ})`);
  }
  for (const name of FORBIDDEN_HEADER) {
    if (name in header) throw new InvalidTaskToken('token_malformed', `the token header carries "${name}", which ${kind}s never do`);
  }
  if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > 256) throw new InvalidTaskToken('unknown_key', 'the token names no signing key');

  // The signature, with the published key for kid (the key's alg must be the header's).
  const key = await expect.jwks.key(header.kid, alg);
  // node:crypto, synchronously (as the broker's own verifier): the segments are canonical base64url already.
  const dot = token.lastIndexOf('.');
  const data = Buffer.from(token.slice(0, dot));
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  let ok: boolean;
  try {
    ok =
      alg === 'ES256'
        ? signature.length === 64 && verifySignature('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
        : verifySignature(alg === 'EdDSA' ? null : 'sha256', data, key, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new InvalidTaskToken('bad_signature', 'the token signature does not verify');
  return payload;
}
