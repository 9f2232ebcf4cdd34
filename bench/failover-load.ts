import type { OidcIssuer } from '../src/dev/oidc-issuer.js';
import { AUDIENCE } from '../test/helpers/broker.js';

/**
 * A bounded issuance load through a Redis failover, for the failover tests
 * (test/resilience/failover-*.test.ts) and bench/failover.ts: request loops of POST /v1/tasks, one
 * workload each, that kill a Redis primary once enough requests are in flight, and run on until
 * issuance has recovered. Every answer is kept, with when it came, for the per-answer checks and
 * the failover window.
 */

/** One POST /v1/tasks: its status (or what happened instead of an answer), when, and the body. */
export interface Answer {
  /** The workload that asked. */
  workload: string;
  status: number | 'client-timeout' | 'network-error';
  startedAt: number;
  endedAt: number;
  retryAfter: string | null;
  body: Record<string, unknown>;
  error?: string;
}

export interface LoadOptions {
  brokerUrl: string;
  issuer: OidcIssuer;
  /** Request loops, each its own workload (service account `<name>-<i>`): more than minInFlight. */
  loops: number;
  /** Requests in flight when `kill` is called, at least. */
  minInFlight: number;
  /** Answers before the kill (warm-up: connections, keys, the JIT). */
  warmAnswers: number;
  /** Kills the primary (SIGKILL by PID). */
  kill: () => Promise<void>;
  /** 201s in a row after the last failure (the load settled) that end the load. */
  okAfterFailure: number;
  /** The whole load's bound (a failover that never ends fails the test here). */
  maxMs: number;
  /** Each request's own client timeout: far above the store's, so a hang shows as one. */
  clientTimeoutMs: number;
  name: string;
  /**
   * The workloads the kill affects (a Cluster: those whose slot the killed primary served): the
   * window and the end of the load are judged on their answers. Default: every workload.
   */
  affected?: (workload: string) => boolean;
  /**
   * True once the topology has finished its failover (e.g. every sentinel names the new primary):
   * the load runs on at least `quietMs` past then, so a client's late reconnect falls within it.
   */
  failedOver?: () => Promise<boolean>;
  quietMs?: number;
}

export interface LoadResult {
  answers: Answer[];
  /** Requests in flight when the primary was killed. */
  inFlightAtKill: number;
  killedAt: number;
  /** First failure after the kill to the first 201 after it (ms); undefined when either is missing. */
  windowMs: number | undefined;
  /**
   * First failure after the kill to the first 201 after the last failure (ms): the whole
   * disturbance, when the client reconnects more than once (a Sentinel client reconnects again
   * when the sentinels announce the new primary).
   */
  settledMs: number | undefined;
  /**
   * Failures of requests sent after the first 201 that followed the first failure: a second burst
   * (a client dropping a connection it had already made to the new primary). None is expected.
   */
  failuresAfterRecovery: Answer[];
  workloads: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const workloadOf = (serviceAccount: string) => `k8s://test/ns/payments/sa/${serviceAccount}`;

async function startTask(url: string, workload: string, platformToken: string, clientTimeoutMs: number): Promise<Answer> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), clientTimeoutMs);
  const startedAt = performance.now();
  const done = (a: Omit<Answer, 'workload' | 'startedAt' | 'endedAt'>): Answer => ({ ...a, workload, startedAt, endedAt: performance.now() });
  try {
    const res = await fetch(`${url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        attestation: { kind: 'oidc', token: platformToken },
        intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'failover under load' },
      }),
      signal: ctrl.signal,
    });
    const text = await res.text();
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { raw: text.slice(0, 200) };
    }
    return done({ status: res.status, retryAfter: res.headers.get('retry-after'), body });
  } catch (e) {
    return done({ status: ctrl.signal.aborted ? 'client-timeout' : 'network-error', retryAfter: null, body: {}, error: (e as Error).message });
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the load, kills the primary under it, and returns every answer once issuance recovered (or maxMs passed). */
export async function issuanceLoadThroughFailover(o: LoadOptions): Promise<LoadResult> {
  const accounts = Array.from({ length: o.loops }, (_, i) => `${o.name}-${i}`);
  const tokens = await Promise.all(
    accounts.map((serviceAccount) => o.issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount, audience: AUDIENCE, ttlSeconds: 3600 })),
  );
  const answers: Answer[] = [];
  let inFlight = 0;
  let running = true;
  let killedAt = Number.POSITIVE_INFINITY;
  const affected = o.affected ?? (() => true);
  const startLoops = () =>
    tokens.map(async (token, i) => {
      while (running) {
        inFlight++;
        const a = await startTask(o.brokerUrl, workloadOf(accounts[i]!), token, o.clientTimeoutMs);
        inFlight--;
        answers.push(a);
      }
    });
  let loops = startLoops();
  const began = performance.now();
  const failuresAfterKill = () => answers.filter((a) => a.endedAt >= killedAt && a.status !== 201 && affected(a.workload));
  const firstFailure = () => failuresAfterKill()[0];
  const lastFailure = () => failuresAfterKill().at(-1);
  const okAfter = (t: number) => answers.filter((a) => a.status === 201 && a.endedAt > t && affected(a.workload));
  let inFlightAtKill = 0;
  try {
    while (answers.length < o.warmAnswers || inFlight < o.minInFlight) {
      if (performance.now() - began > o.maxMs) throw new Error(`load did not warm up: ${answers.length} answers, ${inFlight} in flight`);
      await sleep(1);
    }
    inFlightAtKill = inFlight;
    killedAt = performance.now();
    await o.kill();
    let failedOverAt: number | undefined;
    while (performance.now() - began < o.maxMs) {
      if (failedOverAt === undefined && ((await o.failedOver?.().catch(() => false)) ?? true)) failedOverAt = performance.now();
      const failed = lastFailure();
      const quiet = failedOverAt !== undefined && performance.now() - failedOverAt >= (o.quietMs ?? 0);
      if (quiet && failed && okAfter(failed.endedAt).length >= o.okAfterFailure) break;
      await sleep(50);
    }
  } finally {
    running = false;
    await Promise.all(loops);
  }
  // Requests still in flight when the load stopped may have met a later disruption (the new
  // primary stalled by a replica's resync, say): run on until issuance has settled again (or
  // maxMs), so the result says when it did rather than ending on failures.
  const settledAgain = () => {
    const f = lastFailure();
    return !f || okAfter(f.endedAt).length >= o.okAfterFailure;
  };
  if (killedAt !== Number.POSITIVE_INFINITY && !settledAgain() && performance.now() - began < o.maxMs) {
    running = true;
    loops = startLoops();
    try {
      while (!settledAgain() && performance.now() - began < o.maxMs) await sleep(50);
    } finally {
      running = false;
      await Promise.all(loops);
    }
  }
  const [failed, lastFailed] = [firstFailure(), lastFailure()];
  const firstOkAfter = (t: number) => okAfter(t).sort((a, b) => a.endedAt - b.endedAt)[0];
  const recovered = failed && firstOkAfter(failed.endedAt);
  const settled = lastFailed && firstOkAfter(lastFailed.endedAt);
  return {
    answers,
    inFlightAtKill,
    killedAt,
    windowMs: failed && recovered ? recovered.endedAt - failed.endedAt : undefined,
    settledMs: failed && settled ? settled.endedAt - failed.endedAt : undefined,
    failuresAfterRecovery: recovered ? failuresAfterKill().filter((a) => a.startedAt > recovered.endedAt) : [],
    workloads: accounts.map(workloadOf),
  };
}

/**
 * What the affected workloads were answered after the kill, per half second: "1.5s 503 <reason> ×n".
 * The message of the window assertions, so that a slow failover shows what it was waiting on.
 */
export function timeline(load: LoadResult, affected: (workload: string) => boolean = () => true): string {
  const rows = new Map<string, number>();
  for (const a of load.answers) {
    if (a.endedAt < load.killedAt || !affected(a.workload)) continue;
    const row = `${Math.floor((a.endedAt - load.killedAt) / 500) / 2}s ${a.status} ${String(a.body.error_description ?? '')}`.trim();
    rows.set(row, (rows.get(row) ?? 0) + 1);
  }
  return [...rows].map(([row, n]) => `${row} ×${n}`).join('\n');
}
