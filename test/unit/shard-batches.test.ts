import { describe, expect, it } from 'vitest';
import { SHARD_BATCH_MAX, SHARD_FLUSH_MS, shardBatches, type ShardWriteKind } from '../../src/grants/shard-batches.js';

/** A kind whose batches are lists, recording each send with the turn it was made in. */
function recorder(name: string, sent: { kind: string; key: string; entries: number[]; turn: number }[], turn: () => number): ShardWriteKind<number, number[]> {
  return {
    open: (e) => [e],
    add: (b, e) => void b.push(e),
    send: (key, entries) => {
      sent.push({ kind: name, key, entries, turn: turn() });
      return Promise.resolve();
    },
  };
}

describe('shard batches (the off-path writes to shard keys)', () => {
  it('sends every kind of write, one batch per key, in one turn once SHARD_FLUSH_MS has passed', async () => {
    let turn = 0;
    const sent: { kind: string; key: string; entries: number[]; turn: number }[] = [];
    const batches = shardBatches();
    const copy = batches.kind(recorder('copy', sent, () => turn));
    const index = batches.kind(recorder('index', sent, () => turn));
    copy('{ga:1}', 1);
    index('{gi:1}', 10);
    copy('{ga:2}', 2);
    copy('{ga:1}', 3);
    index('{gi:1}', 11);
    await new Promise((r) => setImmediate(r));
    expect(sent).toEqual([]); // still waiting
    turn = 1;
    await new Promise((r) => setTimeout(r, SHARD_FLUSH_MS + 20));
    expect(sent).toEqual([
      { kind: 'copy', key: '{ga:1}', entries: [1, 3], turn: 1 },
      { kind: 'copy', key: '{ga:2}', entries: [2], turn: 1 },
      { kind: 'index', key: '{gi:1}', entries: [10, 11], turn: 1 },
    ]);
    // Sent once: nothing is pending afterwards.
    await batches.flush();
    expect(sent).toHaveLength(3);
  });

  it('sends at once on flush(), and at SHARD_BATCH_MAX entries of all kinds together', async () => {
    const sent: { kind: string; key: string; entries: number[]; turn: number }[] = [];
    const batches = shardBatches();
    const copy = batches.kind(recorder('copy', sent, () => 0));
    const index = batches.kind(recorder('index', sent, () => 0));
    copy('a', 1);
    index('b', 2);
    await batches.flush();
    expect(sent.map((s) => [s.kind, s.entries])).toEqual([
      ['copy', [1]],
      ['index', [2]],
    ]);
    sent.length = 0;
    for (let i = 0; i < SHARD_BATCH_MAX - 1; i++) (i % 2 ? copy : index)('k', i);
    expect(sent).toEqual([]);
    index('k', -1); // the last one fills the batch: sent synchronously
    expect(sent.map((s) => s.entries.length).reduce((a, b) => a + b, 0)).toBe(SHARD_BATCH_MAX);
    expect(sent.find((s) => s.kind === 'index')!.entries.at(-1)).toBe(-1);
    // No timer left to send an empty flush later.
    await new Promise((r) => setTimeout(r, SHARD_FLUSH_MS + 20));
    expect(sent).toHaveLength(2);
  });
});
