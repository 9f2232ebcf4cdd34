/**
 * The resource-server entry points ship to services that run no broker: jit-broker/verify and
 * jit-broker/hono import only src/protocol/ and their own modules, and of packages only jose,
 * hono, zod (protocol's schemas) and node: built-ins. Walks the real import graph from each entry.
 */
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const ALLOWED_DIRS = ['src/protocol/', 'src/verify/', 'src/hono/'];
const ALLOWED_PACKAGES = new Set(['jose', 'hono', 'zod']);

function walk(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [resolve(ROOT, entry)];
  while (queue.length) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const source = readFileSync(file, 'utf8');
    // Static imports and re-exports (type-only ones too: they must not reach server types either), and dynamic import().
    for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) {
      const spec = (m[1] ?? m[2] ?? m[3])!;
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
      else packages.add(spec.startsWith('node:') ? 'node:' : spec.split('/')[0]!);
    }
  }
  return { files, packages };
}

describe('the verifier entry points import no server code', () => {
  for (const entry of ['src/verify/index.ts', 'src/hono/index.ts']) {
    it(entry, () => {
      const { files, packages } = walk(entry);
      const outside = [...files].map((f) => relative(ROOT, f)).filter((f) => !ALLOWED_DIRS.some((d) => f.startsWith(d)));
      expect(outside).toEqual([]);
      expect([...packages].filter((p) => p !== 'node:' && !ALLOWED_PACKAGES.has(p))).toEqual([]);
      expect(files.size).toBeGreaterThan(3);
    });
  }
  it('src/verify does not import hono (a node:http user needs no hono)', () => {
    expect(walk('src/verify/index.ts').packages.has('hono')).toBe(false);
  });
});
