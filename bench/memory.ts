/**
 * Redis memory per grant, everything included: the record, its index entries, its audit event,
 * the workloads hint index. INFO `used_memory` of a fresh redis-server before and after writing
 * the grants through createGrant, read on a connection of the bench's own that stays open
 * throughout (the store's connection, with its buffers, is closed before the second reading).
 * Two shapes: many workloads with a page of grants each, and a few workloads with many each
 * (Redis encodes small sorted sets and hashes compactly, so the shape matters).
 */
import { Redis } from 'ioredis';
import { startRedisServer } from '../test/helpers/redis.js';
import { benchStore, overWorkloads, writeGrants } from './grants.js';

export interface MemoryFigure {
  key: string;
  workloads: number;
  perWorkload: number;
  /** used_memory after − before. */
  bytes: number;
  bytesPerGrant: number;
  seconds: number;
}

async function usedMemory(client: Redis): Promise<number> {
  const info = await client.info('memory');
  const m = /^used_memory:(\d+)/m.exec(info);
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

async function measureShape(key: string, workloads: number, perWorkload: number): Promise<MemoryFigure> {
  const redis = await startRedisServer();
  const probe = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await probe.connect();
    const before = await usedMemory(probe);
    const store = benchStore(redis.url, 'jit:');
    let seconds: number;
    try {
      ({ seconds } = await writeGrants(store, workloads * perWorkload, 256, overWorkloads(workloads)));
    } finally {
      await store.close();
    }
    const bytes = (await usedMemory(probe)) - before;
    const figure = { key, workloads, perWorkload, bytes, bytesPerGrant: bytes / (workloads * perWorkload), seconds };
    console.error(`memory: ${workloads} workloads × ${perWorkload}: ${Math.round(figure.bytesPerGrant)} B per grant (${(bytes / 2 ** 20).toFixed(1)} MiB)`);
    return figure;
  } finally {
    probe.disconnect();
    await redis.stop();
  }
}

/** 100,000 grants as 1,000 workloads × 100, then skewed as 10 workloads × 10,000. */
export async function measureMemory(): Promise<MemoryFigure[]> {
  return [await measureShape('memory', 1000, 100), await measureShape('memory-skewed', 10, 10_000)];
}
