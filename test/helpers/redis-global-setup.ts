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
 */
export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const logs = startLogCapture();
  provide('logDir', logs.dir);
  const given = process.env.REDIS_URL;
  const server = given ? undefined : await startRedisServer();
  provide('redisUrl', given ?? server!.url);
  const temps = startTempCheck();
  return async () => {
    try {
      await server?.stop();
      logs.finish();
    } finally {
      temps.finish();
    }
  };
}
