import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { HttpClient } from './http.js';
import { InvalidTaskToken, VerifierUnavailable } from './errors.js';

/** Algorithms a task token may be signed with: asymmetric only (RFC 8725 §3.1, RFC 9068 §2.1). */
export const TASK_TOKEN_ALGORITHMS = ['ES256', 'EdDSA', 'RS256'] as const;
export type TaskTokenAlgorithm = (typeof TASK_TOKEN_ALGORITHMS)[number];

/** Keys one JWKS may hold at most (a broker publishes a few per instance). */
const MAX_KEYS = 256;

/**
 * Least time between two refetches for an unknown `kid` while the JWKS answers. Short, because a
 * broker replica that has just started signs with a key the cached set cannot know; bounded, so a
 * flood of junk kids costs at most one fetch per second (the longer `cooldownMs` still paces
 * attempts after a failed fetch).
 */
export const UNKNOWN_KID_REFETCH_MS = 1_000;

export interface JwksCacheOptions {
  uri: string;
  http: HttpClient;
  clock: () => number;
  algorithms: readonly TaskTokenAlgorithm[];
  /** Refetch in the background when the key set is this old (ms). */
  refreshMs: number;
  /** Serve cached keys at most this long after the last successful fetch (ms); then fail closed. */
  maxStaleMs: number;
  /**
   * At most one fetch attempt per this interval (ms) after a failed fetch, or to revive a stale set:
   * an outage cannot make a storm. An unknown kid against a working JWKS waits UNKNOWN_KID_REFETCH_MS
   * at most (or this, if shorter).
   */
  cooldownMs: number;
}

interface CachedKey {
  key: KeyObject;
  alg: TaskTokenAlgorithm;
}

/** The key type each algorithm needs (RFC 7518 §3.3: RSA keys of 2048 bits at least). */
function fits(key: KeyObject, alg: TaskTokenAlgorithm): boolean {
  const d = key.asymmetricKeyDetails;
  if (alg === 'ES256') return key.asymmetricKeyType === 'ec' && d?.namedCurve === 'prime256v1';
  if (alg === 'EdDSA') return key.asymmetricKeyType === 'ed25519';
  return key.asymmetricKeyType === 'rsa' && (d?.modulusLength ?? 0) >= 2048;
}

/**
 * The broker's published keys, following its rotation contract (DESIGN.md "Keys"): the next key
 * is published ahead of use and a retired key stays published past the last token it signed. So:
 *
 * - keys are fetched once and served from memory; never one fetch per verification;
 * - the set is refreshed in the background once it is `refreshMs` old (the call that notices
 *   does not wait);
 * - an unknown `kid` triggers a refetch (the caller waits), at most one per
 *   UNKNOWN_KID_REFETCH_MS (a replica that has just started is trusted within a second), or per
 *   `cooldownMs` after a failed fetch;
 * - with the JWKS unreachable, cached keys serve until `maxStaleMs` after the last successful
 *   fetch; after that every verification fails closed (503) until a fetch succeeds, with at most
 *   one attempt per `cooldownMs`;
 * - one fetch in flight at a time, however many callers wait; no timers.
 */
export class JwksCache {
  private keys = new Map<string, CachedKey>();
  private fetchedAt: number | undefined;
  private attemptedAt: number | undefined;
  /** Whether the last fetch attempt failed (then only `cooldownMs` paces attempts). */
  private lastFailed = false;
  private inflight: Promise<void> | undefined;
  /** Fetch attempts so far (successful or not). */
  fetches = 0;

  constructor(private readonly opts: JwksCacheOptions) {}

  /** The key for `kid`, checked to be a key for `alg`. Throws a TaskTokenError. */
  async key(kid: string, alg: TaskTokenAlgorithm): Promise<KeyObject> {
    let now = this.opts.clock();
    if (!this.fresh(now)) {
      if (this.mayAttempt(now)) await this.refresh().catch(() => undefined);
      now = this.opts.clock();
      if (!this.fresh(now)) {
        throw new VerifierUnavailable(
          'jwks_unavailable',
          this.fetchedAt === undefined ? "the issuer's signing keys could not be fetched" : "the issuer's signing keys could not be refreshed and the cached ones are too old",
        );
      }
    } else if (now - this.fetchedAt! >= this.opts.refreshMs && this.mayAttempt(now)) {
      void this.refresh().catch(() => undefined);
    }
    let found = this.keys.get(kid);
    if (!found && this.mayAttempt(now, this.lastFailed ? this.opts.cooldownMs : Math.min(UNKNOWN_KID_REFETCH_MS, this.opts.cooldownMs))) {
      // The broker publishes its next key ahead: a kid we do not know may be one it just started to use.
      await this.refresh().catch(() => undefined);
      if (this.fresh(this.opts.clock())) found = this.keys.get(kid);
    }
    if (!found) throw new InvalidTaskToken('unknown_key', 'the token was signed by a key the issuer does not publish');
    if (found.alg !== alg) throw new InvalidTaskToken('algorithm_not_allowed', "the token's algorithm is not its key's");
    return found.key;
  }

  /** Fetches the key set now (joining a fetch in flight). Rejects when the fetch fails. */
  refresh(): Promise<void> {
    if (!this.inflight) {
      this.attemptedAt = this.opts.clock();
      this.fetches++;
      this.inflight = this.load().then(
        () => {
          this.lastFailed = false;
          this.inflight = undefined;
        },
        (e: unknown) => {
          this.lastFailed = true;
          this.inflight = undefined;
          throw e;
        },
      );
    }
    return this.inflight;
  }

  private fresh(now: number): boolean {
    return this.fetchedAt !== undefined && now - this.fetchedAt <= this.opts.maxStaleMs;
  }

  /** A fetch may start (or be joined) now, `intervalMs` after the last attempt. */
  private mayAttempt(now: number, intervalMs = this.opts.cooldownMs): boolean {
    return this.inflight !== undefined || this.attemptedAt === undefined || now - this.attemptedAt >= intervalMs;
  }

  private async load(): Promise<void> {
    const res = await this.opts.http.request(this.opts.uri, { headers: { accept: 'application/jwk-set+json, application/json' } });
    if (res.status !== 200) throw new Error(`the JWKS answered HTTP ${res.status}`);
    const doc = JSON.parse(res.body) as unknown;
    const list = typeof doc === 'object' && doc !== null ? (doc as { keys?: unknown }).keys : undefined;
    if (!Array.isArray(list)) throw new Error('the JWKS is not a JWK Set');
    const keys = new Map<string, CachedKey>();
    for (const jwk of list.slice(0, MAX_KEYS) as unknown[]) {
      const usable = this.usable(jwk);
      if (usable) keys.set(usable.kid, usable.entry);
    }
    this.keys = keys;
    this.fetchedAt = this.opts.clock();
  }

  /** A published key we may verify with: a kid, an allowed asymmetric alg, for signatures, importable. */
  private usable(value: unknown): { kid: string; entry: CachedKey } | undefined {
    if (typeof value !== 'object' || value === null) return undefined;
    const jwk = value as JsonWebKey;
    const alg = this.opts.algorithms.find((a) => a === jwk.alg);
    if (!alg || typeof jwk.kid !== 'string' || jwk.kid.length === 0 || jwk.kid.length > 256) return undefined;
    if (jwk.use !== undefined && jwk.use !== 'sig') return undefined;
    if ('d' in jwk || 'k' in jwk || jwk.kty === 'oct') return undefined; // private or symmetric: never a verification key
    try {
      const key = createPublicKey({ key: jwk, format: 'jwk' });
      return fits(key, alg) ? { kid: jwk.kid, entry: { key, alg } } : undefined;
    } catch {
      return undefined;
    }
  }
}
