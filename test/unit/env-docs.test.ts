/**
 * Every environment variable the code reads is documented: the reads are found in the code
 * (test/helpers/env-reads.ts: `process.env.X`, `env.X`, `env['X']`, a `startsWith('X_')` prefix),
 * and each must be a row of a table in docs/configuration.md; every variable a row names must be
 * read somewhere (no documented variable that nothing reads).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { envReads } from '../helpers/env-reads.js';

const DOC = 'docs/configuration.md';

/** The variables in the first column of the doc's table rows: `NAME`, `A`, `B`, or `PREFIX<…>` as `PREFIX*`. */
function documented(): Set<string> {
  const names = new Set<string>();
  for (const line of readFileSync(DOC, 'utf8').split('\n')) {
    const first = /^\|([^|]*)\|/.exec(line)?.[1];
    if (!first) continue;
    for (const m of first.matchAll(/`([A-Z][A-Z0-9_]*)(<[A-Z_]+>)?`/g)) names.add(m[2] ? `${m[1]}*` : m[1]!);
  }
  return names;
}

describe(`every environment variable read is documented in ${DOC}`, () => {
  const src = envReads('src');
  const examples = envReads('examples');
  const doc = documented();

  it('finds the reads (the scanner sees the known ones)', () => {
    for (const known of ['REDIS_URL', 'JIT_CONFIG', 'JIT_ISSUER', 'PORT', 'LOG_LEVEL', 'JIT_KEY_PUBLICATION_SECRET', 'JIT__*', 'JIT_OPERATOR_CREDENTIAL']) {
      expect([...src.keys()], known).toContain(known);
    }
    expect([...examples.keys()]).toContain('JIT_RS_CREDENTIAL');
  });

  it('documents every variable src/ reads (the broker, its CLI, its SDK), and every one examples/ reads', () => {
    const missing = [...src, ...examples].filter(([name]) => !doc.has(name)).map(([name, files]) => `${name} (read in ${files.join(', ')})`);
    expect(missing, `add a table row to ${DOC} for each`).toEqual([]);
  });

  it('documents no variable that nothing reads', () => {
    const stale = [...doc].filter((name) => !src.has(name) && !examples.has(name));
    expect(stale).toEqual([]);
  });
});
