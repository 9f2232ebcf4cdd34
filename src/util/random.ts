import { randomFillSync } from 'node:crypto';

/**
 * Random identifiers from the system CSPRNG, drawn from a pooled buffer: one OpenSSL call per
 * 4 KiB instead of one per id (node's own randomUUID pools the same way). Bytes are never reused.
 */
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let offset = POOL_SIZE;

function take(n: number): Buffer {
  if (n > POOL_SIZE) throw new RangeError('too many random bytes at once');
  if (offset + n > POOL_SIZE) {
    randomFillSync(pool);
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}

export const randomHex = (bytes: number): string => take(bytes).toString('hex');
export const randomBase64url = (bytes: number): string => take(bytes).toString('base64url');
