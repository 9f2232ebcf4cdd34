import { constants } from 'node:os';
import type { TestProject } from 'vitest/node';
import { startLogCapture } from './log-capture.js';
import { startRedisServer } from './redis.js';
import { startTempCheck } from './temp-check.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/**
 * Vitest global setup: every test file gets a real Redis, `REDIS_URL` when set; otherwise a
 * private `redis-server` on a free loopback port, stopped (by its PID) in teardown. And a per-run
 * log directory (`logDir`) that test brokers log into at trace level; the teardown scans it and
 * fails the run if any log holds a token or a private key (test/helpers/log-capture.ts). Last,
 * a private TMPDIR for the tests: the teardown fails the run if a test left anything in it
 * (test/helpers/temp-check.ts). Redis and the log directory are made before it, in the real one.
 * An interrupted run (Ctrl-C, a `timeout`, a CI cancel) gets no teardown: the signal handler
 * below does the same cleanup, then exits as the signal would have.
 */
export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const logs = startLogCapture();
  provide('logDir', logs.dir);
  const given = process.env.REDIS_URL;
  const server = given ? undefined : await startRedisServer();
  provide('redisUrl', given ?? server!.url);
  const temps = startTempCheck();
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const interrupted = (signal: NodeJS.Signals) => {
    try {
      logs.finish();
    } catch {
      // secrets found: the logs stay for reading, named on stderr
    }
    try {
      temps.finish();
    } catch {
      // what tests left is named on stderr, and removed anyway
    }
    // Exit hooks stop the redis-server child (test/helpers/redis.ts).
    process.exit(128 + (constants.signals[signal] ?? 0));
  };
  for (const s of signals) process.once(s, interrupted);
  return async () => {
    for (const s of signals) process.off(s, interrupted);
    try {
      await server?.stop();
      logs.finish();
    } finally {
      temps.finish();
    }
  };
}
