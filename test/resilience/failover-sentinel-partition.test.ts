/**
 * Sentinel failover away from a primary that does not die: it stops answering (SIGSTOP by PID, as
 * a partition or a hung host would) while its connections stay open, so the broker's connection
 * neither closes nor errors; its commands only time out. The sentinels promote a replica and
 * announce it (+switch-master): the broker must move on that announcement, without a restart and
 * while the old primary is still stopped, and issue on the new primary. The bound on getting there
 * is down-after (1 s) + vote and promotion + reconnect, with slack for 2 busy cores: it catches a
 * broker that never moves, not a slow one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { createRedisGrantStore, type RedisGrantStore } from '../../src/grants/redis-store.js';
import { silentLogger } from '../../src/log.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { TEST_KEY_PUBLICATION_SECRETS } from '../helpers/redis.js';
import { startRedisSentinel, type RedisSentinelGroup } from '../helpers/redis-sentinel.js';

const DOWN_AFTER_MS = 1000;
const MOVED_BOUND_MS = 15_000;
const PREFIX = 'partition:';

let issuer: OidcIssuer;
let group: RedisSentinelGroup;
let broker: BrokerRuntime;
let onNewPrimary: RedisGrantStore | undefined;
/** The primary SIGSTOPped by the test (resumed before anything stops it: a stopped process ignores SIGTERM). */
let stopped: number | undefined;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  group = await startRedisSentinel({ downAfterMs: DOWN_AFTER_MS, failoverTimeoutMs: 5000 });
  broker = await startTestBroker(issuer, {
    prefix: PREFIX,
    store: {
      kind: 'redis',
      sentinel: { nodes: group.sentinelAddrs.map((a) => `${a.host}:${a.port}`), master_name: group.masterName },
      key_prefix: PREFIX,
      command_timeout: '1s',
      replication: { min_replicas: 1, timeout: '250ms' },
    },
  });
}, 40_000);

afterAll(async () => {
  if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
  await onNewPrimary?.close();
  await broker?.close();
  await group?.stop();
  await issuer?.close();
});

const start = async () =>
  postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token: await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 }) },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'partition' },
  });

describe('Sentinel failover away from a primary that stops answering', () => {
  it('moves to the promoted replica on the announcement, while the old primary still holds the connection open', async () => {
    expect((await start()).status).toBe(201);
    const old = group.primary;
    stopped = old.pid;
    process.kill(old.pid, 'SIGSTOP');

    // Retried as Retry-After asks, within the bound: 503s while the sentinels fail over, then a token.
    const deadline = performance.now() + MOVED_BOUND_MS;
    let res = await start();
    const seen: string[] = [];
    while (res.status !== 201 && performance.now() < deadline) {
      expect(res.status).toBe(503);
      seen.push(String(res.json.error_description));
      await new Promise((r) => setTimeout(r, 1000 * Number(res.headers.get('retry-after'))));
      res = await start();
    }
    expect(res.status, seen.join('\n')).toBe(201);
    expect(seen.length).toBeGreaterThan(0); // the stop was felt

    const newPort = await group.currentPrimary();
    expect(newPort).not.toBe(old.port);
    onNewPrimary = createRedisGrantStore({ url: `redis://127.0.0.1:${newPort}`, keyPrefix: PREFIX, keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
    expect(await onNewPrimary.getGrant(res.json.grant as string)).toMatchObject({ status: 'active' });
  }, 30_000);
});
