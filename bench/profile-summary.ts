/**
 * npx tsx bench/profile-summary.ts <file.cpuprofile> [top]: where a V8 CPU profile's time goes
 * (one written by BENCH_PROFILE=dir): self time by part (the broker's own modules, each package
 * under node_modules, Node's internals, GC, idle) and the top functions by self time, each as a
 * share of the busy (non-idle) time.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) throw new Error('usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [top]');
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));

/** Which part a frame belongs to: a package, a broker module, Node, or V8's own entries. */
function part(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const own = /\/(src|dist)\/(.+?)\.[jt]s$/.exec(url);
  return own ? `broker ${own[2]}` : url;
}

const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const parts = new Map<string, number>();
const fns = new Map<string, number>();
let total = 0;
let idle = 0;
for (const [id, us] of selfUs) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  total += us;
  if (functionName === '(idle)') {
    idle += us;
    continue;
  }
  const p = part(url, functionName);
  parts.set(p, (parts.get(p) ?? 0) + us);
  const name = `${functionName || '(anonymous)'} ${url ? `${url.replace(/^.*?(node_modules|src|dist)\//, '$1/')}:${lineNumber + 1}` : ''}`;
  fns.set(name, (fns.get(name) ?? 0) + us);
}
const busy = total - idle;
const pct = (us: number) => `${((us / busy) * 100).toFixed(1)}%`;
const rows = (m: Map<string, number>, n: number) =>
  [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, us]) => `| ${pct(us)} | ${(us / 1000).toFixed(0)} ms | ${k.replace(/\|/g, '\\|')} |`);
console.log(
  [
    `${file}: ${(total / 1e6).toFixed(1)} s profiled, ${(busy / 1e6).toFixed(1)} s busy (${((busy / total) * 100).toFixed(0)}%)`,
    '',
    '| share of busy | self | part |',
    '|---|---|---|',
    ...rows(parts, 20),
    '',
    '| share of busy | self | function |',
    '|---|---|---|',
    ...rows(fns, top),
    '',
  ].join('\n'),
);
