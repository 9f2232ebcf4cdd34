/**
 * The writes a task start makes off its own path, to the fixed shard keys that span workloads
 * (the global audit log's shard copies, grants/audit-log.ts; the global grant index,
 * grants/redis-store.ts), batched together: an entry waits up to SHARD_FLUSH_MS, or until
 * SHARD_BATCH_MAX entries of every kind are pending, and then every pending batch is sent in the
 * same event-loop turn, one script call per kind and shard key. On the grant store's connection
 * (auto-pipelining) that is one socket write for all of them, instead of one per kind.
 */

/**
 * Entries wait up to this long (ms), off the request's path, to share one script call per
 * shard. Flushing on the next turn instead (setImmediate) cost a sequential task start about
 * twice as much and 64 concurrent creates ~13% throughput (bench/audit-shard.ts); with 2 ms both
 * are within the bench's noise.
 */
export const SHARD_FLUSH_MS = 2;
/** ...or until this many are pending (of every kind). */
export const SHARD_BATCH_MAX = 256;

/** One kind of batched write: how its entries make a key's batch, and how a batch is sent. */
export interface ShardWriteKind<E, B> {
  /** A new batch holding `entry`. */
  open(entry: E): B;
  /** Adds `entry` to its key's pending batch. */
  add(batch: B, entry: E): void;
  /** Writes one key's batch. Handles its own failures (logs, retries): never rejects. */
  send(key: string, batch: B): Promise<void>;
}

export interface ShardBatches {
  /** Registers a kind of write; returns how to queue one of its entries for a shard key. */
  kind<E, B>(k: ShardWriteKind<E, B>): (key: string, entry: E) => void;
  /** Sends every pending batch now (reads do first, so this instance reads its own writes). */
  flush(): Promise<void>;
}

export function shardBatches(): ShardBatches {
  /** Per kind: takes its pending batches and sends them. */
  const kinds: (() => Promise<void>[])[] = [];
  let pending = 0;
  let timer: NodeJS.Timeout | undefined;

  function flush(): Promise<void> {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (pending === 0) return Promise.resolve();
    pending = 0;
    // Every kind in this turn: auto-pipelining writes them together.
    return Promise.all(kinds.flatMap((take) => take())).then(() => undefined);
  }

  return {
    kind<E, B>(k: ShardWriteKind<E, B>) {
      const batches = new Map<string, B>();
      kinds.push(() => {
        if (batches.size === 0) return [];
        const taken = [...batches];
        batches.clear();
        return taken.map(([key, batch]) => k.send(key, batch));
      });
      return (key: string, entry: E) => {
        const batch = batches.get(key);
        if (batch) k.add(batch, entry);
        else batches.set(key, k.open(entry));
        if (++pending >= SHARD_BATCH_MAX) void flush();
        else if (!timer) {
          timer = setTimeout(() => void flush(), SHARD_FLUSH_MS);
          timer.unref();
        }
      };
    },
    flush,
  };
}
