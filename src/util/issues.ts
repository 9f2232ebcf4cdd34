/** A validation problem as zod reports it. */
export interface Issue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

/** Formats a path the way people write it: `policies[2].max_ttl`, `intent.actions[0]`. */
export function formatPath(path: readonly PropertyKey[], root = '(root)'): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out || root;
}

/** Every issue as `path: message`. */
export const issuesToProblems = (issues: readonly Issue[], root?: string): string[] =>
  issues.map((i) => `${formatPath(i.path, root)}: ${i.message}`);
