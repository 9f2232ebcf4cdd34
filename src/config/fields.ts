/**
 * What the config schema says a path holds, read from the zod schema itself (so it can never
 * disagree with validation): the keys an object may have (for "did you mean") and the type of a
 * field an env override sets (so `JIT__STORE__KEY_PREFIX=jitdeploy:` stays text).
 */
import type { z } from 'zod';

type Node = z.core.$ZodType;
type Def = { type: string; [k: string]: unknown };

const def = (node: Node): Def => (node as unknown as { _zod: { def: Def } })._zod.def;

/** The schema(s) a node stands for once defaults, optionals, pipes and unions are looked through. */
function unwrap(node: Node): Node[] {
  const d = def(node);
  switch (d.type) {
    case 'default':
    case 'prefault':
    case 'optional':
    case 'nullable':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return unwrap(d.innerType as Node);
    case 'pipe':
      return unwrap(d.in as Node);
    case 'lazy':
      return unwrap((d.getter as () => Node)());
    case 'union':
      return (d.options as Node[]).flatMap(unwrap);
    default:
      return [node];
  }
}

/** Every schema the value at `path` (object keys and array indexes) may be checked by. */
export function schemasAt(root: Node, path: readonly PropertyKey[]): Node[] {
  let nodes = unwrap(root);
  for (const seg of path) {
    nodes = nodes.flatMap((n) => {
      const d = def(n);
      if (d.type === 'object') {
        const child = (d.shape as Record<string, Node>)[String(seg)];
        return child ? unwrap(child) : [];
      }
      if (d.type === 'array' && typeof seg === 'number') return unwrap(d.element as Node);
      if (d.type === 'record') return unwrap(d.valueType as Node);
      return [];
    });
  }
  return nodes;
}

/** The keys an object at `path` may have. */
export function keysAt(root: Node, path: readonly PropertyKey[]): string[] {
  const keys = schemasAt(root, path).flatMap((n) => (def(n).type === 'object' ? Object.keys(def(n).shape as object) : []));
  return [...new Set(keys)];
}

/** The known key closest to `key` by edit distance, if close enough to be a typo of it. */
export function didYouMean(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = distance(key.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const swap = i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1] ? prev[j - 2]! : Infinity;
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1), swap);
    }
    prev = row;
  }
  return prev[b.length]!;
}

/** An env override's value that its field's type refuses: reported at the field's path. */
export class EnvValueProblem {
  constructor(readonly message: string) {}
}

/**
 * The value of env override `name` for the field at `path`, by the schema's type there: text as
 * it is for a string (or a duration, or an enum), a number, `true`/`false`, JSON for an object,
 * array or record. A path the schema does not know keeps the text (the schema then names it).
 */
export function coerceEnvValue(root: Node, path: readonly PropertyKey[], name: string, text: string): unknown {
  const nodes = schemasAt(root, path);
  if (nodes.length === 0) return text;
  const types = new Set<string>();
  for (const n of nodes) {
    const d = def(n);
    if (d.type === 'literal') for (const v of d.values as unknown[]) types.add(typeof v);
    else if (d.type === 'enum') types.add('string');
    else types.add(d.type);
  }
  const structured = ['object', 'array', 'record', 'tuple'].some((t) => types.has(t));
  if (structured && (!types.has('string') || /^\s*[[{]/.test(text))) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return new EnvValueProblem(`${name}: must be JSON (this setting is ${[...types].filter((t) => t !== 'string').join(' or ')}), e.g. ${name}='["a","b"]' or '{"key":"value"}'`);
    }
  }
  if (types.has('boolean') && (text === 'true' || text === 'false')) return text === 'true';
  if (types.has('string') || types.has('unknown') || types.has('any')) return text;
  if (types.has('number')) {
    const n = Number(text);
    return /^-?\d+(\.\d+)?$/.test(text.trim()) && Number.isFinite(n) ? n : new EnvValueProblem(`${name}: not a number: "${text}"`);
  }
  if (types.has('boolean')) return new EnvValueProblem(`${name}: must be true or false`);
  return text;
}
