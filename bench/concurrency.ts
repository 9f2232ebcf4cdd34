/**
 * npx tsx bench/concurrency.ts: only the hot-path part of `npm run bench`: task start and renewal
 * on one broker process and the peer's token endpoint, at each of BENCH_CONNECTIONS (1, 8, 64),
 * BENCH_RUNS times (each run on a fresh Redis, issuer, broker and peer), then the concurrency
 * table and its targets. About 2 minutes a run at BENCH_DURATION=10; the table goes to stdout and
 * to bench/results/<ISO time>-concurrency.md.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startOidcIssuer, type OidcIssuer } from '../src/dev/oidc-issuer.js';
import { freePort } from '../src/util/net.js';
import { startRedisServer } from '../test/helpers/redis.js';
import { withBroker } from './broker.js';
import { CONNECTION_LEVELS, DURATION_S, RUNS, WARMUP_S } from './config.js';
import type { Measured } from './load.js';
import { peerScenario } from './peer.js';
import { concurrencyTable, concurrencyTargets, targetTable } from './report.js';
import { BROKER_PREFIX, brokerConfig, issueTraffic, startAndRenewLevels } from './scenarios.js';

async function measureRun(dir: string): Promise<Measured[]> {
  const redis = await startRedisServer();
  let issuer: OidcIssuer | undefined;
  try {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    const env = { dir, redis, issuer };
    const port = await freePort();
    const issue = await issueTraffic(issuer);
    const broker = await withBroker({ name: 'http', dir, url: `http://127.0.0.1:${port}`, config: brokerConfig(env, port, BROKER_PREFIX) }, (b) =>
      startAndRenewLevels(b, env, issue, redis.pid),
    );
    return [...broker, ...(await peerScenario())];
  } finally {
    await issuer?.close();
    await redis.stop();
  }
}

async function main() {
  const startedAt = new Date();
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
  try {
    const byKey = new Map<string, Measured[]>();
    for (let run = 1; run <= RUNS; run++) {
      console.error(`run ${run} of ${RUNS}`);
      for (const m of await measureRun(dir)) byKey.set(m.key, [...(byKey.get(m.key) ?? []), m]);
    }
    const runs = RUNS > 1 ? `median of ${RUNS} runs (min–max)` : 'one run';
    const text = [
      `jit-broker bench, concurrency — ${startedAt.toISOString()} — node ${process.version}, ${cpus().length} cores, ${CONNECTION_LEVELS.join(', ')} keep-alive connections, ${DURATION_S} s after ${WARMUP_S} s warm-up, ${runs}`,
      '',
      ...concurrencyTable({ byKey }),
      '',
      ...targetTable(concurrencyTargets({ byKey })),
      '',
    ].join('\n');
    console.log(text);
    mkdirSync('bench/results', { recursive: true });
    writeFileSync(join('bench/results', `${startedAt.toISOString().replace(/[:.]/g, '-')}-concurrency.md`), text);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
