import { isIPv4 } from 'node:net';
import type { IdSpace } from '../attestation/id-spaces.js';
import { oidcIdSpaces } from '../attestation/oidc/index.js';
import { isTrustedProxy, trustedProxyList } from '../http/client-cert.js';
import type { Config } from './schema.js';

/**
 * What a config may say but probably does not mean: printed by `check-config`, logged by `serve`.
 * Never a reason to refuse the config (those are schema issues).
 */
export function configWarnings(config: Config): string[] {
  return [
    ...reachabilityWarnings(config),
    ...proxyWarnings(config),
    ...platformTokenWarnings(config),
    ...globalIndexWarnings(config),
  ];
}

/**
 * The attestation sources `serve` builds from this config, each with the fixed prefix of every id
 * it can produce (attestation/id-spaces.ts): an X.509 trust domain per client CA bundle, and each
 * OIDC issuer's mapping.
 */
export function attestationSources(config: Config): IdSpace[] {
  const tds = Object.keys(config.tls?.client_ca_bundles ?? {}).map((td) => ({
    path: ['tls', 'client_ca_bundles', td],
    source: `X.509 trust domain ${td}`,
    prefix: `spiffe://${td}/`,
  }));
  return [...tds, ...oidcIdSpaces(config.attestation.oidc?.issuers ?? []).map((s) => ({ ...s, path: ['attestation', 'oidc', ...s.path] }))];
}

/**
 * Whether a rule's workload pattern can match an id of a source: its literal text up to the first
 * `*` (all of it when it has none) and the source's prefix must agree as far as both go. Compared
 * ignoring case, like the id-space check: it may miss a pattern that differs only in case, never
 * warn about one that can match.
 */
function canMatch(pattern: string, source: IdSpace): boolean {
  const star = pattern.indexOf('*');
  const literal = (star === -1 ? pattern : pattern.slice(0, star)).toLowerCase();
  const prefix = source.prefix.toLowerCase();
  return literal.startsWith(prefix) || (star !== -1 && prefix.startsWith(literal));
}

/**
 * A config that loads but grants no one anything: no attestation source, no rule, a rule's
 * workload pattern no source can produce an id for, a resource server audience no rule grants.
 * Each reported once: without sources, no rule is named again; without rules, no audience.
 */
function reachabilityWarnings(config: Config): string[] {
  const sources = attestationSources(config);
  const out: string[] = [];
  if (sources.length === 0)
    out.push(
      'attestation: no attestation source is configured (attestation.oidc issuers, or tls.client_ca_bundles for client certificates): ' +
        'every request is refused, and serve does not report ready',
    );
  if (config.policies.length === 0) out.push('policies: no rule: every request is denied (the policy denies by default)');
  if (sources.length > 0) {
    const known = sources.map((s) => `"${s.prefix}" (${s.source})`).join(', ');
    config.policies.forEach((rule, i) => {
      rule.workloads.forEach((pattern, j) => {
        if (!sources.some((s) => canMatch(pattern, s)))
          out.push(
            `policies[${i}].workloads[${j}] (${pattern}) matches no workload id that an attestation source can produce: ` +
              `rule ${rule.name} never applies to it. The configured sources produce ids starting with ${known}`,
          );
      });
    });
  }
  if (config.policies.length > 0) {
    const granted = new Set(config.policies.flatMap((r) => r.audiences));
    config.resource_servers.forEach((rs, i) => {
      rs.audiences.forEach((aud, j) => {
        if (!granted.has(aud))
          out.push(
            `resource_servers[${i}].audiences[${j}] (${aud}) is granted by no policy rule: no token of this audience is ever issued for ${rs.name} to introspect or revoke`,
          );
      });
    });
  }
  return out;
}

function globalIndexWarnings(config: Config): string[] {
  if (config.store.kind !== 'redis' || config.store.global_index) return [];
  return [
    'store.global_index is false: this broker writes no grant to the global index, so operator queries without a workload and the kill switch by task, audience, issuer, rule, key id or workload glob miss its grants (meant for measuring its cost only)',
  ];
}

/** What a request carrying a platform token needs beside it (intent and the JSON around them). */
export const PLATFORM_TOKEN_REQUEST_HEADROOM_BYTES = 2_048;

/**
 * A platform token near attestation.oidc.max_token_bytes must still fit in a request body: else
 * the body limit answers first (413), and the configured token limit is never the one that decides.
 */
function platformTokenWarnings(config: Config): string[] {
  const oidc = config.attestation.oidc;
  if (!oidc || oidc.issuers.length === 0 || oidc.max_token_bytes + PLATFORM_TOKEN_REQUEST_HEADROOM_BYTES <= config.http.max_body_bytes) return [];
  return [
    `attestation.oidc.max_token_bytes (${oidc.max_token_bytes}) plus ${PLATFORM_TOKEN_REQUEST_HEADROOM_BYTES} bytes for the rest of the request exceeds http.max_body_bytes (${config.http.max_body_bytes}): ` +
      'a platform token near the limit is refused as a too-large request (413); raise http.max_body_bytes or lower max_token_bytes',
  ];
}

/**
 * A proxy trusted with the client's certificate (attestation.x509.forwarded.trusted_proxies) is
 * trusted for the X-Forwarded-For entry it appends as well (src/http/app.ts), so failed attempts
 * count against its clients, not itself. Saying so in http.trusted_proxies too keeps the config
 * honest; a proxy listed in only one of them is named.
 */
function proxyWarnings(config: Config): string[] {
  const forwarded = config.attestation.x509?.forwarded?.trusted_proxies;
  if (!forwarded) return [];
  const http = config.http.trusted_proxies;
  const out: string[] = [];
  forwarded.forEach((entry, i) => {
    if (!coveredBy(entry, http))
      out.push(
        `attestation.x509.forwarded.trusted_proxies[${i}] (${entry}) is trusted for forwarded client certificates but not listed in http.trusted_proxies: ` +
          'its X-Forwarded-For entry is trusted anyway (failed attempts count against the client address it appends); list it there too, and make sure it appends the address it saw',
      );
  });
  http.forEach((entry, i) => {
    if (!coveredBy(entry, forwarded))
      out.push(
        `http.trusted_proxies[${i}] (${entry}) is trusted for X-Forwarded-For but not for forwarded client certificates: ` +
          `a certificate header from it is ignored; list it in attestation.x509.forwarded.trusted_proxies too if it terminates client TLS`,
      );
  });
  return out;
}

/** Whether every address of `entry` (an address or CIDR block) is inside one of `list`'s entries. */
function coveredBy(entry: string, list: string[]): boolean {
  const [ip, bits] = entry.split('/') as [string, string | undefined];
  const width = (v: string, b: string | undefined) => (b === undefined ? (isIPv4(v) ? 32 : 128) : Number(b));
  return list.some((container) => {
    const [cip, cbits] = container.split('/') as [string, string | undefined];
    if (isIPv4(cip) !== isIPv4(ip)) return false;
    return width(cip, cbits) <= width(ip, bits) && isTrustedProxy(trustedProxyList([container]), ip);
  });
}
