import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { ERROR_CODES, ERROR_REASONS, type ErrorCode, type ErrorReason } from '../protocol/errors.js';
import type { GrantedIntent, IntentRequest } from '../protocol/intent.js';
import { RENEW_RETRY_WINDOW_MS, type TaskEndResponse, type TaskRenewResponse, type TaskStartResponse } from '../protocol/tasks.js';
import type { AttestationSource, TlsMaterial } from './attestation.js';
import { systemClock, type SdkClock } from './clock.js';
import {
  AbortedError,
  BrokerClientError,
  BrokerResponseError,
  CertificateExpiredError,
  ReplayDetectedError,
  TaskEndedError,
} from './errors.js';
import { DpopKey, type SdkDpopAlgorithm } from './dpop.js';
import { NetworkError, retryAfterMs, send, type HttpResponse, type TlsOptions } from './http.js';

/** A duration on the wire: seconds, or "90s", "5m", "1h". */
export type Duration = number | string;

export interface RetryOptions {
  /** Attempts per call, the first included (default 4). */
  attempts?: number;
  /** First backoff step (default 200 ms); it doubles per attempt, with full jitter. */
  baseDelayMs?: number;
  /** Largest backoff step (default 5 s). */
  maxDelayMs?: number;
  /** A Retry-After longer than this is not waited for: the call fails (default 30 s). */
  maxRetryAfterMs?: number;
}

export interface BrokerClientOptions {
  /** The broker's base URL, e.g. https://jit-broker.internal:8443 */
  url: string;
  /** How the workload proves what it is: mtls(), platformToken() or githubActions(). */
  attestation: AttestationSource;
  /** PEM CA bundle that verifies the broker's certificate (default: mtls()'s `ca`, else the system's). */
  ca?: string;
  retry?: RetryOptions;
  /** Time and timers (tests pass a ManualClock). */
  clock?: SdkClock;
  /** Abandons one HTTP attempt with no answer after this long (default 30 s). */
  timeoutMs?: number;
  /**
   * DPoP-bound tasks (RFC 9449): each task makes its own key pair in memory and proves possession
   * of it on start, renew, end and every `task.fetch`; its tokens are worthless without the key.
   * `true` is ES256.
   */
  dpop?: boolean | { algorithm?: SdkDpopAlgorithm };
  /**
   * The broker's issuer URL, when the client reaches the broker by another one (a local proxy or
   * sidecar): DPoP proofs name the issuer URL in `htu`. Default: `url`.
   */
  issuer?: string;
}

export interface StartTaskOptions {
  /** Requested token TTL (broker default 5 min, floor 30 s, policy may lower). */
  ttl?: Duration;
  /** Requested grant lifetime: how long the task may keep renewing. */
  lifetime?: Duration;
  signal?: AbortSignal;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** The broker refuses to renew a grant with less than this left (its TTL floor); margin added. */
const RENEW_FLOOR_MS = 30_000 + 2_000;
/** A retried renewal stops this long before the broker's retry window closes. */
const RETRY_WINDOW_MARGIN_MS = 2_000;
/**
 * One renewal attempt waits at most this long for its answer: an attempt that times out may have
 * landed, and its retry must still fit in the broker's retry window.
 */
const RENEWAL_ATTEMPT_TIMEOUT_MS = (RENEW_RETRY_WINDOW_MS - RETRY_WINDOW_MARGIN_MS) / 2;

type Outcome = 'arrived' | 'not_arrived' | 'uncertain';

/**
 * The workload client: starts tasks (attest + intent → grant and task token), each a Task that
 * keeps a live token for as long as its grant lasts.
 */
export class BrokerClient {
  readonly url: URL;
  /** @internal */ readonly clock: SdkClock;
  private readonly retry: Required<RetryOptions>;
  /** The base of DPoP proofs' `htu`: the broker's issuer URL. */
  private readonly issuer: URL;
  /** The broker's latest `DPoP-Nonce` (RFC 9449 §8), sent in every proof once the broker issued one. */
  private dpopNonce: string | undefined;

  constructor(private readonly options: BrokerClientOptions) {
    this.url = new URL(options.url);
    if (this.url.protocol !== 'https:' && this.url.protocol !== 'http:') throw new TypeError('url must be http(s)');
    this.clock = options.clock ?? systemClock;
    this.retry = { attempts: 4, baseDelayMs: 200, maxDelayMs: 5_000, maxRetryAfterMs: 30_000, ...options.retry };
    if (!(this.retry.attempts >= 1)) throw new TypeError('retry.attempts must be at least 1');
    this.issuer = new URL(options.issuer ?? options.url);
    if (this.issuer.protocol !== 'https:' && this.issuer.protocol !== 'http:') throw new TypeError('issuer must be http(s)');
  }

  /** Starts a task: attests (current evidence: a rotated certificate or token is used here), declares the intent, and returns the Task. */
  async startTask(intent: IntentRequest, opts: StartTaskOptions = {}): Promise<Task> {
    const { signal } = opts;
    const source = this.options.attestation;
    const material = source.kind === 'mtls' ? await source.material() : undefined;
    if (material && material.notAfter <= this.clock.now()) throw new CertificateExpiredError('the client certificate has expired: renew it before starting a task');
    const { dpop } = this.options;
    const key = dpop ? await DpopKey.generate(typeof dpop === 'object' ? dpop.algorithm : undefined) : undefined;
    const res = await this.call<TaskStartResponse>('POST', '/v1/tasks', {
      signal,
      dpop: key,
      tls: this.tlsFor(material),
      body: async () => ({
        intent,
        ...(opts.ttl !== undefined ? { ttl: opts.ttl } : {}),
        ...(opts.lifetime !== undefined ? { lifetime: opts.lifetime } : {}),
        ...(source.kind === 'platform' ? { attestation: { kind: 'oidc', token: await source.token(signal) } } : {}),
      }),
      expect: 201,
    });
    checkTokenResponse(res.json, key);
    return new Task(this, res.json, res.firstSentAt, material, opts.ttl, key);
  }

  /** Runs `fn` with a new task, and ends the task when `fn` settles (also when it throws). */
  async withTask<T>(intent: IntentRequest, fn: (task: Task) => Promise<T> | T, opts: StartTaskOptions = {}): Promise<T> {
    const task = await this.startTask(intent, opts);
    let result: T;
    try {
      result = await fn(task);
    } catch (e) {
      await task.end().catch(() => undefined);
      throw e;
    }
    await task.end();
    return result;
  }

  /** @internal TLS options of a call: the task's (or current) client certificate, and the CA. */
  tlsFor(material: TlsMaterial | undefined): TlsOptions {
    const ca = material?.ca ?? this.options.ca;
    return { ...(ca ? { ca } : {}), ...(material ? { cert: material.cert, key: material.key } : {}) };
  }

  /** @internal */
  get source(): AttestationSource {
    return this.options.attestation;
  }

  /**
   * @internal One broker call with bounded retries: network errors, 503 and 429 (Retry-After
   * honoured), backoff with full jitter; never another 4xx. `renewal`: a retry is sent only while
   * the broker's retry window (RENEW_RETRY_WINDOW_MS) covers every attempt that may have arrived.
   * `dpop`: every attempt carries a fresh proof by this key (and the token as `Authorization:
   * DPoP`); a `use_dpop_nonce` refusal is retried once at once with the nonce the broker sent.
   */
  async call<T>(
    method: string,
    path: string,
    opts: {
      signal?: AbortSignal | undefined;
      tls: TlsOptions;
      bearer?: string;
      dpop?: DpopKey | undefined;
      body?: () => Promise<unknown>;
      expect: number;
      renewal?: boolean;
    },
  ): Promise<{ json: T; firstSentAt: number }> {
    const { clock } = this;
    let firstSentAt: number | undefined;
    let uncertainSince: number | undefined;
    let nonceRetried = false;
    for (let attempt = 1; ; attempt++) {
      if (opts.signal?.aborted) throw new AbortedError(opts.signal.reason);
      const body = opts.body ? JSON.stringify(await opts.body()) : undefined;
      const sentNonce = this.dpopNonce;
      const proof = opts.dpop ? await opts.dpop.proof(method, brokerEndpoint(this.issuer, path), { accessToken: opts.bearer, nonce: sentNonce }) : undefined;
      const sentAt = clock.now();
      firstSentAt ??= sentAt;
      let failure: BrokerClientError;
      let outcome: Outcome;
      let waitMs: number | undefined;
      try {
        const res = await send({
          method,
          url: brokerEndpoint(this.url, path),
          headers: {
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...(opts.bearer ? { authorization: `${opts.dpop ? 'DPoP' : 'Bearer'} ${opts.bearer}` } : {}),
            ...(proof !== undefined ? { dpop: proof } : {}),
          },
          body,
          tls: opts.tls,
          signal: opts.signal,
          timeoutMs: opts.renewal ? Math.min(this.options.timeoutMs ?? 30_000, RENEWAL_ATTEMPT_TIMEOUT_MS) : (this.options.timeoutMs ?? 30_000),
        });
        const nonce = res.headers['dpop-nonce'];
        if (typeof nonce === 'string') this.dpopNonce = nonce;
        if (res.status === opts.expect) return { json: parseJson(res) as T, firstSentAt };
        failure = responseError(res, clock.now());
        // RFC 9449 §8: refused before anything was written; once with the new nonce.
        if (opts.dpop && failure.code === 'use_dpop_nonce' && typeof nonce === 'string' && nonce !== sentNonce && !nonceRetried) {
          nonceRetried = true;
          attempt--;
          continue;
        }
        // 429: refused before anything was written (rate and failure limits); 503: perhaps written.
        if (res.status === 429) outcome = 'not_arrived';
        else if (res.status === 503) outcome = 'uncertain';
        else throw failure;
        const after = (failure as BrokerResponseError).retryAfter;
        waitMs = after === undefined ? undefined : after * 1000;
      } catch (e) {
        if (!(e instanceof NetworkError)) throw e;
        failure = e;
        outcome = e.mayHaveArrived ? 'uncertain' : 'not_arrived';
      }
      if (outcome === 'uncertain') uncertainSince ??= sentAt;
      if (attempt >= this.retry.attempts) throw failure;
      const step = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
      const delay = Math.max(Math.random() * step, waitMs ?? 0);
      if (waitMs !== undefined && waitMs > this.retry.maxRetryAfterMs) throw failure;
      if (opts.renewal && uncertainSince !== undefined && clock.now() + delay - uncertainSince > RENEW_RETRY_WINDOW_MS - RETRY_WINDOW_MARGIN_MS) {
        throw new TaskEndedError(
          'renewal_uncertain',
          'a renewal may have landed but its answer was lost, and the broker no longer accepts it again: the current token serves until it expires; start a new task',
          { cause: failure },
        );
      }
      await sleep(clock, delay, opts.signal);
    }
  }
}

/**
 * One task: a grant and its latest token. `token()` always resolves to a live token, renewing
 * ahead of expiry (with jitter) and on demand, one renewal at a time.
 */
export class Task {
  readonly grant: string;
  readonly workload: string;
  readonly intent: GrantedIntent;
  private accessToken: string;
  private exp: number;
  private grantEnd: number;
  /** Local-clock expiry of the token and of the grant, conservative (see accept). */
  private localExp = 0;
  private localGrantEnd = 0;
  private lifetimeMs = 0;
  private gen = 1;
  private renewing: Promise<void> | undefined;
  private timer: { cancel(): void } | undefined;
  /** Ends every token() call: replay, expired certificate, ended. */
  private failure: BrokerClientError | undefined;
  /** Renewal is no longer possible: the current token serves until it expires, then this. */
  private stuck: BrokerClientError | undefined;
  private ending: Promise<void> | undefined;
  private agents: { http?: HttpAgent; https?: HttpsAgent } = {};
  /** The latest `DPoP-Nonce` of each resource server's origin (RFC 9449 §9). */
  private readonly resourceNonces = new Map<string, string>();

  /** @internal */
  constructor(
    private readonly client: BrokerClient,
    res: TaskStartResponse,
    sentAt: number,
    /** The client certificate this task is bound to (its renewals and fetches use it, not a rotated one). */
    private readonly material: TlsMaterial | undefined,
    private readonly ttl: Duration | undefined,
    /** The DPoP key the task's tokens are bound to: every call of the task proves it holds it. */
    private readonly dpop: DpopKey | undefined,
  ) {
    this.grant = res.grant;
    this.workload = res.workload;
    this.intent = res.intent;
    this.accessToken = res.access_token;
    this.exp = 0;
    this.grantEnd = 0;
    this.accept(res, sentAt);
  }

  /** When the current token expires (as the broker stated it). */
  get expiresAt(): Date {
    return new Date(this.exp);
  }

  /** When the grant ends: no token of this task lives past it. */
  get grantExpiresAt(): Date {
    return new Date(this.grantEnd);
  }

  /** The RFC 7638 thumbprint of the task's DPoP key (its tokens' `cnf.jkt`), when the task is DPoP-bound. */
  get dpopThumbprint(): string | undefined {
    return this.dpop?.thumbprint;
  }

  /** The generation of the current token (1 at start, +1 per renewal). */
  get generation(): number {
    return this.gen;
  }

  /** A live token: the current one, or a renewed one when it is close to expiry. */
  async token(opts: CallOptions = {}): Promise<string> {
    if (opts.signal?.aborted) throw new AbortedError(opts.signal.reason);
    this.checkUsable();
    const now = this.client.clock.now();
    if (this.localExp - now > this.threshold()) return this.accessToken;
    if (!this.stuck && this.renewable(now)) {
      try {
        await this.renew(opts.signal);
      } catch (e) {
        if (e instanceof AbortedError) throw e;
        this.checkUsable();
        // The renewal failed; the current token still serves while it lives.
        if (this.localExp - this.client.clock.now() > 1_000) return this.accessToken;
        throw e;
      }
      this.checkUsable();
    }
    if (this.localExp - this.client.clock.now() > 1_000) return this.accessToken;
    throw this.stuck ?? this.expired();
  }

  /**
   * fetch() with this task's token (`Authorization: Bearer`), over the task's client certificate
   * when it attested by mTLS (a bound token is only good with it). A DPoP-bound task sends
   * `Authorization: DPoP` and a fresh proof for this request (`htm`, `htu`, `ath`), and answers a
   * resource server's `use_dpop_nonce` challenge once with its `DPoP-Nonce` (RFC 9449 §9).
   * Returns a standard Response.
   */
  async fetch(input: string | URL, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: string | Uint8Array | URLSearchParams; signal?: AbortSignal } = {}): Promise<Response> {
    const token = await this.token(init.signal ? { signal: init.signal } : {});
    const url = new URL(input);
    const headers = new Headers(init.headers);
    headers.set('authorization', `${this.dpop ? 'DPoP' : 'Bearer'} ${token}`);
    let body = init.body;
    if (body instanceof URLSearchParams) {
      if (!headers.has('content-type')) headers.set('content-type', 'application/x-www-form-urlencoded');
      body = body.toString();
    }
    const method = (init.method ?? (body === undefined ? 'GET' : 'POST')).toUpperCase();
    const https = url.protocol === 'https:';
    const agent = https ? (this.agents.https ??= new HttpsAgent({ keepAlive: true })) : (this.agents.http ??= new HttpAgent({ keepAlive: true }));
    const attempt = async () => {
      const nonce = this.resourceNonces.get(url.origin);
      if (this.dpop) headers.set('dpop', await this.dpop.proof(method, url, { accessToken: token, nonce }));
      const res = await send({ method, url, headers: Object.fromEntries(headers), body, tls: this.client.tlsFor(this.material), agent, signal: init.signal });
      const issued = res.headers['dpop-nonce'];
      if (this.dpop && typeof issued === 'string') this.resourceNonces.set(url.origin, issued);
      const retry = this.dpop && res.status === 401 && typeof issued === 'string' && issued !== nonce && /error="use_dpop_nonce"/.test(String(res.headers['www-authenticate']));
      return { res, retry };
    };
    const first = await attempt();
    const { res } = first.retry ? await attempt() : first;
    const out = new Headers();
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) out.append(k, one);
    }
    const empty = res.status === 204 || res.status === 304 || (res.status >= 100 && res.status < 200);
    return new Response(empty ? null : new Uint8Array(res.body), { status: res.status, headers: out });
  }

  /** Ends the task: the grant expires now. Idempotent; stops every timer and closes connections. */
  end(opts: CallOptions = {}): Promise<void> {
    this.ending ??= this.doEnd(opts.signal);
    return this.ending;
  }

  private async doEnd(signal: AbortSignal | undefined): Promise<void> {
    const terminal = this.failure;
    this.failure ??= new TaskEndedError('task_ended', 'the task was ended: start a new task');
    this.cancelTimer();
    await this.renewing?.catch(() => undefined);
    this.cancelTimer();
    try {
      // A replay revoked the grant already; an expired certificate cannot connect; an expired grant is over.
      if (terminal || this.client.clock.now() >= this.localGrantEnd) return;
      await this.client.call<TaskEndResponse>('POST', `/v1/tasks/${encodeURIComponent(this.grant)}/end`, {
        signal,
        tls: this.client.tlsFor(this.material),
        bearer: this.accessToken,
        dpop: this.dpop,
        expect: 200,
      });
    } finally {
      this.agents.http?.destroy();
      this.agents.https?.destroy();
      this.agents = {};
    }
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.material && this.material.notAfter <= this.client.clock.now()) {
      this.fail(
        new CertificateExpiredError(
          'the client certificate this task is bound to has expired; its tokens are bound to it, so the task cannot continue: start a new task (it will use the rotated certificate)',
        ),
      );
      throw this.failure!;
    }
  }

  private fail(e: BrokerClientError): void {
    this.failure ??= e;
    this.cancelTimer();
  }

  private expired(): TaskEndedError {
    return new TaskEndedError('task_expired', "the task's grant lifetime is over: start a new task");
  }

  /** Renew on demand when the token has less than this left. */
  private threshold(): number {
    return Math.min(10_000, this.lifetimeMs / 6);
  }

  /** Whether a renewal would still be granted and would extend the token. */
  private renewable(now: number): boolean {
    return this.localGrantEnd - now >= RENEW_FLOOR_MS && this.localExp < this.localGrantEnd - 1_000;
  }

  /** One renewal in flight, however many callers wait for it. */
  private renew(signal?: AbortSignal): Promise<void> {
    if (!this.renewing) {
      this.cancelTimer();
      // The renewal itself is not aborted by one waiter's signal: others may wait for it.
      this.renewing = this.doRenew().finally(() => {
        this.renewing = undefined;
        if (!this.failure) this.schedule();
      });
    }
    if (!signal) return this.renewing;
    return Promise.race([this.renewing, abortPromise(signal)]);
  }

  private async doRenew(): Promise<void> {
    const source = this.client.source;
    const presented = this.accessToken;
    try {
      const res = await this.client.call<TaskRenewResponse>('POST', `/v1/tasks/${encodeURIComponent(this.grant)}/renew`, {
        tls: this.client.tlsFor(this.material),
        bearer: presented,
        dpop: this.dpop,
        body: async () => ({
          ...(this.ttl !== undefined ? { ttl: this.ttl } : {}),
          ...(source.kind === 'platform' ? { attestation: { kind: 'oidc', token: await source.token() } } : {}),
        }),
        expect: 200,
        renewal: true,
      });
      checkTokenResponse(res.json, this.dpop);
      if (this.failure) return; // ended meanwhile: end() presents the token it saw
      this.accessToken = res.json.access_token;
      this.gen = typeof res.json.generation === 'number' ? res.json.generation : this.gen + 1;
      this.accept(res.json, res.firstSentAt);
    } catch (e) {
      if (e instanceof ReplayDetectedError || (e instanceof BrokerResponseError && e.code === 'invalid_grant')) {
        // Revoked as a replay, or the grant is over (revoked, ended, expired): its token is worth nothing now.
        this.fail(e);
      } else if (e instanceof TaskEndedError || (e instanceof BrokerResponseError && e.status < 500 && e.status !== 429)) {
        // No renewal is possible any more (answer lost past the window; grant revoked or expired;
        // policy no longer allows): the current token serves until it expires.
        this.stuck ??= e as BrokerClientError;
      }
      throw e;
    }
  }

  /**
   * Takes a token answer. Expiries are kept on the local clock, conservatively: the token was
   * minted no earlier than the call's first attempt was sent (a retried renewal returns the token
   * its lost attempt minted), and its iat is rounded down to a second.
   */
  private accept(res: TaskStartResponse, firstSentAt: number): void {
    const exp = Date.parse(res.expires_at);
    const grantEnd = Date.parse(res.grant_expires_at);
    this.exp = exp;
    this.grantEnd = grantEnd;
    this.lifetimeMs = res.expires_in * 1000;
    this.localExp = firstSentAt + this.lifetimeMs - 1_000;
    this.localGrantEnd = this.localExp + (grantEnd - exp);
    this.schedule();
  }

  /** Schedules the next renewal a third of the token's life (plus jitter) ahead of its expiry. */
  private schedule(): void {
    this.cancelTimer();
    if (this.failure || this.stuck) return;
    const now = this.client.clock.now();
    let at = this.localExp - this.lifetimeMs / 3 - Math.random() * (this.lifetimeMs / 10);
    at = Math.min(at, this.localGrantEnd - RENEW_FLOOR_MS);
    if (at < now && !this.renewable(now)) return;
    if (this.localExp >= this.localGrantEnd - 1_000) return;
    this.timer = this.client.clock.setTimer(() => {
      this.timer = undefined;
      this.renew().catch(() => {
        // A failed background renewal: token() renews on demand, or reports why it cannot.
        if (!this.failure && !this.stuck && !this.renewing) {
          this.timer = this.client.clock.setTimer(() => {
            this.timer = undefined;
            this.renew().catch(() => undefined);
          }, Math.min(5_000, Math.max(0, this.localExp - this.client.clock.now() - this.threshold())));
        }
      });
    }, Math.max(0, at - now));
  }

  private cancelTimer(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}

function abortPromise(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(new AbortedError(signal.reason));
    signal.addEventListener('abort', () => reject(new AbortedError(signal.reason)), { once: true });
  });
}

function sleep(clock: SdkClock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortedError(signal.reason));
    const onAbort = () => {
      timer.cancel();
      reject(new AbortedError(signal?.reason));
    };
    const timer = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function parseJson(res: HttpResponse): unknown {
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    throw new BrokerResponseError(res.status, 'unexpected_response', 'the broker answered something that is not JSON');
  }
}

/** The broker's error answer as a typed error (a replay as ReplayDetectedError). */
function responseError(res: HttpResponse, now: number): BrokerResponseError {
  let body: { error?: unknown; error_description?: unknown; error_reason?: unknown } = {};
  try {
    body = JSON.parse(res.body.toString('utf8')) as typeof body;
  } catch {
    body = {};
  }
  const code = (ERROR_CODES as readonly unknown[]).includes(body.error) ? (body.error as ErrorCode) : 'unexpected_response';
  const description = typeof body.error_description === 'string' ? body.error_description : `HTTP ${res.status}`;
  const reason = (ERROR_REASONS as readonly unknown[]).includes(body.error_reason) ? (body.error_reason as ErrorReason) : undefined;
  const wait = retryAfterMs(res.headers['retry-after'], now);
  const opts = { reason, retryAfter: wait === undefined ? undefined : wait / 1000 };
  return reason === 'replay_detected' ? new ReplayDetectedError(res.status, code, description, opts) : new BrokerResponseError(res.status, code, description, opts);
}

/** A token answer the client can rely on (bound to the key when it sent one), or an error (fail closed). */
function checkTokenResponse(r: TaskStartResponse, dpop: DpopKey | undefined): void {
  const ok =
    r !== null &&
    typeof r === 'object' &&
    typeof r.access_token === 'string' &&
    typeof r.grant === 'string' &&
    typeof r.expires_in === 'number' &&
    r.expires_in > 0 &&
    !Number.isNaN(Date.parse(r.expires_at)) &&
    !Number.isNaN(Date.parse(r.grant_expires_at)) &&
    typeof r.intent === 'object';
  if (!ok) throw new BrokerResponseError(200, 'unexpected_response', 'the broker answered a token response without its required fields');
  if (dpop && r.token_type !== 'DPoP') throw new BrokerResponseError(200, 'unexpected_response', 'the broker answered a token not bound to the DPoP key (token_type is not DPoP)');
}

/**
 * `path` (e.g. /v1/tasks) under the broker URL, keeping the URL's own path: a broker whose issuer
 * has a path (https://host/tenant) serves its routes under it (new URL('/v1/tasks', base) would drop it).
 */
function brokerEndpoint(base: URL, path: string): URL {
  return new URL(path.replace(/^\/+/, ''), base.href.endsWith('/') ? base : `${base.href}/`);
}
