/**
 * Does issuance slow down as Redis fills up? Grants live one workload to a slot: a grant is one
 * record plus entries in its workload's own indexes, and no operation reads across workloads.
 * So "1M live grants" is measured as it would happen in a fleet: 1M grants over 10,000
 * workloads × 100, and the loaded workload is a new one (one of 10,001), in both cases. What
 * changes between the cases is Redis's keyspace (1M+ keys, their TTLs, memory), not the loaded
 * workload's indexes; those grow by the load's own grants alike in both cases.
 *
 * The fill happens once, on a Redis kept for the whole phase; each run then measures a fresh
 * empty Redis and the full one with fresh brokers (alternating which goes first), so the pair
 * is measured side by side under the same conditions.
 */
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import type { RedisGrantStore } from '../src/grants/redis-store.js';
import { freePort } from '../src/util/net.js';
import { startRedisServer, type RedisProcess } from '../test/helpers/redis.js';
import { withBroker } from './broker.js';
import { GROWTH_GRANTS, GROWTH_PER_WORKLOAD, RUNS } from './config.js';
import { benchStore, inProcessCpu, inProcessMeasured, overWorkloads, realisticGrant, workloadId, writeGrants } from './grants.js';
import { fixed, load, type Measured } from './load.js';
import { BROKER_PREFIX, OPERATOR_CREDENTIAL, brokerConfig, brokerCpu, issueTraffic } from './scenarios.js';
import type { BrokerProcess } from './broker.js';

export interface Fill {
  grants: number;
  workloads: number;
  seconds: number;
}

/** How many grants the fill writes at once (ioredis pipelines them on one connection). */
const FILL_IN_FLIGHT = 256;
const LIST_PAGES = 500;
/** Operator requests per operator row (one at a time), and workload-wide revocations. */
const OPERATOR_REQUESTS = 200;
const REVOCATIONS = 20;

/** The workload whose page is listed: one of the fill's, each holding GROWTH_PER_WORKLOAD grants. */
const LISTED = workloadId(0);

const fmt = (n: number) => n.toLocaleString('en-US');

/**
 * One page of a workload's grants through the store API, one at a time: µs per page. Stands in
 * for the operator route GET /v1/grants until it exists.
 */
async function measureListing(key: string, label: string, store: RedisGrantStore, redisPid: number): Promise<Measured> {
  const page = async () => {
    const grants = await store.listWorkloadGrants(LISTED, { now: Date.now(), limit: GROWTH_PER_WORKLOAD });
    if (grants.length !== GROWTH_PER_WORKLOAD || grants.some((g) => g.workload !== LISTED)) throw new Error(`listing returned ${grants.length} grants, not the ${GROWTH_PER_WORKLOAD} of ${LISTED}`);
  };
  for (let i = 0; i < 50; i++) await page();
  const latencies: number[] = [];
  const cpu0 = inProcessCpu(redisPid);
  const started = process.hrtime.bigint();
  for (let i = 0; i < LIST_PAGES; i++) {
    const t = process.hrtime.bigint();
    await page();
    latencies.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const m = inProcessMeasured(key, label, { count: LIST_PAGES, seconds, latenciesUs: latencies, cpu0 });
  console.error(`${label}: p50 ${Math.round(m.p50)} µs, p99 ${Math.round(m.p99)} µs`);
  return m;
}

/**
 * Operator API requests to a broker, one at a time: µs per request (latency as the operator sees
 * it; CPU is this process's and Redis's only, the broker's is not counted). `prepare` runs
 * untimed before each request.
 */
async function measureRequests(
  key: string,
  label: string,
  count: number,
  redisPid: number,
  request: () => Promise<void>,
  prepare?: () => Promise<void>,
): Promise<Measured> {
  for (let i = 0; i < Math.min(20, count); i++) {
    await prepare?.();
    await request();
  }
  const latencies: number[] = [];
  const cpu0 = inProcessCpu(redisPid);
  let timed = 0;
  for (let i = 0; i < count; i++) {
    await prepare?.();
    const t = process.hrtime.bigint();
    await request();
    const us = Number(process.hrtime.bigint() - t) / 1000;
    latencies.push(us);
    timed += us;
  }
  const m = inProcessMeasured(key, label, { count, seconds: timed / 1e6, latenciesUs: latencies, cpu0 });
  console.error(`${label}: p50 ${Math.round(m.p50)} µs, p99 ${Math.round(m.p99)} µs`);
  return m;
}

/** One operator call; throws unless it answers 200 and `check` holds. */
async function operatorCall(broker: BrokerProcess, path: string, check: (json: Record<string, unknown>) => boolean, body?: unknown): Promise<void> {
  const res = await fetch(`${broker.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${OPERATOR_CREDENTIAL}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status !== 200 || !check(json)) throw new Error(`${path}: ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
}

/** The operator rows: a workload's page of 100, the global index's first page of 100, a workload-wide revocation of 100 live grants. */
async function measureOperator(c: Case, broker: BrokerProcess, store: RedisGrantStore, redisPid: number, run: number): Promise<Measured[]> {
  const rows = (j: Record<string, unknown>) => Array.isArray(j.grants) && j.grants.length === GROWTH_PER_WORKLOAD;
  const page = await measureRequests(`grants-page-${c.name}`, `GET /v1/grants?workload=…&limit=${GROWTH_PER_WORKLOAD} (a workload's page), ${c.label}`, OPERATOR_REQUESTS, redisPid, () =>
    operatorCall(broker, `/v1/grants?workload=${encodeURIComponent(LISTED)}&limit=${GROWTH_PER_WORKLOAD}`, rows),
  );
  const global = await measureRequests(`global-page-${c.name}`, `GET /v1/grants?limit=${GROWTH_PER_WORKLOAD} (the global index's newest page, 16 shards merged), ${c.label}`, OPERATOR_REQUESTS, redisPid, () =>
    operatorCall(broker, `/v1/grants?limit=${GROWTH_PER_WORKLOAD}`, rows),
  );
  let victim = '';
  let n = 0;
  const revoke = await measureRequests(
    `revoke-workload-${c.name}`,
    `POST /v1/grants/revoke {workload} (${GROWTH_PER_WORKLOAD} live grants, one call), ${c.label}`,
    REVOCATIONS,
    redisPid,
    () => operatorCall(broker, '/v1/grants/revoke', (j) => j.revoked === GROWTH_PER_WORKLOAD && j.done === true, { selector: { workload: victim }, reason: 'bench' }),
    async () => {
      victim = `k8s://prod/ns/revoked/sa/victim-${c.name}-${run}-${n++}`;
      await writeGrants(store, GROWTH_PER_WORKLOAD, 16, (i) => realisticGrant(victim, i));
    },
  );
  return [page, global, revoke];
}

interface Case {
  name: 'empty' | 'full';
  label: string;
  /** The Redis, and a store on it with the listed workload's grants in place. */
  open: () => Promise<{ redis: RedisProcess; store: RedisGrantStore; done: () => Promise<void> }>;
}

/** Listing, then issuance by a workload new to this Redis, on a broker started for the case. */
async function measureCase(c: Case, run: number, dir: string, issuer: OidcIssuer): Promise<Measured[]> {
  const { redis, store, done } = await c.open();
  try {
    const listing = await measureListing(`list-${c.name}`, `a page of ${GROWTH_PER_WORKLOAD} of one workload's grants (store.listWorkloadGrants, in-process: what GET /v1/grants?workload= reads), ${c.label}`, store, redis.pid);
    const port = await freePort();
    const env = { dir, redis: { url: redis.url, pid: redis.pid }, issuer };
    const traffic = await issueTraffic(issuer, `growth-${c.name}-${run}`);
    const withIndex = () =>
      withBroker({ name: `growth-${c.name}`, dir, url: `http://127.0.0.1:${port}`, config: brokerConfig(env, port, BROKER_PREFIX) }, async (broker) => [
        await load({ key: `growth-${c.name}`, label: `POST /v1/tasks (platform token, reused; a new workload), ${c.label}`, servers: [broker], cpu: brokerCpu([broker], redis.pid), traffic: fixed(traffic) }),
        ...(await measureOperator(c, broker, store, redis.pid, run)),
      ]);
    // The same issuance without the global index write (store.global_index: false), in the same
    // run: what the index adds to a task start. Which goes first alternates with the run.
    const bare = await issueTraffic(issuer, `growth-noindex-${c.name}-${run}`);
    const port2 = await freePort();
    const withoutIndex = () =>
      withBroker({ name: `growth-noindex-${c.name}`, dir, url: `http://127.0.0.1:${port2}`, config: brokerConfig(env, port2, BROKER_PREFIX, { globalIndex: false }) }, (broker) =>
        load({ key: `growth-noindex-${c.name}`, label: `POST /v1/tasks without the global index write (store.global_index: false), ${c.label}`, servers: [broker], cpu: brokerCpu([broker], redis.pid), traffic: fixed(bare) }),
      );
    let noIndex: Measured;
    let measured: Measured[];
    if (run % 2) {
      measured = await withIndex();
      noIndex = await withoutIndex();
    } else {
      noIndex = await withoutIndex();
      measured = await withIndex();
    }
    const [issuance, ...operator] = measured;
    return [issuance!, noIndex, listing, ...operator];
  } finally {
    await done();
  }
}

/** The growth phase: one fill, then RUNS side-by-side measurements of empty and full. */
export async function measureGrowth(dir: string): Promise<{ byRun: Measured[][]; fill: Fill }> {
  const workloads = Math.max(1, Math.round(GROWTH_GRANTS / GROWTH_PER_WORKLOAD));
  const total = workloads * GROWTH_PER_WORKLOAD;
  let issuer: OidcIssuer | undefined;
  let full: RedisProcess | undefined;
  let fullStore: RedisGrantStore | undefined;
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    full = await startRedisServer();
    fullStore = benchStore(full.url, BROKER_PREFIX);
    console.error(`growth: writing ${fmt(total)} grants (${fmt(workloads)} workloads × ${GROWTH_PER_WORKLOAD}) through createGrant, ${FILL_IN_FLIGHT} in flight…`);
    const { seconds } = await writeGrants(fullStore, total, FILL_IN_FLIGHT, overWorkloads(workloads));
    console.error(`growth: fill took ${seconds.toFixed(1)} s (${fmt(Math.round(total / seconds))} grants/s)`);
    const fill = { grants: total, workloads, seconds };

    const fullRedis = full;
    const fullCase: Case = {
      name: 'full',
      label: `${fmt(total)} live grants in Redis (${fmt(workloads)} workloads × ${GROWTH_PER_WORKLOAD})`,
      open: async () => ({ redis: fullRedis, store: fullStore!, done: async () => undefined }),
    };
    const emptyCase: Case = {
      name: 'empty',
      label: 'no other grants in Redis',
      open: async () => {
        const redis = await startRedisServer();
        const store = benchStore(redis.url, BROKER_PREFIX);
        const done = async () => {
          await store.close();
          await redis.stop();
        };
        try {
          await writeGrants(store, GROWTH_PER_WORKLOAD, 16, (i) => realisticGrant(LISTED, i));
        } catch (e) {
          await done();
          throw e;
        }
        return { redis, store, done };
      },
    };

    const byRun: Measured[][] = [];
    for (let run = 1; run <= RUNS; run++) {
      console.error(`growth run ${run} of ${RUNS}`);
      const order = run % 2 ? [emptyCase, fullCase] : [fullCase, emptyCase];
      const measured: Measured[] = [];
      for (const c of order) measured.push(...(await measureCase(c, run, dir, issuer)));
      byRun.push(measured);
    }
    return { byRun, fill };
  } finally {
    await fullStore?.close();
    await full?.stop();
    await issuer?.close();
  }
}
