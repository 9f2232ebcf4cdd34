/**
 * The load generator: autocannon from this process, keep-alive connections, a warm-up and then
 * the measured run. A load may drive several servers at once (two broker processes): the
 * connections are split between them, one autocannon each, all running together; throughputs
 * add up and CPU is summed over every process named in the load.
 */
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import autocannon from 'autocannon';
import { cpuSeconds, type ClientTls, type ServerProcess } from './child.js';
import { CONNECTIONS, DURATION_S, WARMUP_S } from './config.js';

/** What every connection of one run sends, and what a right answer looks like. */
export interface Traffic {
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
  /** A response whose body fails this counts as a wrong answer (autocannon's mismatches), whatever its status. */
  verifyBody: (body: string) => boolean;
  /** Per-connection state: autocannon calls this once for each connection, before its first request. */
  setupClient?: (client: autocannon.Client) => void;
}

export const JSON_HEADERS = { 'content-type': 'application/json' };

/** Traffic without state, the same for every run. */
export const fixed = (t: Traffic) => () => Promise.resolve(t);

/** Whose CPU a load counts per request: e.g. the broker processes, then Redis. */
export interface CpuPart {
  who: string;
  pids: number[];
}

export interface Load {
  /** Stable id of the scenario (rows, ratios and targets refer to it). */
  key: string;
  label: string;
  /** One server, or several sharing the connections (one autocannon each, all at once). */
  servers: ServerProcess[];
  cpu: CpuPart[];
  /** Called before each run (the warm-up too), outside the CPU count: no state carries over between runs. */
  traffic: () => Promise<Traffic>;
  /** For HTTPS: what the load generator trusts and presents. */
  tls?: ClientTls;
  /** Keep-alive connections of this load, CONNECTIONS unless set. */
  connections?: number;
  /** Seconds measured, DURATION_S unless set. */
  durationS?: number;
}

/** One measurement: throughput and latency of the successes, what went wrong, CPU µs per success. */
export interface Measured {
  key: string;
  label: string;
  /** Keep-alive connections of an HTTP load (summed over its servers). */
  connections?: number;
  perSecond: number;
  p50: number;
  p99: number;
  latencyUnit: 'ms' | 'µs';
  non2xx: number;
  /** Statuses of the non-2xx responses, e.g. "503×7" (empty when there were none). */
  otherStatuses?: string;
  errors: number;
  wrongBodies: number;
  handshakes?: { verified: number; wrongName: number };
  cpuUs: { who: string; us: number }[];
}

/**
 * autocannon sets rejectUnauthorized: false on every connection, but Node still verifies the
 * chain against `ca` and calls checkServerIdentity only when it verified: counting those calls
 * counts trusted handshakes, which under keep-alive is one per connection.
 */
function countingTls(tls: ClientTls) {
  const handshakes = { verified: 0, wrongName: 0 };
  const check = (host: string, cert: PeerCertificate) => {
    const problem = checkServerIdentity(host, cert);
    handshakes[problem ? 'wrongName' : 'verified']++;
    return problem;
  };
  return { handshakes, tlsOptions: { ...tls, checkServerIdentity: check } };
}

/**
 * autocannon's own merge of several instances' results (latency histograms added, so the
 * percentiles are those of every request); exported at run time, missing from its types.
 */
const aggregateResult = (autocannon as unknown as { aggregateResult: (results: unknown[], opts: object) => autocannon.Result }).aggregateResult;

/**
 * One autocannon run of `duration` seconds against one server, with its own handshake count.
 * Its result keeps the raw histograms (skipAggregateResult) for aggregateResult to merge.
 */
async function cannon(server: ServerProcess, l: Load, t: Traffic, connections: number, duration: number) {
  const counted = l.tls ? countingTls(l.tls) : undefined;
  const raw: unknown = await autocannon({
    url: `${server.url}${t.path}`,
    method: t.method,
    headers: t.headers,
    body: t.body,
    verifyBody: (b) => t.verifyBody(String(b)), // always a string at run time; typed more widely
    setupClient: t.setupClient,
    connections,
    duration,
    skipAggregateResult: true,
    ...(counted ? { tlsOptions: counted.tlsOptions } : {}),
  });
  return { raw, handshakes: counted?.handshakes };
}

/** `connections` (CONNECTIONS by default) split as evenly as it goes over `n` servers. */
export const connectionShares = (n: number, connections = CONNECTIONS) =>
  Array.from({ length: n }, (_, i) => Math.floor(connections / n) + (i < connections % n ? 1 : 0));

const cpuOf = (parts: CpuPart[]) => parts.map((p) => p.pids.reduce((s, pid) => s + cpuSeconds(pid), 0));

/** "503×7, 500×1": the statuses of the responses that were not 2xx. */
function otherStatuses(result: autocannon.Result): string {
  const stats = (result.statusCodeStats ?? {}) as Record<string, { count?: number }>;
  return Object.entries(stats)
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, s]) => `${code}×${s.count ?? 0}`)
    .join(', ');
}

/** Warm-up, then the measured run; every response counts (non-2xx, wrong bodies and connection errors are reported). */
export async function load(l: Load): Promise<Measured> {
  const connections = l.connections ?? CONNECTIONS;
  const each = connectionShares(l.servers.length, connections);
  const all = (t: Traffic, duration: number) => Promise.all(l.servers.map((s, i) => cannon(s, l, t, each[i]!, duration)));
  await all(await l.traffic(), WARMUP_S);
  const traffic = await l.traffic();
  const before = cpuOf(l.cpu);
  const duration = l.durationS ?? DURATION_S;
  const runs = await all(traffic, duration);
  const after = cpuOf(l.cpu);
  const result = aggregateResult(runs.map((r) => r.raw), { connections, url: l.servers[0]!.url });
  const ok = result['2xx'];
  const counted = runs.flatMap((r) => (r.handshakes ? [r.handshakes] : []));
  const m: Measured = {
    key: l.key,
    label: l.label,
    connections,
    perSecond: ok / duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    latencyUnit: 'ms',
    non2xx: result.non2xx,
    otherStatuses: otherStatuses(result),
    errors: result.errors,
    wrongBodies: result.mismatches,
    ...(counted.length
      ? { handshakes: { verified: counted.reduce((s, h) => s + h.verified, 0), wrongName: counted.reduce((s, h) => s + h.wrongName, 0) } }
      : {}),
    cpuUs: l.cpu.map((p, i) => ({ who: p.who, us: ok ? ((after[i]! - before[i]!) / ok) * 1e6 : NaN })),
  };
  const statuses = m.otherStatuses ? ` (${m.otherStatuses})` : '';
  console.error(`${m.label}, ${connections} connections: ${Math.round(m.perSecond)}/s, p99 ${m.p99} ms, ${m.non2xx} non-2xx${statuses}, ${m.errors} errors, ${m.wrongBodies} wrong bodies`);
  return m;
}
