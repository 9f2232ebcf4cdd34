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
import { BROKER_PREFIX, brokerConfig, brokerCpu, issueTraffic } from './scenarios.js';

export interface Fill {
  grants: number;
  workloads: number;
  seconds: number;
}

/** How many grants the fill writes at once (ioredis pipelines them on one connection). */
const FILL_IN_FLIGHT = 256;
const LIST_PAGES = 500;

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
    const listing = await measureListing(`list-${c.name}`, `a page of ${GROWTH_PER_WORKLOAD} of one workload's grants (store.listWorkloadGrants, until GET /v1/grants lands), ${c.label}`, store, redis.pid);
    const port = await freePort();
    const env = { dir, redis: { url: redis.url, pid: redis.pid }, issuer };
    const traffic = await issueTraffic(issuer, `growth-${c.name}-${run}`);
    const issuance = await withBroker({ name: `growth-${c.name}`, dir, url: `http://127.0.0.1:${port}`, config: brokerConfig(env, port, BROKER_PREFIX) }, (broker) =>
      load({ key: `growth-${c.name}`, label: `POST /v1/tasks (platform token, reused; a new workload), ${c.label}`, servers: [broker], cpu: brokerCpu([broker], redis.pid), traffic: fixed(traffic) }),
    );
    return [issuance, listing];
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
