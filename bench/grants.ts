/**
 * Grants written straight through the real Redis store (createGrant, the same Lua script the
 * broker runs), for the write ceiling, the growth fill and the memory figure. Only the store's
 * public API is used: key names, id format and record layout are the store's business, so the
 * bench keeps measuring whatever the store does today.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { newGrantId } from '../src/grants/ids.js';
import { createRedisGrantStore, type RedisGrantStore } from '../src/grants/redis-store.js';
import type { CreateGrantOptions, NewGrant } from '../src/grants/store.js';
import { silentLogger } from '../src/log.js';
import { cpuSeconds } from './child.js';
import type { Measured } from './load.js';
import { BENCH_KEY_PUBLICATION_SECRET } from './scenarios.js';

/** grants.default_lifetime and grants.audit_retention of the default config. */
const LIFETIME_MS = 3_600_000;
const RETENTION_MS = 7 * 86_400_000;
/** High enough for any bench shape (the broker's default is 50 live grants per workload). */
const MAX_ACTIVE = 1_000_000;

/**
 * A store for bulk writes: the command timeout is long because thousands of scripts can be
 * queued on the one connection ahead of any given write (the broker's 1 s is for single requests).
 */
export function benchStore(url: string, keyPrefix: string): RedisGrantStore {
  return createRedisGrantStore({ url, keyPrefix, commandTimeoutMs: 60_000, keyPublicationSecrets: [BENCH_KEY_PUBLICATION_SECRET], log: silentLogger });
}

/** A Kubernetes workload id, one of many: k8s://prod/ns/team-042/sa/batch-worker-1042. */
export function workloadId(i: number): string {
  return `k8s://prod/ns/team-${String(i % 250).padStart(3, '0')}/sa/batch-worker-${i}`;
}

const PURPOSES = [
  'Nightly reconciliation of settled card payments against the ledger',
  'Export of last month’s refunds for the finance audit',
  'Backfill of missing order totals after the schema migration',
];

/** A grant as the broker writes one for a platform-token workload: 1–2 actions, 1–2 resources, a purpose, a task id. */
export function realisticGrant(workload: string, n: number, now = Date.now()): NewGrant {
  const month = `2026-${String((n % 12) + 1).padStart(2, '0')}`;
  return {
    id: newGrantId(workload),
    workload,
    workload_kind: 'oidc',
    issuer: 'https://kubernetes.default.svc.cluster.local',
    rule: 'payments-db',
    audience: 'db.payments',
    actions: n % 2 ? ['read'] : ['read', 'write'],
    resources: n % 3 ? [`db://payments/orders/${month}`] : [`db://payments/orders/${month}`, `db://payments/refunds/${month}`],
    purpose: PURPOSES[n % PURPOSES.length]!,
    task: `task-${randomUUID()}`,
    created_at: now,
    expires_at: now + LIFETIME_MS,
    token_jti: randomBytes(16).toString('base64url'),
    token_exp: now + 300_000,
  };
}

const writeOptions = (now: number): CreateGrantOptions => ({ now, maxActive: MAX_ACTIVE, retentionMs: RETENTION_MS });

/**
 * Grant i of a fill spread round-robin over `workloads`: every workload's indexes grow together,
 * as they do in a fleet, and the n-th grant of each is numbered n.
 */
export const overWorkloads = (workloads: number) => (i: number) => realisticGrant(workloadId(i % workloads), Math.floor(i / workloads));

/**
 * Writes grants 0..count-1 through createGrant with `inFlight` outstanding at a time (ioredis
 * pipelines them on its one connection). Stops at the first failure and throws it. With
 * `timed`, returns each write's latency in µs.
 */
export async function writeGrants(
  store: RedisGrantStore,
  count: number,
  inFlight: number,
  make: (i: number) => NewGrant,
  opts: { timed?: boolean } = {},
): Promise<{ seconds: number; latenciesUs: number[] }> {
  const latenciesUs: number[] = [];
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < count) {
      const grant = make(next++);
      const start = opts.timed ? process.hrtime.bigint() : 0n;
      try {
        await store.createGrant(grant, writeOptions(grant.created_at));
      } catch (e) {
        failed = true;
        throw e;
      }
      if (opts.timed) latenciesUs.push(Number(process.hrtime.bigint() - start) / 1000);
    }
  };
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, latenciesUs };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Writes measured as a Measured row: writes/s, latency percentiles in µs, and CPU per write of
 * this process (the store's client side: validation, encoding, ioredis) and of Redis (the script).
 */
async function measuredWrites(key: string, label: string, store: RedisGrantStore, redisPid: number, count: number, inFlight: number, make: (i: number) => NewGrant): Promise<Measured> {
  const cpu0 = inProcessCpu(redisPid);
  const { seconds, latenciesUs } = await writeGrants(store, count, inFlight, make, { timed: true });
  return inProcessMeasured(key, label, { count, seconds, latenciesUs, cpu0 });
}

/** CPU of this process and of Redis now, to measure in-process calls against. */
export const inProcessCpu = (redisPid: number) => ({ self: process.cpuUsage(), redis: cpuSeconds(redisPid), redisPid });

/** A row for `count` in-process calls to the store: rate, latency in µs, CPU of this process and of Redis per call. */
export function inProcessMeasured(
  key: string,
  label: string,
  run: { count: number; seconds: number; latenciesUs: number[]; cpu0: ReturnType<typeof inProcessCpu> },
): Measured {
  const self = process.cpuUsage(run.cpu0.self);
  const redisUs = (cpuSeconds(run.cpu0.redisPid) - run.cpu0.redis) * 1e6;
  const sorted = [...run.latenciesUs].sort((a, b) => a - b);
  return {
    key,
    label,
    perSecond: run.count / run.seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    latencyUnit: 'µs',
    non2xx: 0,
    errors: 0,
    wrongBodies: 0,
    cpuUs: [
      { who: 'client', us: (self.user + self.system) / run.count },
      { who: 'redis', us: redisUs / run.count },
    ],
  };
}

/**
 * The grant-write ceiling: createGrant of realistic grants over 1,000 workloads, one at a time
 * (the round trip plus the script: µs per write) and 64 in flight (what one connection to one
 * Redis sustains: writes/s). Its own key prefix, on the run's fresh Redis.
 */
export async function measureGrantWrites(redis: { url: string; pid: number }): Promise<Measured[]> {
  const store = benchStore(redis.url, 'bench-write:');
  try {
    await store.ping();
    const make = overWorkloads(1000);
    let base = 0;
    const from = (offset: number) => (i: number) => make(offset + i);
    await writeGrants(store, 2000, 64, from(base)); // warm-up: scripts loaded, JIT warm
    base += 2000;
    const one = await measuredWrites('write-1', 'createGrant, one at a time (grant store → Redis, realistic grant)', store, redis.pid, 2000, 1, from(base));
    base += 2000;
    const many = await measuredWrites('write-64', 'createGrant, 64 in flight on one connection', store, redis.pid, 20_000, 64, from(base));
    for (const m of [one, many]) console.error(`${m.label}: ${Math.round(m.perSecond)}/s, p50 ${Math.round(m.p50)} µs, p99 ${Math.round(m.p99)} µs`);
    return [one, many];
  } finally {
    await store.close();
  }
}
