import { isIPv4 } from 'node:net';
import { isTrustedProxy, trustedProxyList } from '../http/client-cert.js';
import type { Config } from './schema.js';

/**
 * What a config may say but probably does not mean: printed by `check-config`, logged by `serve`.
 * Never a reason to refuse the config (those are schema issues).
 */
export function configWarnings(config: Config): string[] {
  const out = [...proxyWarnings(config), ...platformTokenWarnings(config)];
  if (config.store.kind === 'redis' && !config.store.global_index)
    out.push(
      'store.global_index is false: this broker writes no grant to the global index, so operator queries without a workload and the kill switch by task, audience, issuer, rule, key id or workload glob miss its grants (meant for measuring its cost only)',
    );
  return out;
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
