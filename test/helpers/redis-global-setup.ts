import type { TestProject } from 'vitest/node';
import { startLogCapture } from './log-capture.js';
import { startRedisServer } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/**
 * Vitest global setup: every test file gets a real Redis, `REDIS_URL` when set; otherwise a
 * private `redis-server` on a free loopback port, stopped (by its PID) in teardown. And a per-run
 * log directory (`logDir`) that test brokers log into at trace level; the teardown scans it and
 * fails the run if any log holds a token or a private key (test/helpers/log-capture.ts).
 */
export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  const logs = startLogCapture();
  provide('logDir', logs.dir);
  const given = process.env.REDIS_URL;
  const server = given ? undefined : await startRedisServer();
  provide('redisUrl', given ?? server!.url);
  return async () => {
    await server?.stop();
    logs.finish();
  };
}
