/**
 * npx tsx bench/ab.ts <rev-A> <rev-B>: an A/B of two git revisions' brokers by CPU per request.
 *
 * Each revision is checked out in its own temp dir (a detached git worktree under the OS temp
 * dir, node_modules hard-linked from this checkout) and built there with `npm run build`; both
 * brokers then run side by side from their dist/ (plain node, `serve --config`) on one Redis and
 * one OIDC issuer, each with its own key prefix. AB_ROUNDS rounds (5 by default) load them
 * interleaved, one at a time, alternating which goes first; each load is WARMUP_S s of warm-up
 * and BENCH_DURATION s (5 by default here) measured. AB_SCENARIOS picks the loads, each
 * "issue@N" (task start) or "renew@N" (renewal) at N connections; "issue@1,issue@64" by default.
 *
 * It prints each round's broker CPU per request and, per scenario, the verdict: B's change
 * counts only when it is beyond the runs' spread (`verdict`: the ranges apart, or the same sign in
 * every round). The worktrees, builds and processes are removed whatever the outcome.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { freePort } from '../src/util/net.js';
import { startRedisServer } from '../test/helpers/redis.js';
import { withBroker, type BrokerProcess } from './broker.js';
import { DURATION_S, WARMUP_S } from './config.js';
import { fixed, load, type Measured } from './load.js';
import { median } from './report.js';
import { brokerConfig, brokerCpu, issueTraffic, renewTraffic, type Env } from './scenarios.js';

/** Seconds measured per load: BENCH_DURATION, or 5 here (10 rounds of two loads stay under 4 minutes). */
const DURATION = process.env.BENCH_DURATION ? DURATION_S : 5;
const ROUNDS = Number(process.env.AB_ROUNDS ?? 5);
const SCENARIOS = (process.env.AB_SCENARIOS ?? 'issue@1,issue@64').split(',').map((s) => {
  const m = /^(issue|renew)@([1-9][0-9]*)$/.exec(s.trim());
  if (!m) throw new Error(`AB_SCENARIOS: "${s}" is not issue@N or renew@N`);
  return { name: s.trim(), kind: m[1] as 'issue' | 'renew', connections: Number(m[2]) };
});
if (!Number.isInteger(ROUNDS) || ROUNDS < 2) throw new Error('AB_ROUNDS must be an integer ≥ 2');

const git = (args: string[], cwd = process.cwd()) => execFileSync('git', args, { cwd, encoding: 'utf8' }).trim();

interface Build {
  label: 'A' | 'B';
  rev: string;
  commit: string;
  dir: string;
}

/** A detached worktree of `rev` under the temp dir, node_modules hard-linked, built. */
function build(label: Build['label'], rev: string, builds: Build[]): Build {
  const commit = git(['rev-parse', '--verify', `${rev}^{commit}`]);
  const dir = mkdtempSync(join(tmpdir(), 'jit-ab-'));
  const b = { label, rev, commit, dir };
  builds.push(b); // cleaned up from here on, whatever happens next
  git(['worktree', 'add', '--detach', '--force', dir, commit]);
  execFileSync('cp', ['-al', 'node_modules', join(dir, 'node_modules')]); // hard links: no copy, no install
  console.error(`${label}: ${rev} (${commit.slice(0, 10)}) building in ${dir}`);
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return b;
}

function removeBuild(b: Build): void {
  try {
    git(['worktree', 'remove', '--force', b.dir]);
  } catch {
    // not registered (the add failed): the directory alone goes
  }
  rmSync(b.dir, { recursive: true, force: true });
}

let loads = 0;

/**
 * One measured load of `scenario` on `broker`. Each task-start load is a workload of its own
 * (a service account named after it): a few rounds at saturation would reach one workload's cap
 * on live grants.
 */
async function measure(scenario: (typeof SCENARIOS)[number], broker: BrokerProcess, env: Env, redisPid: number): Promise<Measured> {
  const common = { servers: [broker], cpu: brokerCpu([broker], redisPid), connections: scenario.connections, durationS: DURATION, key: scenario.name, label: scenario.name };
  if (scenario.kind === 'issue') return load({ ...common, traffic: fixed(await issueTraffic(env.issuer, `ab-${++loads}`)) });
  return load({ ...common, traffic: () => renewTraffic(broker, env.issuer, scenario.connections) });
}

const fmt = (x: number) => x.toFixed(0);

/**
 * The verdict on one load. A difference is shown when it is beyond the runs' spread, either way:
 * the two revisions' ranges over the rounds do not overlap, or, round by round (A and B of one
 * round run back to back, so a disturbance of the machine hits both), B − A has the same sign in
 * every round (the range of the paired differences excludes zero; with 5 rounds, a chance of 1 in
 * 16 either way if the revisions cost the same).
 */
function verdict(name: string, a: number[], b: number[]): string {
  const [aMin, aMax, bMin, bMax] = [Math.min(...a), Math.max(...a), Math.min(...b), Math.max(...b)];
  const change = ((median(b) - median(a)) / median(a)) * 100;
  const paired = a.map((x, i) => ((b[i]! - x) / x) * 100);
  const [pMin, pMax] = [Math.min(...paired), Math.max(...paired)];
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`;
  const beyond =
    bMax < aMin
      ? 'B lower, beyond the spread (ranges apart)'
      : bMin > aMax
        ? 'B higher, beyond the spread (ranges apart)'
        : pMax < 0
          ? 'B lower, beyond the spread (lower in every round)'
          : pMin > 0
            ? 'B higher, beyond the spread (higher in every round)'
            : 'within the spread (no difference shown)';
  return `${name}: A ${fmt(median(a))} µs (${fmt(aMin)}–${fmt(aMax)}), B ${fmt(median(b))} µs (${fmt(bMin)}–${fmt(bMax)}), B − A ${pct(change)} (per round ${pct(pMin)} to ${pct(pMax)}): ${beyond}`;
}

async function main() {
  const [revA, revB] = process.argv.slice(2);
  if (!revA || !revB) throw new Error('usage: npx tsx bench/ab.ts <rev-A> <rev-B>');
  const builds: Build[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'jit-ab-run-'));
  const redis = await startRedisServer();
  let issuer: OidcIssuer | undefined;
  try {
    const [a, b] = [build('A', revA, builds), build('B', revB, builds)];
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env = { dir, redis, issuer };
    const start = async (x: Build, fn: (broker: BrokerProcess) => Promise<void>) => {
      const port = await freePort();
      const config = brokerConfig(env, port, `ab-${x.label}:`);
      return withBroker({ name: `ab-${x.label}`, dir, url: `http://127.0.0.1:${port}`, config, build: x.dir }, fn);
    };
    const cpu: Record<string, { A: number[]; B: number[]; redisA: number[]; redisB: number[] }> = {};
    for (const s of SCENARIOS) cpu[s.name] = { A: [], B: [], redisA: [], redisB: [] };
    const lines: string[] = [];
    await start(a, (brokerA) =>
      start(b, async (brokerB) => {
        for (let round = 1; round <= ROUNDS; round++) {
          const order = round % 2 ? ([['A', brokerA], ['B', brokerB]] as const) : ([['B', brokerB], ['A', brokerA]] as const);
          for (const s of SCENARIOS) {
            for (const [label, broker] of order) {
              const m = await measure(s, broker, env, redis.pid);
              if (m.non2xx || m.errors || m.wrongBodies) throw new Error(`${label} ${s.name}: ${m.non2xx} non-2xx ${m.otherStatuses ?? ''}, ${m.errors} errors, ${m.wrongBodies} wrong bodies`);
              cpu[s.name]![label].push(m.cpuUs[0]!.us);
              cpu[s.name]![label === 'A' ? 'redisA' : 'redisB'].push(m.cpuUs[1]!.us);
              lines.push(`| ${round} | ${s.name} | ${label} | ${fmt(m.cpuUs[0]!.us)} µs | ${fmt(m.cpuUs[1]!.us)} µs | ${fmt(m.perSecond)}/s | ${m.p99} ms |`);
            }
          }
        }
      }),
    );
    console.log(
      [
        `jit-broker A/B — ${new Date().toISOString()} — node ${process.version}, ${cpus().length} cores, ${ROUNDS} interleaved rounds, ${DURATION} s after ${WARMUP_S} s warm-up each`,
        `A: ${a.rev} (${a.commit.slice(0, 10)}), B: ${b.rev} (${b.commit.slice(0, 10)})`,
        '',
        '| round | load | rev | broker CPU/request | Redis CPU/request | rate | p99 |',
        '|---|---|---|---|---|---|---|',
        ...lines,
        '',
        ...SCENARIOS.map((s) => `- ${verdict(s.name, cpu[s.name]!.A, cpu[s.name]!.B)}`),
        '',
      ].join('\n'),
    );
  } finally {
    await issuer?.close();
    await redis.stop();
    builds.forEach(removeBuild);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
