import { TASK_TOKEN_TYP, taskTokenClaimsSchema, type Confirmation, type TaskTokenClaims } from '../protocol/claims.js';
import { checkDpopProof, DpopProofError } from '../protocol/dpop.js';
import { resourceProblem } from '../protocol/intent.js';
import { compileActions, compileGlob, type Matcher } from '../protocol/match.js';
import { certificateDer, x5tS256, type ClientCertificate } from './binding.js';
import { durationMs, type Duration } from './duration.js';
import { IntentNotGranted, InvalidDpopProof, InvalidTaskToken, VerifierUnavailable } from './errors.js';
import { HttpClient, type TlsOptions } from './http.js';
import { Introspector } from './introspection.js';
import { verifiedJwsPayload } from './jws.js';
import { TXN_TOKEN_TYP, txnTokenClaimsSchema, type TxnContext, type TxnRequestContext, type TxnTokenClaims } from '../protocol/txn-token.js';
import { JwksCache, TASK_TOKEN_ALGORITHMS, type TaskTokenAlgorithm } from './jwks.js';

export interface IntrospectionOptions {
  /** The broker's RFC 7662 endpoint, e.g. https://broker.example/oauth2/introspect. */
  url: string;
  /** This resource server's bearer credential (configured on the broker as `resource_servers[].credential_sha256`). */
  credential?: string;
  /** Or mTLS: this resource server's client certificate (configured as `resource_servers[].workload`). */
  mtls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer };
  /** How long an answer is reused: default 5 s, at most 30 s, never past the token's expiry. */
  cacheTtl?: Duration;
  /** What an unreachable or broken introspection endpoint means: `fail` (default, 503) or `allow` (signature and claims decide alone). */
  onError?: 'fail' | 'allow';
}

export interface VerifierOptions {
  /** The broker's issuer identifier, compared exactly with `iss`. */
  issuer: string;
  /** This resource server's audience (or several): the token's `aud` must be one. */
  audience: string | readonly string[];
  /** Default `<issuer>/.well-known/jwks.json`. */
  jwksUri?: string;
  /** CA to trust for the JWKS (and introspection, unless it has its own) over HTTPS. */
  tls?: Pick<TlsOptions, 'ca'>;
  introspection?: IntrospectionOptions;
  /** Clock skew allowed on exp/nbf/iat: default 30 s, at most 60 s. */
  leeway?: Duration;
  /** Accepted algorithms, a subset of ES256, EdDSA, RS256 (the default: all three). */
  algorithms?: readonly TaskTokenAlgorithm[];
  /** Only bound tokens (cnf) are accepted. Default false: a bound token is always checked. */
  requireBinding?: boolean;
  /** With the JWKS unreachable, cached keys serve this long after the last good fetch: default 10 min. */
  jwksMaxStale?: Duration;
  /** Background refresh of the key set once it is this old: default 5 min (below jwksMaxStale). */
  jwksRefresh?: Duration;
  /** At most one JWKS fetch per this interval (unknown kid, outage): default 30 s. */
  jwksCooldown?: Duration;
  /** The trust domain whose Transaction Tokens `verifyTxnToken` accepts (their `aud`); without it, it refuses to run. */
  trustDomain?: string;
  /** Milliseconds since the epoch; default Date.now. For tests and simulations. */
  clock?: () => number;
  /** Timeout of each outbound request: default 5 s. */
  timeout?: Duration;
  /** DPoP proofs (RFC 9449) sent with DPoP-bound tokens. */
  dpop?: {
    /** How far a proof's `iat` may be from now, either way: default 60 s, at most 5 min. */
    iatWindow?: Duration;
    /** Proofs (jti) remembered against replay, for as long as each is acceptable: default 100,000. */
    maxTrackedProofs?: number;
  };
}

export interface VerifyOptions {
  /** Action(s) the request performs: each must be granted. */
  action?: string | readonly string[];
  /** Resource(s) the request acts on: each must be covered by a granted resource pattern. */
  resource?: string | readonly string[];
  /** The TLS peer's certificate: required to use a bound token (cnf.x5t#S256). */
  clientCertificate?: ClientCertificate | null;
  /** The `Authorization` scheme the token came with: `DPoP` for a DPoP-bound token (RFC 9449 §7.1), default `Bearer`. */
  scheme?: 'Bearer' | 'DPoP';
  /**
   * What a DPoP-bound token is checked against: the request's `DPoP` header, its method, and its
   * URL as clients address it (derive it from this server's configured public origin, not the Host header).
   */
  dpop?: { proof: string | undefined; method: string; url: string };
}

/** The granted intent a token carries (authorization_details of type jit_task). */
export interface GrantedTaskIntent {
  audience: string;
  actions: readonly string[];
  resources: readonly string[];
  purpose: string;
}

export interface VerifiedTask {
  /** The workload id (`sub`), e.g. spiffe://example.org/ns/payments/sa/api. */
  workload: string;
  /** The task id (`txn`). */
  task: string;
  /** The grant id. */
  grant: string;
  /** The token id (`jti`). */
  tokenId: string;
  intent: GrantedTaskIntent;
  issuedAt: Date;
  expiresAt: Date;
  /** The binding the token carries, checked against the TLS peer's certificate. */
  confirmation?: Confirmation;
  /** True when introspection answered that the grant is live (false: not configured, or allowed on error). */
  introspected: boolean;
  claims: Readonly<TaskTokenClaims>;
}

/** A verified Transaction Token (draft-ietf-oauth-transaction-tokens), as received in the `Txn-Token` header. */
export interface VerifiedTxn {
  /** The workload the transaction runs for (`sub`). */
  workload: string;
  /** The workload that requested the token (`req_wl`). */
  requester: string;
  /** The transaction id (`txn`): the task id. */
  transaction: string;
  /** The purpose (`scope`). */
  purpose: string;
  /** The granted actions and resources the call chain works under (`tctx`). */
  context: TxnContext;
  /** The requester's address and evidence kind at issuance (`rctx`). */
  requestContext: TxnRequestContext;
  /** The grant id. */
  grant: string;
  issuedAt: Date;
  expiresAt: Date;
  /** True when introspection answered that the grant is live (false: not configured, or allowed on error). */
  introspected: boolean;
  claims: Readonly<TxnTokenClaims>;
}

export interface Verifier {
  verify(token: string, options?: VerifyOptions): Promise<VerifiedTask>;
  /** A Transaction Token from the `Txn-Token` header: typ txntoken+jwt, aud the trust domain (options.trustDomain), signature, time, liveness. */
  verifyTxnToken(token: string): Promise<VerifiedTxn>;
  /** Fetch the JWKS now (e.g. at start, to fail early). Rejects when it cannot. */
  warmUp(): Promise<void>;
  /** Drop keep-alive connections. */
  close(): void;
  /** Counters for monitoring and tests. */
  readonly stats: { readonly jwksFetches: number; readonly introspections: number };
}

const DEFAULT_LEEWAY_MS = 30_000;
const MAX_LEEWAY_MS = 60_000;
const MAX_INTROSPECTION_CACHE_MS = 30_000;

const globs = new Map<string, Matcher>();
/** Compiled globs are reused (a regex per pattern); the cache is bounded. */
function glob(pattern: string): Matcher {
  let m = globs.get(pattern);
  if (!m) {
    if (globs.size >= 1024) globs.clear();
    m = compileGlob(pattern);
    globs.set(pattern, m);
  }
  return m;
}

const asList = (v: string | readonly string[] | undefined): readonly string[] => (v === undefined ? [] : typeof v === 'string' ? [v] : v);

/**
 * A resource server's verifier of jit-broker task tokens (RFC 9068 §4, RFC 8725, RFC 8705 §3,
 * RFC 7662). Every failure is a typed TaskTokenError; nothing fails open unless configured.
 */
export function createVerifier(options: VerifierOptions): Verifier {
  const clock = options.clock ?? Date.now;
  if (!options.issuer) throw new TypeError('createVerifier: issuer is required');
  const audiences = new Set(asList(options.audience as string | readonly string[]));
  if (audiences.size === 0) throw new TypeError('createVerifier: audience is required');
  const leewayMs = options.leeway === undefined ? DEFAULT_LEEWAY_MS : durationMs(options.leeway, 'leeway');
  if (leewayMs > MAX_LEEWAY_MS) throw new TypeError('createVerifier: leeway must be at most 60 s');
  const algorithms = options.algorithms ?? TASK_TOKEN_ALGORITHMS;
  for (const a of algorithms) if (!TASK_TOKEN_ALGORITHMS.includes(a)) throw new TypeError(`createVerifier: algorithm ${String(a)} is not allowed`);
  const maxStaleMs = options.jwksMaxStale === undefined ? 10 * 60_000 : durationMs(options.jwksMaxStale, 'jwksMaxStale');
  const refreshMs = Math.min(options.jwksRefresh === undefined ? 5 * 60_000 : durationMs(options.jwksRefresh, 'jwksRefresh'), maxStaleMs);
  const cooldownMs = options.jwksCooldown === undefined ? 30_000 : durationMs(options.jwksCooldown, 'jwksCooldown');
  const timeoutMs = options.timeout === undefined ? 5_000 : durationMs(options.timeout, 'timeout');
  const dpopWindowMs = options.dpop?.iatWindow === undefined ? 60_000 : durationMs(options.dpop.iatWindow, 'dpop.iatWindow');
  if (dpopWindowMs > 300_000) throw new TypeError('createVerifier: dpop.iatWindow must be at most 5 min');
  const usedProofs = new UsedProofs(options.dpop?.maxTrackedProofs ?? 100_000);
  const jwksUri = options.jwksUri ?? `${options.issuer.replace(/\/+$/, '')}/.well-known/jwks.json`;

  const jwksHttp = new HttpClient({ ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}) }, timeoutMs);
  const jwks = new JwksCache({ uri: jwksUri, http: jwksHttp, clock, algorithms, refreshMs, maxStaleMs, cooldownMs });

  let introspector: Introspector | undefined;
  let introspectionHttp: HttpClient | undefined;
  const onIntrospectionError = options.introspection?.onError ?? 'fail';
  if (options.introspection) {
    const i = options.introspection;
    if ((i.credential === undefined) === (i.mtls === undefined)) throw new TypeError('createVerifier: introspection needs exactly one of credential or mtls');
    const cacheTtlMs = i.cacheTtl === undefined ? 5_000 : durationMs(i.cacheTtl, 'introspection.cacheTtl');
    if (cacheTtlMs > MAX_INTROSPECTION_CACHE_MS) throw new TypeError('createVerifier: introspection.cacheTtl must be at most 30 s');
    const ca = i.mtls?.ca ?? options.tls?.ca;
    introspectionHttp = new HttpClient({ ...(ca !== undefined ? { ca } : {}), ...(i.mtls ? { cert: i.mtls.cert, key: i.mtls.key } : {}) }, timeoutMs);
    introspector = new Introspector({ url: i.url, http: introspectionHttp, clock, cacheTtlMs, ...(i.credential !== undefined ? { credential: i.credential } : {}) });
  }

  async function verify(token: string, opts: VerifyOptions = {}): Promise<VerifiedTask> {
    // 1–2. Strict JOSE parsing, header checks and signature (jws.ts).
    const payload = await verifiedJwsPayload(token, { typ: TASK_TOKEN_TYP, kind: 'task token', algorithms, jwks });

    // 3. Claims: shape, issuer, audience, time.
    const parsed = taskTokenClaimsSchema.safeParse(payload);
    if (!parsed.success) throw new InvalidTaskToken('bad_claims', 'the token does not carry task-token claims');
    const claims = parsed.data;
    if (claims.iss !== options.issuer) throw new InvalidTaskToken('wrong_issuer', 'the token was issued by another issuer');
    if (!audiences.has(claims.aud)) throw new InvalidTaskToken('wrong_audience', 'the token is meant for another audience');
    const now = clock();
    if (now >= claims.exp * 1000 + leewayMs) throw new InvalidTaskToken('token_expired', 'the token has expired');
    if (claims.nbf * 1000 > now + leewayMs || claims.iat * 1000 > now + leewayMs) throw new InvalidTaskToken('token_not_yet_valid', 'the token is not valid yet');
    const detail = claims.authorization_details.length === 1 ? claims.authorization_details[0]! : undefined;
    const scope = claims.scope.split(' ');
    if (
      !detail ||
      detail.identifier !== claims.txn ||
      !detail.locations.includes(claims.aud) ||
      scope.length !== detail.actions.length ||
      !scope.every((a, k) => a === detail.actions[k])
    ) {
      throw new InvalidTaskToken('bad_claims', "the token's granted intent is inconsistent");
    }

    // 4. Binding: the TLS peer must hold the certificate the token names (RFC 8705 §3), or the
    // request must carry a proof by its DPoP key (RFC 9449 §7), whose jti is recorded on success.
    const cnf = claims.cnf;
    const dpopScheme = opts.scheme === 'DPoP';
    let proofJti: { key: string; until: number } | undefined;
    if (cnf && 'jkt' in cnf) {
      proofJti = checkProof(token, cnf.jkt, opts, now);
    } else if (dpopScheme) {
      throw new InvalidTaskToken('binding_mismatch', 'the token is not DPoP-bound: send it as "Authorization: Bearer"', { scheme: 'DPoP' });
    } else if (cnf) {
      const der = certificateDer(opts.clientCertificate);
      if (!der) throw new InvalidTaskToken('binding_mismatch', 'the token is bound to a client certificate: present it over mTLS');
      if (x5tS256(der) !== cnf['x5t#S256']) throw new InvalidTaskToken('binding_mismatch', 'the token is bound to another client certificate');
    } else if (options.requireBinding) {
      throw new InvalidTaskToken('binding_required', 'this resource server accepts bound tokens only');
    }

    // 5. The request against the granted intent, by the policy's own matching rules (protocol/match.ts).
    const actions = asList(opts.action);
    if (actions.length > 0) {
      const allows = compileActions(detail.actions);
      const refused = actions.find((a) => !allows(a));
      if (refused !== undefined) throw new IntentNotGranted('action_not_granted', `the task was not granted the action "${clip(refused)}"`);
    }
    for (const resource of asList(opts.resource)) {
      // A resource some server would normalise into another path is refused, as the broker refuses it at issuance.
      if (resourceProblem(resource) !== undefined || !detail.resources.some((p) => glob(p)(resource))) {
        throw new IntentNotGranted('resource_not_granted', `the task was not granted the resource "${clip(resource)}"`);
      }
    }

    // 6. The grant is still live (RFC 7662), when introspection is configured.
    const introspected = await live(token, claims.exp);

    if (proofJti) {
      const use = usedProofs.use(proofJti.key, proofJti.until, clock());
      if (use === 'replay') throw new InvalidDpopProof('this DPoP proof was already used: make a fresh proof for every request');
      if (use === 'full') throw new VerifierUnavailable('dpop_replay_table_full', 'too many DPoP proofs to remember: try again shortly');
    }
    return {
      workload: claims.sub,
      task: claims.txn,
      grant: claims.grant,
      tokenId: claims.jti,
      intent: { audience: claims.aud, actions: detail.actions, resources: detail.resources, purpose: detail.purpose },
      issuedAt: new Date(claims.iat * 1000),
      expiresAt: new Date(claims.exp * 1000),
      ...(cnf ? { confirmation: cnf } : {}),
      introspected,
      claims,
    };
  }

  /** Whether introspection (when configured) says the token's grant is live; throws when it says not, or fails and must not be allowed. */
  async function live(token: string, exp: number): Promise<boolean> {
    if (!introspector) return false;
    let active: boolean | undefined;
    try {
      active = await introspector.active(token, exp * 1000);
    } catch (e) {
      if (onIntrospectionError === 'fail') throw new VerifierUnavailable('introspection_unavailable', 'the grant could not be checked (introspection failed)', { cause: e });
    }
    if (active === false) throw new InvalidTaskToken('grant_inactive', 'the grant has ended or was revoked');
    return active === true;
  }

  // --- Transaction Tokens ---
  const trustDomain = options.trustDomain;

  /**
   * The draft's "Txn-Token Validation": the JOSE checks of task tokens with `typ` txntoken+jwt,
   * `iss` exact, `aud` this trust domain, not expired nor issued in the future, and the grant
   * live when introspection is configured. A task token is refused here (its typ), as a
   * Txn-Token is by `verify`.
   */
  async function verifyTxnToken(token: string): Promise<VerifiedTxn> {
    if (trustDomain === undefined) throw new TypeError('createVerifier: set trustDomain to verify Txn-Tokens');
    const payload = await verifiedJwsPayload(token, { typ: TXN_TOKEN_TYP, kind: 'Txn-Token', algorithms, jwks });
    const parsed = txnTokenClaimsSchema.safeParse(payload);
    if (!parsed.success) throw new InvalidTaskToken('bad_claims', 'the token does not carry Txn-Token claims');
    const claims = parsed.data;
    if (claims.iss !== options.issuer) throw new InvalidTaskToken('wrong_issuer', 'the token was issued by another issuer');
    if (claims.aud !== trustDomain) throw new InvalidTaskToken('wrong_audience', 'the Txn-Token is meant for another trust domain');
    const now = clock();
    if (now >= claims.exp * 1000 + leewayMs) throw new InvalidTaskToken('token_expired', 'the token has expired');
    if (claims.iat * 1000 > now + leewayMs) throw new InvalidTaskToken('token_not_yet_valid', 'the token is not valid yet');
    const introspected = await live(token, claims.exp);
    return {
      workload: claims.sub,
      requester: claims.req_wl,
      transaction: claims.txn,
      purpose: claims.scope,
      context: claims.tctx,
      requestContext: claims.rctx,
      grant: claims.grant,
      issuedAt: new Date(claims.iat * 1000),
      expiresAt: new Date(claims.exp * 1000),
      introspected,
      claims,
    };
  }
  // --- end Transaction Tokens ---

  /** RFC 9449 §7.1 and §4.3 for a DPoP-bound token: the DPoP scheme, and a proof by its key for this request and token. */
  function checkProof(token: string, jkt: string, opts: VerifyOptions, now: number): { key: string; until: number } {
    if (opts.scheme !== 'DPoP') throw new InvalidTaskToken('binding_mismatch', 'the token is DPoP-bound: send it as "Authorization: DPoP" with a DPoP proof', { scheme: 'DPoP' });
    const d = opts.dpop;
    if (!d?.proof) throw new InvalidDpopProof('the token is DPoP-bound: send a DPoP proof by its key in the DPoP header');
    let proof;
    try {
      proof = checkDpopProof({ proof: d.proof, htm: d.method, htu: d.url, now, windowMs: dpopWindowMs, accessToken: token });
    } catch (e) {
      if (e instanceof DpopProofError) throw new InvalidDpopProof(e.message);
      throw e;
    }
    if (proof.jkt !== jkt) throw new InvalidDpopProof('the DPoP proof is signed by another key than the one the token is bound to');
    return { key: `${proof.jkt} ${proof.jti}`, until: proof.acceptableUntil };
  }

  return {
    verify,
    verifyTxnToken,
    warmUp: () => jwks.refresh(),
    close() {
      jwksHttp.close();
      introspectionHttp?.close();
    },
    stats: {
      get jwksFetches() {
        return jwks.fetches;
      },
      get introspections() {
        return introspector?.requests ?? 0;
      },
    },
  };
}

/** Request values echoed in an error are the caller's own, but clipped. */
const clip = (s: string): string => (s.length > 100 ? `${s.slice(0, 100)}…` : s);

/** DPoP proofs already used (RFC 9449 §11.1), each until it would be refused as stale anyway. In memory: per verifier instance. */
class UsedProofs {
  private readonly until = new Map<string, number>();
  constructor(private readonly max: number) {}

  /** `ok` the first time; `replay` for a proof used before; `full` when the table holds only live proofs (fail closed). */
  use(key: string, until: number, now: number): 'ok' | 'replay' | 'full' {
    const known = this.until.get(key);
    if (known !== undefined && known > now) return 'replay';
    if (this.until.size >= this.max) for (const [k, t] of this.until) if (t <= now) this.until.delete(k);
    if (this.until.size >= this.max) return 'full';
    this.until.set(key, until);
    return 'ok';
  }
}
