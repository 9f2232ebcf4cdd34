/**
 * The topology harnesses themselves (test/helpers/redis-cluster.ts, redis-sentinel.ts): each
 * starts a real topology a client can use, and `stop()` leaves no process and no directory.
 */
import { existsSync } from 'node:fs';
import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { startRedisCluster } from '../helpers/redis-cluster.js';
import { startRedisSentinel } from '../helpers/redis-sentinel.js';

/** True while a process with this PID exists (signal 0 checks without signalling). */
const running = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('redis cluster harness', () => {
  it('starts three primaries with a replica each, serves every slot, and stop() leaves nothing', async () => {
    const cluster = await startRedisCluster({ replicas: true });
    const pids = cluster.nodes.map((n) => n.process.pid);
    let client: Cluster | undefined;
    try {
      expect(cluster.nodes).toHaveLength(6);
      const primaries = await cluster.primaries();
      expect(primaries.map((n) => n.port).sort()).toEqual(cluster.nodes.filter((n) => n.initialRole === 'primary').map((n) => n.port).sort());
      expect(primaries).toHaveLength(3);
      client = new Cluster([...cluster.startupNodes], { lazyConnect: true });
      await client.connect();
      // Keys in different slots land on different primaries; each reads back through the client.
      for (const tag of ['a', 'b', 'c', 'd', 'e', 'f']) await client.set(`harness:{${tag}}`, tag);
      for (const tag of ['a', 'b', 'c', 'd', 'e', 'f']) expect(await client.get(`harness:{${tag}}`)).toBe(tag);
      const owners = new Set(await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map(async (t) => String(await client!.cluster('KEYSLOT', `harness:{${t}}`)))));
      expect(owners.size).toBeGreaterThan(1);
    } finally {
      client?.disconnect();
      await cluster.stop();
    }
    expect(pids.filter(running)).toEqual([]);
    expect(existsSync(cluster.dir)).toBe(false);
  });
});

describe('redis sentinel harness', () => {
  it('starts a primary, two replicas and three agreeing sentinels, and stop() leaves nothing', async () => {
    const group = await startRedisSentinel();
    const pids = [...group.dataNodes, ...group.sentinels].map((p) => p.pid);
    let client: Redis | undefined;
    try {
      expect(pids).toHaveLength(6);
      expect(await group.currentPrimary()).toBe(group.primary.port);
      client = new Redis({ sentinels: [...group.sentinelAddrs], name: group.masterName, lazyConnect: true });
      await client.connect();
      await client.set('harness:sentinel', 'yes');
      expect(await client.get('harness:sentinel')).toBe('yes');
      expect(String(await group.command(group.primary, 'ROLE'))).toMatch(/^master/);
    } finally {
      client?.disconnect();
      await group.stop();
    }
    expect(pids.filter(running)).toEqual([]);
    expect(existsSync(group.dir)).toBe(false);
  });
});
