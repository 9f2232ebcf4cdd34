/**
 * Workload id spaces: one workload id, one attestation source.
 *
 * Every source produces ids that all start with a fixed prefix known at config load: an OIDC
 * issuer's mapping (`k8s://<cluster>/`, `github://`, or a template's text up to its first claim
 * placeholder, with `{iss_host}`, `{iss_path}` and `{iss}` filled in from the issuer), and an X.509
 * trust domain (`spiffe://<td>/`). Config load refuses two sources when one prefix is a prefix of
 * the other (compared ignoring case); otherwise the two differ at some character before either
 * ends, so no id can start with both. Decidable, and conservative: it may refuse two templates
 * whose claims could never in fact meet, never accept two that can.
 */
export interface IdSpace {
  /** Where the source is configured, for the issue. */
  path: (string | number)[];
  /** The source as an operator knows it, e.g. `issuer https://idp.example/tenantA (preset github)`. */
  source: string;
  /** What every id of the source starts with. */
  prefix: string;
}

const overlap = (a: IdSpace, b: IdSpace) => {
  const [x, y] = [a.prefix.toLowerCase(), b.prefix.toLowerCase()];
  return x.startsWith(y) || y.startsWith(x);
};

/** An issue at the later of every two sources that can produce the same workload id, naming both. */
export function idSpaceCollisions(spaces: readonly IdSpace[], only?: (a: IdSpace, b: IdSpace) => boolean): { path: IdSpace['path']; message: string }[] {
  const issues: { path: IdSpace['path']; message: string }[] = [];
  spaces.forEach((b, j) => {
    for (const a of spaces.slice(0, j)) {
      if (!overlap(a, b) || (only && !only(a, b))) continue;
      issues.push({
        path: b.path,
        message:
          `${b.source} can produce the same workload ids as ${a.source}: their ids start with "${b.prefix}" and "${a.prefix}". ` +
          'Give each source a fixed id prefix that no other source has and that is no prefix of another source\'s ' +
          '(a distinct literal, a distinct cluster, or {iss_path} for issuers on one host).',
      });
    }
  });
  return issues;
}
