/**
 * Each issuer's signing keys: a small per-issuer cache with bounded staleness (not jose's remote
 * JWKS set). Refreshed after `ttl`, kept while a refresh fails up to `max_stale`, refetched at most
 * once per `refresh_cooldown` on an unknown `kid`, and missing keys fail closed with a 503.
 * Inline (`jwks`) and file (`jwks_file`) key sets are read once, at start.
 */
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, errors as joseErrors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import { ConfigError, Unavailable } from '../../errors.js';
import type { AttestorDeps } from '../attestor.js';
import { fetchUrlProblem, publicJwksSchema, type OidcConfig, type OidcIssuerConfig } from './config.js';

const MAX_JWKS_BYTES = 512 * 1024;

const discoveryDocSchema = z.looseObject({ issuer: z.string(), jwks_uri: z.string() });

export type Resolver = ReturnType<typeof createLocalJWKSet>;

export interface IssuerState {
  cfg: OidcIssuerConfig;
  remote: boolean;
  set?: Resolver;
  keys: number;
  fetchedAt?: number;
  lastAttemptAt?: number;
  lastError?: string;
  inflight?: Promise<void>;
}

export interface OidcIssuerStatus {
  issuer: string;
  keys: number;
  fetched_at?: number;
  error?: string;
}

export function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads a response body up to `max` bytes. */
async function readBounded(res: Response, max: number, what: string): Promise<string> {
  const length = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(length) && length > max) throw new Error(`${what} is larger than ${max} bytes`);
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`${what} is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function validateJwks(value: unknown, what: string): JSONWebKeySet {
  const parsed = publicJwksSchema.safeParse(value);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length ? ` at ${first.path.join('.')}` : '';
    throw new Error(`${what} is not a valid public JWKS${where}: ${first?.message ?? 'invalid'}`);
  }
  if (parsed.data.keys.length === 0) throw new Error(`${what} has no keys`);
  return parsed.data as JSONWebKeySet;
}

export interface IssuerKeys {
  /** The state of the issuer whose exact `iss` this is, if it is configured. */
  get(issuer: string): IssuerState | undefined;
  /** The issuer's key resolver; Unavailable when none is usable. */
  currentKeys(state: IssuerState): Promise<Resolver>;
  /** A jose key resolver that refetches once per cooldown when the token names an unknown key. */
  resolverFor(state: IssuerState, initial: Resolver): JWTVerifyGetKey;
  /** Fetches every remote issuer's keys once; failures are recorded (see status()), never thrown. */
  warm(): Promise<void>;
  status(): OidcIssuerStatus[];
  notReady(): string | undefined;
  close(): void;
}

/** The key cache of every configured issuer; inline and file key sets that are invalid throw ConfigError. */
export function createIssuerKeys(config: OidcConfig, deps: AttestorDeps): IssuerKeys {
  const { clock, log } = deps;
  const doFetch = deps.fetch ?? fetch;
  const closing = new AbortController();

  const states = new Map<string, IssuerState>();
  config.issuers.forEach((cfg, n) => {
    const state: IssuerState = { cfg, remote: cfg.keys.source === 'discovery' || cfg.keys.source === 'jwks_uri', keys: 0 };
    if (cfg.keys.source === 'jwks' || cfg.keys.source === 'jwks_file') {
      const where = `attestation.oidc.issuers.${n}.${cfg.keys.source}`;
      try {
        const jwks =
          cfg.keys.source === 'jwks'
            ? validateJwks(cfg.keys.jwks, 'inline JWKS')
            : validateJwks(JSON.parse(readFileSync(cfg.keys.path, 'utf8')) as unknown, `JWKS file ${cfg.keys.path}`);
        state.set = createLocalJWKSet(jwks);
        state.keys = jwks.keys.length;
        state.fetchedAt = clock();
      } catch (e) {
        throw new ConfigError([`${where}: ${describeError(e)}`]);
      }
    }
    states.set(cfg.issuer, state);
  });

  async function fetchJson(url: string, what: string, timeoutMs: number): Promise<unknown> {
    // An explicit controller and timer, not AbortSignal.any([AbortSignal.timeout(ms), …]): on
    // Node 20 a timeout signal inside any() can be garbage-collected before it fires
    // (nodejs/node#57736), and any() would keep every per-fetch signal tied to the long-lived one.
    const ctrl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort(new Error(`timed out after ${timeoutMs}ms`));
    }, timeoutMs);
    const onClose = () => ctrl.abort(new Error('attestor closed'));
    if (closing.signal.aborted) onClose();
    else closing.signal.addEventListener('abort', onClose, { once: true });
    try {
      const res = await doFetch(url, { signal: ctrl.signal, redirect: 'error', headers: { accept: 'application/json' } });
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw new Error(`${what} ${url} returned HTTP ${res.status}`);
      }
      const text = await readBounded(res, MAX_JWKS_BYTES, `${what} ${url}`);
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new Error(`${what} ${url} is not valid JSON`);
      }
    } catch (e) {
      if (ctrl.signal.aborted) {
        throw new Error(`${what} ${url} ${timedOut ? `timed out after ${timeoutMs}ms` : 'was aborted (attestor closed)'}`, { cause: e });
      }
      if (e instanceof Error && e.message.startsWith(what)) throw e;
      const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : '';
      throw new Error(`${what} ${url} failed: ${describeError(e)}${cause}`, { cause: e });
    } finally {
      clearTimeout(timer);
      closing.signal.removeEventListener('abort', onClose);
    }
  }

  async function loadRemote(cfg: OidcIssuerConfig): Promise<JSONWebKeySet> {
    const timeout = cfg.key_cache.fetch_timeout;
    let jwksUri: string;
    if (cfg.keys.source === 'jwks_uri') jwksUri = cfg.keys.url;
    else {
      const url = `${cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
      const doc = discoveryDocSchema.safeParse(await fetchJson(url, 'OIDC discovery document', timeout));
      if (!doc.success) throw new Error(`OIDC discovery document ${url} lacks issuer or jwks_uri`);
      if (doc.data.issuer !== cfg.issuer)
        throw new Error(`OIDC discovery document ${url} names issuer ${doc.data.issuer.slice(0, 300)}, not ${cfg.issuer}`);
      const problem = fetchUrlProblem(doc.data.jwks_uri);
      if (problem) throw new Error(`OIDC discovery document ${url} has jwks_uri that ${problem}`);
      jwksUri = doc.data.jwks_uri;
    }
    return validateJwks(await fetchJson(jwksUri, 'JWKS', timeout), `JWKS ${jwksUri}`);
  }

  /** Starts (or joins) this issuer's one in-flight fetch. Never rejects. */
  function refresh(state: IssuerState): Promise<void> {
    if (state.inflight) return state.inflight;
    state.lastAttemptAt = clock();
    state.inflight = (async () => {
      try {
        const jwks = await loadRemote(state.cfg);
        state.set = createLocalJWKSet(jwks);
        state.keys = jwks.keys.length;
        state.fetchedAt = clock();
        state.lastError = undefined;
        log.info({ issuer: state.cfg.issuer, keys: jwks.keys.length, kids: jwks.keys.map((k) => k.kid) }, 'oidc issuer keys fetched');
      } catch (e) {
        state.lastError = describeError(e);
        log.warn({ issuer: state.cfg.issuer, err: state.lastError }, 'oidc issuer keys could not be fetched');
      } finally {
        state.inflight = undefined;
      }
    })();
    return state.inflight;
  }

  const coolingDown = (state: IssuerState, now: number) =>
    state.lastAttemptAt !== undefined && now - state.lastAttemptAt < state.cfg.key_cache.refresh_cooldown;

  const usable = (state: IssuerState, now: number) =>
    state.set !== undefined && (!state.remote || (state.fetchedAt !== undefined && now - state.fetchedAt <= state.cfg.key_cache.max_stale));

  /**
   * The issuer's key resolver; Unavailable when none is usable. Keys older than ttl but within
   * max_stale are used at once while a refresh runs in the background, so a slow or failing
   * issuer delays no request while its cached keys may still be used; only keys past max_stale
   * (or none yet) make the request wait for the fetch.
   */
  async function currentKeys(state: IssuerState): Promise<Resolver> {
    if (!state.remote) return state.set as Resolver;
    const { ttl } = state.cfg.key_cache;
    const now = clock();
    if (state.set && state.fetchedAt !== undefined && now - state.fetchedAt <= ttl) return state.set;
    if (usable(state, now)) {
      if (!state.inflight && !coolingDown(state, now)) void refresh(state);
      return state.set as Resolver;
    }
    if (state.inflight) await state.inflight;
    else if (!coolingDown(state, now)) await refresh(state);
    if (usable(state, clock())) return state.set as Resolver;
    throw new Unavailable(`signing keys of issuer ${state.cfg.issuer} are unavailable`, {
      detail: state.lastError ?? `keys are older than max_stale (${state.cfg.key_cache.max_stale}ms)`,
    });
  }

  /** A jose key resolver that refetches once per cooldown when the token names an unknown key. */
  function resolverFor(state: IssuerState, initial: Resolver): JWTVerifyGetKey {
    return async (header, token) => {
      try {
        return await initial(header, token);
      } catch (e) {
        if (!(e instanceof joseErrors.JWKSNoMatchingKey) || !state.remote) throw e;
        if (state.inflight) await state.inflight;
        else if (!coolingDown(state, clock())) {
          await refresh(state);
          if (state.lastError !== undefined)
            throw new Unavailable(`signing keys of issuer ${state.cfg.issuer} are unavailable`, {
              detail: `token names an unknown key and the refresh failed: ${state.lastError}`,
            });
        } else throw e;
        if (!state.set || state.set === initial) throw e;
        return state.set(header, token);
      }
    };
  }

  function status(): OidcIssuerStatus[] {
    return [...states.values()].map((s) => ({
      issuer: s.cfg.issuer,
      keys: s.set ? s.keys : 0,
      ...(s.fetchedAt !== undefined ? { fetched_at: s.fetchedAt } : {}),
      ...(s.lastError !== undefined ? { error: s.lastError } : {}),
    }));
  }

  function notReady(): string | undefined {
    if (states.size === 0) return undefined;
    const now = clock();
    const problems: string[] = [];
    for (const s of states.values()) {
      if (usable(s, now)) return undefined;
      problems.push(`${s.cfg.issuer}: ${s.lastError ?? (s.set ? 'keys are older than max_stale' : 'keys not fetched yet')}`);
    }
    // Readiness probes drive recovery: retry in the background (shared, cooldown-bounded).
    for (const s of states.values()) if (s.remote && !s.inflight && !coolingDown(s, now)) void refresh(s);
    return `no OIDC issuer has usable signing keys (${problems.join('; ')})`;
  }

  return {
    get: (issuer) => states.get(issuer),
    currentKeys,
    resolverFor,
    status,
    notReady,
    async warm() {
      await Promise.all([...states.values()].filter((s) => s.remote).map((s) => refresh(s)));
    },
    close() {
      closing.abort();
    },
  };
}
