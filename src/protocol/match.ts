/**
 * The matching rules of intents: one implementation for the broker's policy (which decides what a
 * task may be granted) and the resource-server verifier (which checks a request against what was
 * granted), so the two can never disagree.
 *
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

/** The action that stands for every action in an allowed list. */
export const ANY_ACTION = '*';

/** Actions: allowed when listed exactly, or when the list holds `*`. */
export function compileActions(allowed: readonly string[]): Matcher {
  if (allowed.includes(ANY_ACTION)) return () => true;
  const set = new Set(allowed);
  return (action) => set.has(action);
}

/**
 * Resources: allowed when one of the patterns matches. An empty list allows no resource (a rule
 * that names none covers only requests that name none; a grant that names none covers none).
 */
export function compileResources(patterns: readonly string[]): Matcher {
  const matchers = patterns.map(compileGlob);
  if (matchers.length === 1) return matchers[0]!;
  return (resource) => matchers.some((m) => m(resource));
}
