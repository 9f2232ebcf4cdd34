import { InvalidRequest } from '../errors.js';
import type { IndexPosition } from '../grants/store.js';

/**
 * Opaque page cursors: base64url of JSON `{v, s, i}`, a position in a newest-first index (score,
 * member). A position stays valid while entries are added or revoked: new grants are newer than
 * it (they come before it), and revoking changes no index. What a cursor names is only where to
 * continue: the query's filters come with each call.
 */
const MAX_CURSOR = 1024;

export function encodeCursor(pos: IndexPosition): string {
  return Buffer.from(JSON.stringify({ v: 1, s: pos.score, i: pos.id })).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): IndexPosition | undefined {
  if (cursor === undefined) return undefined;
  const bad = () => new InvalidRequest('cursor is not one this API returned');
  if (cursor.length > MAX_CURSOR || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const o = v as { v?: unknown; s?: unknown; i?: unknown };
  if (typeof v !== 'object' || v === null || o.v !== 1 || typeof o.s !== 'number' || !Number.isSafeInteger(o.s) || o.s < 0 || typeof o.i !== 'string' || o.i.length > 4096)
    throw bad();
  return { score: o.s, id: o.i };
}
