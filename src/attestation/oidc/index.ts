/**
 * Platform-token attestation: Kubernetes projected service-account tokens, GitHub Actions OIDC
 * tokens, or any OIDC issuer's ID tokens. One concept per file:
 *
 * - config.ts: the `attestation.oidc` schema;
 * - mappings.ts: verified claims → workload id and attributes (presets and templates);
 * - keys.ts: each issuer's key cache (bounded staleness, fail closed with a 503);
 * - verify.ts: token validation (STANDARDS §2.13, RFC 8725);
 * - this file: the attestor, with its cache of verified tokens, and the module export.
 */
import { createHash } from 'node:crypto';
import { AttestationFailed } from '../../errors.js';
import type { Attestor, AttestorDeps, AttestorModule, Workload } from '../attestor.js';
import { oidcConfigSchema, type OidcConfig } from './config.js';
import { createIssuerKeys, type IssuerState, type OidcIssuerStatus, type Resolver } from './keys.js';
import { mapClaims, type Claims } from './mappings.js';
import { hasExpired, timeProblem, verifyPlatformToken } from './verify.js';

export {
  DEFAULT_MAX_PLATFORM_TOKEN_BYTES,
  MAX_OIDC_LEEWAY_MS,
  oidcConfigSchema,
  oidcIdSpaces,
  PLATFORM_ALGORITHMS,
  publicJwksSchema,
  type OidcConfig,
  type OidcIssuerConfig,
  type OidcKeySource,
  type PlatformAlgorithm,
} from './config.js';
export { MAX_ATTRIBUTE_LENGTH, type OidcMapping } from './mappings.js';
export type { OidcIssuerStatus } from './keys.js';

export type OidcAttestor = Attestor<{ kind: 'oidc'; token: string }> & {
  /** Fetches every remote issuer's keys once; failures are recorded (see status()), never thrown. */
  warm(): Promise<void>;
  status(): OidcIssuerStatus[];
  /** Entries in the verified-token cache (for tests and metrics). */
  cacheSize(): number;
};

/**
 * Verified platform tokens, by SHA-256 of the token. Workloads reuse one token for its whole
 * life (Kubernetes refreshes projected tokens hourly), so caching the signature check saves an
 * ECDSA/RSA verify per request. An entry answers only while the issuer's key set is the very one
 * that verified it (a refresh or rotation invalidates it), and the time rules are re-checked on
 * every hit. Bounded: oldest entries leave first.
 */
export const VERIFIED_CACHE_MAX = 10_000;
/**
 * Expired entries of tokens that are never presented again would otherwise stay until the size cap
 * pushes them out: each insert examines this many entries of a sweep in insertion order (oldest
 * first) and drops the expired ones, so pruning costs O(1) per insert and reaches every entry.
 */
const VERIFIED_PRUNE_STEP = 8;

interface VerifiedToken {
  state: IssuerState;
  set: Resolver;
  claims: Claims;
  workload: Workload;
}

export function createOidcAttestor(config: OidcConfig, deps: AttestorDeps): OidcAttestor {
  const { clock } = deps;
  const maxTokenBytes = config.max_token_bytes;
  const issuers = createIssuerKeys(config, deps);

  const verified = new Map<string, VerifiedToken>();
  // A Map iterator stays valid across inserts and deletes (deleted entries are skipped, new ones
  // visited), so the sweep resumes where the previous insert left off.
  let sweep = verified.entries();

  function pruneExpired(nowMs: number): void {
    for (let step = 0; step < VERIFIED_PRUNE_STEP; step++) {
      const next = sweep.next();
      if (next.done) {
        sweep = verified.entries(); // a finished iterator never yields again: start a new pass
        continue;
      }
      const [digest, entry] = next.value;
      if (hasExpired(entry.claims.exp, entry.state.cfg, nowMs)) verified.delete(digest);
    }
  }

  async function attest(evidence: { kind: 'oidc'; token: string }): Promise<Workload> {
    const token = evidence.token;
    // The one platform-token size limit, before hashing or parsing (every path reads tokens here).
    if (typeof token !== 'string' || token.length === 0) throw new AttestationFailed('platform token is malformed: it is empty');
    if (token.length > maxTokenBytes || Buffer.byteLength(token, 'utf8') > maxTokenBytes)
      throw new AttestationFailed(`platform token is larger than ${maxTokenBytes} bytes (attestation.oidc.max_token_bytes)`);

    const digest = createHash('sha256').update(token).digest('base64url');
    const hit = verified.get(digest);
    if (hit) {
      const keys = await issuers.currentKeys(hit.state);
      if (keys === hit.set) {
        const problem = timeProblem(hit.claims, hit.state.cfg, clock());
        if (problem) {
          verified.delete(digest);
          throw problem;
        }
        return hit.workload;
      }
      verified.delete(digest); // the key set changed since: verify again
    }

    // 1–4. Issuer, typ, alg, kid, signature and claims.
    const { state, keys, claims } = await verifyPlatformToken(token, issuers, clock);
    const cfg = state.cfg;
    const exp = claims.exp as number;

    // 5. Claims → workload id and attributes.
    const mapped = mapClaims(claims, cfg.mapping, cfg.issuer);
    const workload: Workload = Object.freeze({
      id: mapped.id,
      kind: 'oidc',
      issuer: cfg.issuer,
      attributes: Object.freeze(mapped.attributes),
      evidenceExpiresAt: exp * 1000,
    });
    // Cache only what the current key set verified; after a refresh mid-verify, the next use
    // verifies again under the new set and is cached then.
    if (state.set === keys) {
      pruneExpired(clock());
      if (verified.size >= VERIFIED_CACHE_MAX) verified.delete(verified.keys().next().value as string);
      verified.set(digest, { state, set: state.set, claims, workload });
    }
    return workload;
  }

  return {
    kind: 'oidc',
    attest,
    notReady: issuers.notReady,
    status: issuers.status,
    cacheSize: () => verified.size,
    warm: issuers.warm,
    close: issuers.close,
  };
}

export const oidcAttestor: AttestorModule<OidcConfig, { kind: 'oidc'; token: string }> = {
  kind: 'oidc',
  configSchema: oidcConfigSchema,
  create: createOidcAttestor,
};
