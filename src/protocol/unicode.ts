/**
 * Well-formed Unicode: no lone UTF-16 surrogate. A lone surrogate survives JSON.stringify (as
 * `\ud800`) but not Redis's cjson, which refuses to decode it, nor UTF-8, which has no encoding
 * for it (Node writes U+FFFD instead): a record holding one cannot be read back as written. Every
 * string bound for a grant, a token or an audit event is checked with this. (String.prototype
 * .isWellFormed does the same from ES2024; this compiles against any lib.)
 */
const LONE_SURROGATE = /\p{Cs}/u;

export const isWellFormed = (s: string): boolean => !LONE_SURROGATE.test(s);

export const NOT_WELL_FORMED = 'must be well-formed Unicode (no lone UTF-16 surrogate)';

/**
 * The path of the first string (value or key) in `value` that is not well-formed, e.g.
 * `attributes.pod_name`; undefined when every string is. Walks plain objects and arrays only.
 */
export function illFormedPath(value: unknown, path = ''): string | undefined {
  if (typeof value === 'string') return isWellFormed(value) ? undefined : path || '(value)';
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = illFormedPath(value[i], `${path}[${i}]`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      // An ill-formed key is named by its place only: the path goes into answers and logs.
      const at = `${path ? `${path}.` : ''}${isWellFormed(k) ? k : '(key)'}`;
      if (!isWellFormed(k)) return at;
      const found = illFormedPath(v, at);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}
