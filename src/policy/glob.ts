/**
 * Globs for workload ids and resources. `*` matches within one path segment and never a `*`
 * character itself; `**` matches anything, across segments. Because a literal `*` in a
 * requested resource can only be matched by a rule's `**` (or by an identical pattern), a
 * request can never name a wider pattern than its rule allows.
 */
export type Matcher = (value: string) => boolean;

export function compileGlob(pattern: string): Matcher {
  if (!pattern.includes('*')) return (value) => value === pattern;
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*') {
      if (pattern[i + 1] === '*') {
        source += '.*';
        i++;
      } else {
        source += '[^/*]*';
      }
    } else {
      source += ch.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
    }
  }
  const re = new RegExp(`^${source}$`, 's');
  return (value) => value === pattern || re.test(value);
}
