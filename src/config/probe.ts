/**
 * `check-config --probe`: beyond what the file says, whether what it names answers: the Redis
 * store (a PING within store.command_timeout) and each OIDC issuer's keys (fetched once, as serve
 * does at start). One result per probe; none of them writes anything.
 */
import { createOidcAttestor } from '../attestation/oidc/index.js';
import { connectRedis, describeRedis, redisConnectionFromConfig } from '../grants/redis-connection.js';
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
  if (config.store.kind === 'redis') results.push(await probeRedis(config.store));
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

async function probeRedis(store: Extract<Config['store'], { kind: 'redis' }>): Promise<ProbeResult> {
  let spec;
  try {
    spec = redisConnectionFromConfig(store);
  } catch (e) {
    return { target: 'store', ok: false, detail: (e as Error).message };
  }
  const target = `store ${describeRedis(spec)}`;
  // The store's own client, one connection attempt: a cluster or sentinel answers as the broker would see it.
  const redis = connectRedis(spec, { commandTimeoutMs: store.command_timeout, connectTimeoutMs: Math.max(store.command_timeout, 1000), reconnect: false });
  // The connection's own error says why (a certificate, a refused password); connect() only that it closed.
  let cause: string | undefined;
  redis.on('error', (e: Error) => {
    cause ??= e.message;
  });
  try {
    await redis.connect();
    const answer = await redis.ping();
    return { target, ok: true, detail: `reachable (${answer})` };
  } catch (e) {
    return { target, ok: false, detail: cause ?? ((e as Error).message || String(e)) };
  } finally {
    redis.disconnect();
  }
}
