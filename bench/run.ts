/**
 * npm run bench: issuance throughput of POST /v1/tasks on loopback, next to the in-process cost
 * of one ES256 sign. The broker runs as its own process (the real CLI, `serve --config`), backed by
 * a private redis-server; autocannon loads it from this process with 64 connections.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { stringify } from 'yaml';
import { startOidcIssuer } from '../src/dev/oidc-issuer.js';
import { freePort } from '../src/util/net.js';
import { startRedisServer } from '../test/helpers/redis.js';
import { measureJoseSign, measureSign, measureVerify, type OpCost } from './sign.js';

const DURATION_S = Number(process.env.BENCH_DURATION ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const WARMUP_S = 2;

/** utime + stime of a process in seconds (Linux /proc). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const op = (what: string, c: OpCost) => [what, `${c.opsPerSec}/s`, `${c.usPerOp} µs`, '', '', ''];

async function main() {
  const sign = await measureSign();
  const joseSign = await measureJoseSign();
  const verify = await measureVerify();
  const redis = await startRedisServer();
  const issuer = await startOidcIssuer({ alg: 'ES256' });
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
  const configPath = join(dir, 'broker.yaml');
  writeFileSync(
    configPath,
    stringify({
      issuer: `http://127.0.0.1:${port}`,
      listen: { host: '127.0.0.1', port },
      store: { kind: 'redis', url: redis.url, key_prefix: 'bench:' },
      grants: { max_active_per_workload: 100_000 },
      log: { level: 'info' },
      attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
      policies: [{ name: 'bench', workloads: ['k8s://bench/ns/bench/sa/*'], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'] }],
    }),
  );
  // BENCH_PROFILE=dir writes a V8 CPU profile of the broker there (open it in Chrome DevTools).
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
  const broker = spawn(process.execPath, [...profile, '--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', configPath], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    const url = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      if (i > 100) throw new Error('broker did not become ready');
      const ok = await fetch(`${url}/readyz`).then((r) => r.ok).catch(() => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // The same platform token reused for every request, as Kubernetes workloads do.
    const token = await issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount: 'loader', audience: 'jit-broker', ttlSeconds: 3600 });
    const body = JSON.stringify({
      attestation: { kind: 'oidc', token },
      intent: { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' },
    });
    const request = { url: `${url}/v1/tasks`, method: 'POST' as const, headers: { 'content-type': 'application/json' }, body, connections: CONNECTIONS };
    await autocannon({ ...request, duration: WARMUP_S });
    const cpuBefore = { broker: cpuSeconds(broker.pid!), redis: cpuSeconds(redis.pid) };
    const result = await autocannon({ ...request, duration: DURATION_S });
    const cpu = { broker: cpuSeconds(broker.pid!) - cpuBefore.broker, redis: cpuSeconds(redis.pid) - cpuBefore.redis };
    const ok = result['2xx'];
    const rps = ok / DURATION_S;
    const rows = [
      ['POST /v1/tasks (platform token, reused)', `${Math.round(rps)}/s`, `${result.latency.p50} ms`, `${result.latency.p99} ms`, `${result.non2xx} non-2xx, ${result.errors} errors`, `${((cpu.broker / ok) * 1e6).toFixed(0)} µs broker + ${((cpu.redis / ok) * 1e6).toFixed(0)} µs redis`],
      op('ES256 task-token sign (node:crypto, in-process, one at a time)', sign),
      op('ES256 sign via jose/WebCrypto (for comparison)', joseSign),
      op('ES256 inbound token verify (jose jwtVerify)', verify),
    ];
    const table = [
      `jit-broker bench — ${new Date().toISOString()} — node ${process.version}, ${CONNECTIONS} connections, ${DURATION_S} s after ${WARMUP_S} s warm-up`,
      '',
      '| what | throughput | p50 | p99 | failures | CPU per request |',
      '|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.join(' | ')} |`),
      '',
    ].join('\n');
    console.log(table);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(join('bench/results', `${new Date().toISOString().replace(/[:.]/g, '-')}.md`), table);
  } finally {
    const exited = new Promise((r) => broker.once('exit', r));
    broker.kill('SIGTERM');
    await exited; // a CPU profile is written on exit
    await issuer.close();
    await redis.stop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
