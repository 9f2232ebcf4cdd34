/**
 * `check-config --probe`: beyond what the file says, whether what it names answers: the Redis
 * store (a PING within store.command_timeout) and each OIDC issuer's keys (fetched once, as serve
 * does at start). One result per probe; none of them writes anything.
 */
import { Redis } from 'ioredis';
import { createOidcAttestor } from '../attestation/oidc/index.js';
import { redactRedisUrl } from '../grants/redis-store.js';
import { silentLogger } from '../log.js';
import { systemClock } from '../util/clock.js';
import type { Config } from './schema.js';

export interface ProbeResult {
  /** What was probed, e.g. `store redis://redis:6379` or `issuer https://idp.example`. */
  target: string;
  ok: boolean;
  detail: string;
}

export async function probeConfig(config: Config): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  if (config.store.kind === 'redis') results.push(await probeRedis(config.store.url, config.store.command_timeout));
  if (config.attestation.oidc && config.attestation.oidc.issuers.length > 0) {
    const oidc = createOidcAttestor(config.attestation.oidc, { clock: systemClock, log: silentLogger });
    try {
      await oidc.warm();
      for (const s of oidc.status()) {
        const target = `issuer ${s.issuer}`;
        if (s.error !== undefined) results.push({ target, ok: false, detail: s.error });
        else if (s.keys === 0) results.push({ target, ok: false, detail: 'no usable key' });
        else results.push({ target, ok: true, detail: `${s.keys} key${s.keys === 1 ? '' : 's'}` });
      }
    } finally {
      oidc.close?.();
    }
  }
  return results;
}

async function probeRedis(url: string, timeoutMs: number): Promise<ProbeResult> {
  const target = `store ${redactRedisUrl(url)}`;
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(timeoutMs, 1000),
    commandTimeout: timeoutMs,
    disableClientInfo: true,
    retryStrategy: () => null,
    reconnectOnError: null,
  });
  redis.on('error', () => {}); // reported below, once
  try {
    await redis.connect();
    const answer = await redis.ping();
    return { target, ok: true, detail: `reachable (${answer})` };
  } catch (e) {
    return { target, ok: false, detail: (e as Error).message || String(e) };
  } finally {
    redis.disconnect();
  }
}
