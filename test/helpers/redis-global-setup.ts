import type { TestProject } from 'vitest/node';
import { startRedisServer } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/**
 * Vitest global setup: every test file gets a real Redis. `REDIS_URL` when set; otherwise a
 * private `redis-server` on a free loopback port, stopped (by its PID) in teardown.
 */
export default async function setup({ provide }: TestProject): Promise<(() => Promise<void>) | undefined> {
  const given = process.env.REDIS_URL;
  if (given) {
    provide('redisUrl', given);
    return undefined;
  }
  const server = await startRedisServer();
  provide('redisUrl', server.url);
  return async () => {
    await server.stop();
  };
}
