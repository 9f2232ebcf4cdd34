import type { Context } from 'hono';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Decision } from './policy/evaluate.js';
import type { DenialReason } from './protocol/denials.js';
import type { OidcIssuerStatus } from './attestation/oidc/index.js';
import type { Clock } from './util/clock.js';

/** Who revoked a grant (a resource server's or an operator's name is never a label). */
export type Revoker = 'holder' | 'resource_server' | 'operator';
/** Which kind of record did not decode. */
export type RecordKind = 'grant' | 'audit' | 'key';
/** A Redis command that failed: no reply in time, or an error (connection, refused command). */
export type RedisFailure = 'error' | 'timeout';

/** What the grant store reports (grants/redis-store.ts), so that it needs no prom-client of its own. */
export interface StoreMetrics {
  undecodable(kind: RecordKind): void;
  redisFailure(kind: RedisFailure): void;
}

/** Read at scrape time: the signing keys (tokens/keyring.ts) and the OIDC issuers' key caches. */
export interface MetricsSources {
  clock: Clock;
  signingKeyCreatedAt?: () => number | undefined;
  publishedKeys?: () => Promise<number>;
  issuers?: () => OidcIssuerStatus[];
  /** Live grants in the store (GrantStore.countLiveGrants); sampled, see LIVE_GRANTS_SAMPLE_MS. */
  liveGrants?: (now: number) => Promise<{ count: number; complete: boolean }>;
}

/**
 * The live-grants gauge reads the store at most once per this period per instance, whatever the
 * number of scrapers; a scrape in between gets the last sample. Each sample costs one read of the
 * workloads hint index and one ZCOUNT per workload seen within `grants.max_lifetime` (at most
 * LIVE_GRANTS_MAX_WORKLOADS).
 */
export const LIVE_GRANTS_SAMPLE_MS = 15_000;
export const LIVE_GRANTS_MAX_WORKLOADS = 10_000;

interface LiveGrantsSample {
  /** When the last sample started, and the read under way. */
  sampledAt?: number;
  pending?: Promise<void>;
  /** The last value read, and when (kept when a sample fails). */
  value?: { count: number; complete: boolean };
  valueAt?: number;
}

const PREFIX = 'jit_broker_';

/**
 * The broker's Prometheus metrics, in a registry of its own (never prom-client's global one: two
 * brokers in one process keep their counts apart). Every label takes values from a fixed set or
 * from config (rule names, issuers, route patterns): never a workload id, grant id or path.
 */
export class Metrics implements StoreMetrics {
  readonly registry = new Registry();
  private readonly issuances: Counter<'rule'>;
  private readonly denials: Counter<'reason' | 'rule'>;
  private readonly renewals: Counter;
  private readonly replays: Counter<'operation'>;
  private readonly revocations: Counter<'by'>;
  private readonly undecodableRecords: Counter<'kind'>;
  private readonly redisFailures: Counter<'kind'>;
  private readonly requestDuration: Histogram<'method' | 'route' | 'status'>;
  private sources: MetricsSources | undefined;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.issuances = new Counter({ name: `${PREFIX}issuances_total`, help: 'Task tokens issued for new grants, by policy rule', labelNames: ['rule'], registers });
    this.denials = new Counter({ name: `${PREFIX}denials_total`, help: 'Task token requests refused, by reason code and rule ("none" when no rule applies)', labelNames: ['reason', 'rule'], registers });
    this.renewals = new Counter({ name: `${PREFIX}renewals_total`, help: 'Task tokens renewed (a retried renewal answered with the same token is not counted)', registers });
    this.replays = new Counter({ name: `${PREFIX}replays_total`, help: 'Superseded task tokens presented (the grant was revoked), by operation', labelNames: ['operation'], registers });
    this.revocations = new Counter({ name: `${PREFIX}revocations_total`, help: 'Grants revoked, by who revoked them', labelNames: ['by'], registers });
    this.undecodableRecords = new Counter({ name: `${PREFIX}undecodable_records_total`, help: 'Records read from Redis that did not decode, by kind', labelNames: ['kind'], registers });
    this.redisFailures = new Counter({ name: `${PREFIX}redis_command_failures_total`, help: 'Redis operations that failed, by kind (error or timeout)', labelNames: ['kind'], registers });
    this.requestDuration = new Histogram({
      name: `${PREFIX}http_request_duration_seconds`,
      help: 'HTTP request latency, by method, route pattern and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    // The gauges' collect() has the gauge as `this`: the sources are read through this closure.
    const sources = () => this.sources;
    new Gauge({
      name: `${PREFIX}signing_key_age_seconds`,
      help: "Age of this instance's current signing key",
      registers,
      collect() {
        const src = sources();
        const created = src?.signingKeyCreatedAt?.();
        if (src && created !== undefined) this.set(Math.max(0, (src.clock() - created) / 1000));
      },
    });
    new Gauge({
      name: `${PREFIX}published_keys`,
      help: 'Public keys served in the JWKS (every instance)',
      registers,
      async collect() {
        const count = await sources()?.publishedKeys?.().catch(() => undefined);
        if (count !== undefined) this.set(count);
      },
    });
    // Sampled, not read per scrape: at most one read per LIVE_GRANTS_SAMPLE_MS, shared by concurrent scrapes.
    const live: LiveGrantsSample = {};
    const liveSample = async (): Promise<LiveGrantsSample | undefined> => {
      const src = sources();
      const read = src?.liveGrants;
      if (!src || !read) return undefined;
      const now = src.clock();
      const due = live.sampledAt === undefined || now - live.sampledAt >= LIVE_GRANTS_SAMPLE_MS || now < live.sampledAt;
      if (due && !live.pending) {
        live.sampledAt = now;
        live.pending = read(now)
          .then(
            (value) => void Object.assign(live, { value, valueAt: now }),
            () => undefined, // the store is down (its failures are counted): the last value stays, its age grows
          )
          .finally(() => delete live.pending);
      }
      await live.pending;
      return live;
    };
    const sampledGauge = (name: string, help: string, value: (s: LiveGrantsSample, now: number) => number | undefined) =>
      new Gauge({
        name: `${PREFIX}${name}`,
        help,
        registers,
        async collect() {
          const s = await liveSample();
          // Never read yet (the store was down from the start): unknown, not 0.
          if (s) this.set(value(s, sources()!.clock()) ?? NaN);
        },
      });
    sampledGauge('live_grants', `Grants live now (active and unexpired) across every instance, sampled from the store at most every ${LIVE_GRANTS_SAMPLE_MS / 1000} s`, (s) => s.value?.count);
    sampledGauge('live_grants_partial', `1 when the live-grants sample counted only the ${LIVE_GRANTS_MAX_WORKLOADS} most recently seen workloads (a lower bound), else 0`, (s) =>
      s.value === undefined ? undefined : s.value.complete ? 0 : 1,
    );
    sampledGauge('live_grants_sample_age_seconds', 'Age of the live-grants value reported (grows while the store cannot be read)', (s, now) =>
      s.valueAt === undefined ? undefined : Math.max(0, (now - s.valueAt) / 1000),
    );
    const issuerGauge = (name: string, help: string, value: (s: OidcIssuerStatus, now: number) => number | undefined) =>
      new Gauge({
        name: `${PREFIX}${name}`,
        help,
        labelNames: ['issuer'],
        registers,
        collect() {
          this.reset();
          const src = sources();
          const now = src?.clock() ?? 0;
          for (const s of src?.issuers?.() ?? []) {
            const v = value(s, now);
            if (v !== undefined) this.set({ issuer: s.issuer }, v);
          }
        },
      });
    issuerGauge('issuer_keys', "Keys in the cache of each configured OIDC issuer's JWKS", (s) => s.keys);
    issuerGauge('issuer_keys_age_seconds', "Time since each OIDC issuer's keys were last fetched", (s, now) => (s.fetched_at === undefined ? undefined : Math.max(0, (now - s.fetched_at) / 1000)));
    issuerGauge('issuer_keys_fetch_failing', "1 when the last fetch of an OIDC issuer's keys failed, else 0", (s) => (s.error === undefined ? 0 : 1));
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  /** The sources of the gauges read at scrape time (set once the keyring and attestors exist). */
  observe(sources: MetricsSources): void {
    this.sources = sources;
  }

  issued(rule: string): void {
    this.issuances.inc({ rule });
  }

  denied(reason: DenialReason, rule: string | undefined): void {
    this.denials.inc({ reason, rule: rule ?? 'none' });
  }

  renewed(): void {
    this.renewals.inc();
  }

  replayed(operation: 'renew' | 'end'): void {
    this.replays.inc({ operation });
  }

  revoked(by: Revoker, count = 1): void {
    if (count > 0) this.revocations.inc({ by }, count);
  }

  undecodable(kind: RecordKind): void {
    this.undecodableRecords.inc({ kind });
  }

  redisFailure(kind: RedisFailure): void {
    this.redisFailures.inc({ kind });
  }

  request(method: string, route: string, status: number, seconds: number): void {
    this.requestDuration.observe({ method, route, status: String(status) }, seconds);
  }

  /** The text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** GET /metrics: the text exposition of `metrics`. */
export const metricsHandler = (metrics: Metrics) => async (c: Context) => c.body(await metrics.scrape(), 200, { 'content-type': metrics.contentType });

/** The reason code of a policy refusal: the first part of the intent the closest rule does not cover. */
export function policyDenialReason(decision: Extract<Decision, { allowed: false }>): DenialReason {
  const r = decision.refused;
  if (decision.closestRule === undefined) return 'policy_no_rule';
  if (r.audience !== undefined) return 'policy_audience';
  if (r.actions.length > 0) return 'policy_actions';
  if (r.resources.length > 0 || r.resourcesRequired) return 'policy_resources';
  return 'policy_binding';
}

/** What the service functions (broker.ts, operator/) count. */
export type ServiceMetrics = Pick<Metrics, 'issued' | 'denied' | 'renewed' | 'replayed' | 'revoked'>;

/** Counts nothing (a broker built without metrics: unit tests, the CLI's offline commands). */
export const NO_METRICS: ServiceMetrics = { issued() {}, denied() {}, renewed() {}, replayed() {}, revoked() {} };

/** GrantLimitExceeded's audit reason as a denial reason code. */
export const limitDenialReason = (auditReason: string): DenialReason => (auditReason === 'active_grant_cap' ? 'cap' : 'rate');
