/**
 * The two tables: the figures (median with min–max over the runs), then the targets set for it
 * with what was measured and whether each holds. Ratios are taken within each run (the two
 * figures side by side, under the same conditions), then their median is reported.
 */
import { cpus } from 'node:os';
import { CONNECTIONS, CONNECTION_LEVELS, DURATION_S, GROWTH_PER_WORKLOAD, RUNS, WARMUP_S, atLevel } from './config.js';
import type { Fill } from './growth.js';
import type { Measured } from './load.js';
import type { MemoryFigure } from './memory.js';
import type { OpCost } from './sign.js';

type Row = string[];

export interface Results {
  /** Every measured scenario by key: one entry per run, in run order. */
  byKey: Map<string, Measured[]>;
  /** In-process costs, measured once. */
  ops: { key: string; label: string; cost: OpCost }[];
  fill: Fill;
  memory: MemoryFigure[];
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

const fmt = (x: number, digits = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '–');

/** "median (min–max)", or the one value when there was one run. */
function spread(xs: number[], unit: string, digits = 0): string {
  if (xs.length === 1) return `${fmt(xs[0]!, digits)}${unit}`;
  return `${fmt(median(xs), digits)}${unit} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;
}

const runsOf = (r: Pick<Results, 'byKey'>, key: string): Measured[] => {
  const runs = r.byKey.get(key);
  if (!runs?.length) throw new Error(`no measurement "${key}"`);
  return runs;
};

/** Per-run ratios of one figure of two scenarios. */
function ratios(r: Results, top: string, bottom: string, f: (m: Measured) => number): number[] {
  const a = runsOf(r, top);
  const b = runsOf(r, bottom);
  return a.map((m, i) => f(m) / f(b[i]!));
}

/** One table row from the runs of one scenario: medians with min–max; failures summed over the runs. */
export function summarize(runs: Measured[]): Row {
  const of = (f: (m: Measured) => number) => runs.map(f);
  const sum = (f: (m: Measured) => number) => of(f).reduce((a, b) => a + b, 0);
  const first = runs[0]!;
  const http = first.latencyUnit === 'ms';
  const statuses = runs.map((m) => m.otherStatuses).filter(Boolean).join('; ');
  const non2xx = `${sum((m) => m.non2xx)} non-2xx${statuses ? ` (${statuses})` : ''}`;
  const failures = http ? [non2xx, `${sum((m) => m.errors)} errors`, `${sum((m) => m.wrongBodies)} wrong bodies`] : [];
  if (first.handshakes) {
    const wrongName = sum((m) => m.handshakes!.wrongName);
    failures.push(`${of((m) => m.handshakes!.verified).join('/')} TLS handshakes${wrongName ? `, ${wrongName} with a wrong server name` : ''}`);
  }
  const unit = ` ${first.latencyUnit}`;
  return [
    first.label,
    spread(of((m) => m.perSecond), '/s'),
    spread(of((m) => m.p50), unit),
    spread(of((m) => m.p99), unit),
    failures.join(', '),
    first.cpuUs.map((p, i) => `${spread(of((m) => m.cpuUs[i]!.us), ' µs')} ${p.who}`).join(' + '),
  ];
}

const section = (title: string): Row => [`**${title}**`, '', '', '', '', ''];
const opRow = (label: string, c: OpCost): Row => [label, `${fmt(c.opsPerSec)}/s`, `${c.usPerOp} µs`, '', '', ''];

function figureRows(r: Results): Row[] {
  const row = (key: string) => summarize(runsOf(r, key));
  const op = (key: string) => {
    const o = r.ops.find((x) => x.key === key);
    if (!o) throw new Error(`no in-process measurement "${key}"`);
    return opRow(o.label, o.cost);
  };
  const perSecond = (m: Measured) => m.perSecond;
  const p50 = (m: Measured) => m.p50;
  const p99 = (m: Measured) => m.p99;
  const x = (xs: number[]) => spread(xs, '×', 2);
  const [memory, skewed] = [r.memory.find((m) => m.key === 'memory')!, r.memory.find((m) => m.key === 'memory-skewed')!];
  const memoryRow = (m: MemoryFigure): Row => [
    `Redis memory per grant: ${fmt(m.workloads)} workloads × ${fmt(m.perWorkload)} (${fmt(m.workloads * m.perWorkload)} grants on a fresh redis-server)`,
    `${fmt(m.bytesPerGrant)} B/grant`,
    '',
    '',
    '',
    `used_memory +${fmt(m.bytes / 2 ** 20, 1)} MiB`,
  ];
  return [
    section('Broker, one process'),
    ...['issue', 'renew', 'introspect', 'jwks', 'issue-https', 'issue-mtls'].map(row),
    section('One process and two'),
    row('issue-2proc'),
    ['two processes ÷ one (issuance/s, per run)', x(ratios(r, 'issue-2proc', 'issue', perSecond)), '', '', '', ''],
    section('Ceiling'),
    row('floor'),
    ['our issuance ÷ HTTP floor (per run)', x(ratios(r, 'issue', 'floor', perSecond)), '', '', '', ''],
    op('sign'),
    op('verify'),
    row('write-1'),
    row('write-64'),
    op('jose-sign'),
    op('x509-chain'),
    op('x509-cached'),
    section('Workload client (jit-broker/sdk)'),
    op('sdk-token'),
    section('Resource server (in-process, one at a time, same token, same run)'),
    op('rs-jose'),
    op('rs-verify'),
    op('rs-verify-intent'),
    section('Peer'),
    row('peer'),
    ['our issuance ÷ peer tokens (per run)', x(ratios(r, 'issue', 'peer', perSecond)), '', '', '', ''],
    section('Growth'),
    row('growth-empty'),
    row('growth-full'),
    ['full ÷ empty (per run; throughput, p50, p99)', x(ratios(r, 'growth-full', 'growth-empty', perSecond)), x(ratios(r, 'growth-full', 'growth-empty', p50)), x(ratios(r, 'growth-full', 'growth-empty', p99)), '', ''],
    row('growth-noindex-empty'),
    row('growth-noindex-full'),
    ['with ÷ without the global index write (per run; throughput, p50; empty, then full)', `${x(ratios(r, 'growth-empty', 'growth-noindex-empty', perSecond))}, ${x(ratios(r, 'growth-full', 'growth-noindex-full', perSecond))}`, `${x(ratios(r, 'growth-empty', 'growth-noindex-empty', p50))}, ${x(ratios(r, 'growth-full', 'growth-noindex-full', p50))}`, '', '', ''],
    row('list-empty'),
    row('list-full'),
    section('Operator API (one request at a time)'),
    row('grants-page-empty'),
    row('grants-page-full'),
    row('global-page-empty'),
    row('global-page-full'),
    ['global page: full ÷ empty (per run; p50, p99)', '', x(ratios(r, 'global-page-full', 'global-page-empty', p50)), x(ratios(r, 'global-page-full', 'global-page-empty', p99)), '', ''],
    row('revoke-workload-empty'),
    row('revoke-workload-full'),
    [`fill: ${fmt(r.fill.grants)} grants (${fmt(r.fill.workloads)} workloads × ${GROWTH_PER_WORKLOAD}) through createGrant, 256 in flight, in ${fmt(r.fill.seconds, 1)} s`, `${fmt(r.fill.grants / r.fill.seconds)}/s`, '', '', '', ''],
    section('Memory'),
    memoryRow(memory),
    memoryRow(skewed),
  ];
}

function notes(r: Results): string[] {
  const cores = cpus().length;
  return [
    `- This machine has ${cores} CPU core${cores === 1 ? '' : 's'}, and autocannon runs in the bench process: load generator, broker(s) and Redis share them. The two-process row puts two brokers, Redis and autocannon on those ${cores}; it shows whether a second process adds throughput here, not what a second machine would.`,
    '- CPU per request: CPU time of each named process over the measured run, per success (/proc). "client" is the bench process calling the grant store (validation, encoding, ioredis), with nothing else running in it then.',
    '- HTTP floor: the same request body and a real issuance response, read and written with the broker\'s own body reader and JSON helper in a hono app on @hono/node-server; everything a task start does except attest, authorize, record and mint.',
    `- Peer: oidc-provider keeps nothing per JWT access token (no store write) and authenticates the client by a shared secret, where our issuance verifies a platform token (cached after the first use), writes a grant with its audit event to Redis and signs; it signs with jose over WebCrypto (the jose row above). oidc-provider 9 asks for Node 22 and warns at start; it runs here on Node ${process.version}.`,
    `- Growth: the full Redis was filled once (${fmt(r.fill.grants)} grants, kept live for the phase); each run loads a fresh broker on a fresh empty Redis and one on the full Redis, alternating which goes first, each with a workload new to that Redis (one of many). Its own indexes grow by the load's grants in both cases alike. The full Redis also keeps the earlier runs' load grants. The listing rows call the grant store directly; the operator rows go through the broker's HTTP API as the bench operator (one request at a time: latency, and this process's and Redis's CPU, not the broker's). The workload-wide revocation writes 100 live grants of a new workload (untimed) before each call. The without-index rows run a second broker with store.global_index: false on the same Redis, before or after the first (alternating with the run).`,
    '- Memory: INFO used_memory on a fresh redis-server before and after writing the grants through createGrant (realistic fields: k8s workload id, issuer URL, audience, 1–2 actions, 1–2 resources, a purpose sentence, a task id): record, indexes, audit event and the workloads index, all included.',
  ];
}

export interface Target {
  target: string;
  measured: string;
  holds: boolean;
}

/** The runs of the task-start, renewal and peer loads at `c` connections. */
const levelRuns = (r: Pick<Results, 'byKey'>, c: number) => ({
  issue: runsOf(r, atLevel('issue', c)),
  renew: runsOf(r, atLevel('renew', c)),
  peer: runsOf(r, atLevel('peer', c)),
});

/** CPU µs per request of the load's first process (the broker, or the peer). */
const firstCpu = (m: Measured) => m.cpuUs[0]!.us;
const redisCpu = (m: Measured) => m.cpuUs.find((p) => p.who === 'redis')?.us ?? NaN;

/**
 * One row per concurrency: task start, renewal and the peer side by side (medians with min–max;
 * the ratios taken within each run, then their median).
 */
export function concurrencyTable(r: Pick<Results, 'byKey'>): string[] {
  const rows = CONNECTION_LEVELS.map((c) => {
    const { issue, renew, peer } = levelRuns(r, c);
    const per = (a: Measured[], b: Measured[], f: (m: Measured) => number, g = f) => a.map((m, i) => f(m) / g(b[i]!));
    return [
      String(c),
      spread(issue.map((m) => m.perSecond), '/s'),
      spread(issue.map((m) => m.p99), ' ms'),
      `${spread(issue.map(firstCpu), ' µs')} + ${spread(issue.map(redisCpu), ' µs')} Redis`,
      spread(renew.map((m) => m.perSecond), '/s'),
      `${spread(renew.map(firstCpu), ' µs')} + ${spread(renew.map(redisCpu), ' µs')} Redis`,
      spread(per(renew, issue, firstCpu), '×', 2),
      spread(peer.map((m) => m.perSecond), '/s'),
      spread(peer.map(firstCpu), ' µs'),
      spread(per(issue, peer, (m) => m.perSecond), '×', 2),
    ];
  });
  return [
    '| connections | task starts | p99 | CPU per task start (broker + Redis) | renewals | CPU per renewal | renewal ÷ start (broker CPU) | peer tokens | peer CPU per token | task starts ÷ peer tokens |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((cells) => `| ${cells.join(' | ')} |`),
  ];
}

/**
 * The hot-path targets at each concurrency: broker CPU per task start (≤ 200 µs below 64
 * connections, ≤ 120 µs at 64 and above), renewal ≤ 1.2× a start, issuance ≥ 1.3× the peer
 * (≥ 2× at 64 and above), p99 < 20 ms at 64 and above.
 */
export function concurrencyTargets(r: Pick<Results, 'byKey'>): Target[] {
  return CONNECTION_LEVELS.flatMap((c) => {
    const { issue, renew, peer } = levelRuns(r, c);
    const saturated = c >= 64;
    const cpu = median(issue.map(firstCpu));
    const cpuMax = saturated ? 120 : 200;
    const renewal = median(renew.map((m, i) => firstCpu(m) / firstCpu(issue[i]!)));
    const vsPeer = median(issue.map((m, i) => m.perSecond / peer[i]!.perSecond));
    const peerMin = saturated ? 2 : 1.3;
    const p99 = median(issue.map((m) => m.p99));
    return [
      { target: `${c} conn.: broker CPU per task start ≤ ${cpuMax} µs`, measured: `${fmt(cpu)} µs`, holds: cpu <= cpuMax },
      { target: `${c} conn.: renewal ≤ 1.2× a task start (broker CPU)`, measured: `${fmt(renewal, 2)}×`, holds: renewal <= 1.2 },
      { target: `${c} conn.: task starts ≥ ${peerMin}× peer tokens/s`, measured: `${fmt(vsPeer, 2)}× (${fmt(median(issue.map((m) => m.perSecond)))}/s vs ${fmt(median(peer.map((m) => m.perSecond)))}/s)`, holds: vsPeer >= peerMin },
      ...(saturated ? [{ target: `${c} conn.: task start p99 < 20 ms`, measured: `${fmt(p99)} ms`, holds: p99 < 20 }] : []),
    ];
  });
}

function targets(r: Results): Target[] {
  const med = (key: string, f: (m: Measured) => number) => median(runsOf(r, key).map(f));
  const perSecond = (m: Measured) => m.perSecond;
  const issue = med('issue', perSecond);
  const two = median(ratios(r, 'issue-2proc', 'issue', perSecond));
  const introspect = med('introspect', perSecond);
  const growthRate = median(ratios(r, 'growth-full', 'growth-empty', perSecond));
  const growthP50 = median(ratios(r, 'growth-full', 'growth-empty', (m) => m.p50));
  const live = fmt(r.fill.grants);
  const memory = r.memory.map((m) => ({
    target: `≤ 1 KiB Redis memory per grant incl. indexes (${fmt(m.workloads)} workloads × ${fmt(m.perWorkload)})`,
    measured: `${fmt(m.bytesPerGrant)} B`,
    holds: m.bytesPerGrant <= 1024,
  }));
  return [
    ...concurrencyTargets(r),
    { target: 'two processes ≥ 1.7× one', measured: `${fmt(two, 2)}× (${fmt(med('issue-2proc', perSecond))}/s vs ${fmt(issue)}/s)`, holds: two >= 1.7 },
    { target: 'introspection ≥ 6,000/s', measured: `${fmt(introspect)}/s`, holds: introspect >= 6000 },
    { target: `issuance with ${live} live grants within 10% of empty: throughput`, measured: `${fmt(growthRate, 2)}× of empty`, holds: growthRate >= 0.9 },
    { target: `issuance with ${live} live grants within 10% of empty: p50`, measured: `${fmt(growthP50, 2)}× of empty`, holds: growthP50 <= 1.1 },
    ...memory,
  ];
}

export const targetTable = (ts: Target[]): string[] => [
  '| target | measured | verdict |',
  '|---|---|---|',
  ...ts.map((t) => `| ${t.target} | ${t.measured} | ${t.holds ? 'holds' : '**misses**'} |`),
];

export function report(r: Results, startedAt: Date): string {
  const runs = RUNS > 1 ? `, median of ${RUNS} runs (min–max), failures summed over the runs` : ', one run';
  const took = `${((Date.now() - startedAt.getTime()) / 60_000).toFixed(1)} min in all`;
  const table = (rows: Row[]) => rows.map((cells) => `| ${cells.join(' | ')} |`);
  return [
    `jit-broker bench — ${startedAt.toISOString()} — node ${process.version}, ${CONNECTIONS} keep-alive connections (task start, renewal and peer also at ${CONNECTION_LEVELS.join(', ')}), ${DURATION_S} s after ${WARMUP_S} s warm-up${runs}; ${took}`,
    '',
    '| what | throughput | p50 | p99 | failures | CPU per request |',
    '|---|---|---|---|---|---|',
    ...table(figureRows(r)),
    '',
    ...notes(r),
    '',
    `Task start, renewal and the peer at each concurrency (${CONNECTION_LEVELS.join(', ')} keep-alive connections; the main table's rows are at ${CONNECTIONS}):`,
    '',
    ...concurrencyTable(r),
    '',
    ...targetTable(targets(r)),
    '',
  ].join('\n');
}
