/**
 * The environment variables code reads, found by reading the code: `process.env.X`, `env.X`,
 * `env['X']` (any object named env: the config loader and the CLI take the environment as a
 * parameter), a prefix tested with `startsWith('X_')` (JIT__<PATH> overrides), and, for
 * examples/, their `env('X')` helper.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const READS = [/\benv\.([A-Z][A-Z0-9_]*)\b/g, /\benv\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\]/g, /\benv\(\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\)/g];
/** A prefix: reported with a trailing `*`, e.g. `JIT__*`. */
const PREFIX = /\bstartsWith\(\s*['"]([A-Z][A-Z0-9_]*_)['"]\s*\)/g;

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return tsFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/** Each variable read under `dir` (`NAME`, or `PREFIX*`) with the files that read it. */
export function envReads(dir: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const add = (name: string, file: string) => {
    const files = found.get(name) ?? [];
    if (!files.includes(file)) files.push(file);
    found.set(name, files);
  };
  for (const file of tsFiles(dir)) {
    const text = readFileSync(file, 'utf8');
    for (const re of READS) for (const m of text.matchAll(re)) add(m[1]!, file);
    for (const m of text.matchAll(PREFIX)) add(`${m[1]!}*`, file);
  }
  return found;
}

/** Whether `name` (as compose or a user sets it) is one of `reads` (names and `PREFIX*`). */
export function isRead(name: string, reads: Map<string, string[]>): boolean {
  return reads.has(name) || [...reads.keys()].some((r) => r.endsWith('*') && name.startsWith(r.slice(0, -1)));
}
