/**
 * Where a request's client certificate comes from: the TLS handshake of its own connection, or
 * a header set by a TLS-terminating proxy (Envoy XFCC, nginx `$ssl_client_escaped_cert`), which
 * counts only when the connection comes from a configured trusted proxy. From a trusted proxy
 * only the header counts: the proxy's own handshake certificate never attests anyone.
 */
import { BlockList, isIPv4 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { X509Evidence, X509Config } from '../attestation/x509.js';
import { MAX_PRESENTED_CERTIFICATES } from '../attestation/x509.js';
import type { Logger } from '../log.js';
import { pemDers } from '../tls/material.js';
import { peerChain } from '../tls/peer-chain.js';

type Forwarded = NonNullable<X509Config['forwarded']>;

/** Envoy writes one `DNS=`/`URI=` pair per SAN of the client certificate; every other key appears at most once. */
const REPEATABLE_XFCC_KEYS = new Set(['dns', 'uri']);

interface HandshakeCert {
  chain: Uint8Array[];
  error: string | undefined;
}

export interface ClientCertSource {
  /** The certificate evidence of this request, if it carries any. */
  evidence(socket: unknown, remoteAddress: string | undefined, header: (name: string) => string | undefined): X509Evidence | undefined;
}

/** Parses `trusted_proxies` into a BlockList (IPv4-mapped IPv6 addresses match their IPv4 entry). */
export function trustedProxyList(entries: string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [ip, bits] = entry.split('/') as [string, string | undefined];
    const type = isIPv4(ip) ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(ip, type);
    else list.addSubnet(ip, Number(bits), type);
  }
  return list;
}

function normalizeAddress(address: string): { address: string; type: 'ipv4' | 'ipv6' } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { address: mapped[1]!, type: 'ipv4' };
  return { address, type: isIPv4(address) ? 'ipv4' : 'ipv6' };
}

/** Whether a peer address is in a trusted-proxy list. */
export function isTrustedProxy(list: BlockList, address: string | undefined): boolean {
  if (address === undefined) return false;
  const peer = normalizeAddress(address);
  return list.check(peer.address, peer.type);
}

export function createClientCertSource(opts: { forwarded?: Forwarded | undefined; log: Logger }): ClientCertSource {
  const { forwarded, log } = opts;
  const trusted = forwarded ? trustedProxyList(forwarded.trusted_proxies) : undefined;
  const headerName = forwarded?.header.toLowerCase();
  // One peer chain per TLS connection: keep-alive requests reuse it.
  const perSocket = new WeakMap<object, HandshakeCert | null>();
  let lastUntrustedLog = 0;
  let suppressed = 0;

  function handshake(socket: unknown): HandshakeCert | undefined {
    const tls = socket as Partial<TLSSocket> | undefined;
    if (!tls || typeof tls.getPeerCertificate !== 'function') return undefined;
    const known = perSocket.get(tls);
    if (known !== undefined) return known ?? undefined;
    // The chain exactly as presented, in the client's order: see peer-chain.ts.
    const chain = peerChain(tls as TLSSocket, MAX_PRESENTED_CERTIFICATES);
    const found: HandshakeCert | null = chain.length > 0 ? { chain, error: tls.authorized ? undefined : String(tls.authorizationError ?? 'not verified') } : null;
    perSocket.set(tls, found);
    return found ?? undefined;
  }

  function logUntrusted(remoteAddress: string | undefined) {
    const now = Date.now();
    if (now - lastUntrustedLog < 1000) {
      suppressed++;
      return; // at most one line a second: the header must not become a log-flooding tool
    }
    log.warn({ remote: remoteAddress, header: headerName, suppressed }, 'forwarded client certificate header from an untrusted address ignored');
    lastUntrustedLog = now;
    suppressed = 0;
  }

  return {
    evidence(socket, remoteAddress, header) {
      if (forwarded && headerName && trusted) {
        const value = header(headerName);
        const fromProxy = isTrustedProxy(trusted, remoteAddress);
        if (fromProxy) {
          if (value === undefined) return undefined;
          return parseForwarded(value, forwarded.format);
        }
        if (value !== undefined) logUntrusted(remoteAddress);
      }
      const hs = handshake(socket);
      if (!hs) return undefined;
      return { kind: 'x509', chain: hs.chain, source: 'handshake', ...(hs.error ? { handshakeError: hs.error } : {}) };
    },
  };
}

/** Evidence from a forwarded header; a header that cannot be read becomes evidence with a `problem`. */
export function parseForwarded(value: string, format: Forwarded['format']): X509Evidence {
  const fail = (problem: string): X509Evidence => ({ kind: 'x509', chain: [], source: 'forwarded', problem });
  let pem: string;
  if (format === 'xfcc') {
    const elements = splitQuoted(value, ',');
    if (elements.length !== 1) {
      return fail(`the x-forwarded-client-cert header holds ${elements.length} elements; exactly one is accepted (configure the proxy to sanitize and set it)`);
    }
    const fields = new Map<string, string>();
    for (const pair of splitQuoted(elements[0]!, ';')) {
      const eq = pair.indexOf('=');
      if (eq <= 0) return fail('the x-forwarded-client-cert header is malformed');
      const key = pair.slice(0, eq).trim().toLowerCase();
      if (REPEATABLE_XFCC_KEYS.has(key)) continue; // informational only, never read
      if (fields.has(key)) return fail(`the x-forwarded-client-cert header repeats "${key.slice(0, 20)}"`);
      fields.set(key, unquote(pair.slice(eq + 1).trim()));
    }
    const chosen = fields.get('chain') ?? fields.get('cert');
    if (chosen === undefined) return fail('the x-forwarded-client-cert header has no Cert or Chain field');
    const decoded = urlDecode(chosen);
    if (decoded === undefined) return fail('the forwarded client certificate is not valid URL-encoded PEM');
    pem = decoded;
    // With both, Chain must begin with Cert: otherwise which certificate did the client prove?
    const cert = fields.get('cert');
    if (fields.has('chain') && cert !== undefined) {
      const leaf = urlDecode(cert);
      const first = pemDers(pem, 'CERTIFICATE')[0];
      const sent = leaf === undefined ? undefined : pemDers(leaf, 'CERTIFICATE');
      if (!first || !sent || sent.length !== 1 || !sent[0]!.equals(first)) return fail('the x-forwarded-client-cert Chain does not begin with its Cert');
    }
  } else {
    const decoded = value.includes('%') ? urlDecode(value) : value;
    if (decoded === undefined) return fail('the forwarded client certificate is not valid URL-encoded PEM');
    pem = decoded;
  }
  const chain = pemDers(pem, 'CERTIFICATE');
  if (chain.length === 0) return fail('the forwarded client certificate header holds no PEM certificate');
  // nginx forwards the leaf alone; more than one means the header was sent twice (joined by ", ").
  if (format === 'pem' && chain.length > 1) return fail('the forwarded client certificate header must hold exactly one certificate');
  // The attestor applies the real cap (8, without our anchors), with the same words as for a handshake.
  if (chain.length > MAX_PRESENTED_CERTIFICATES) return fail(`the client certificate chain is longer than ${MAX_PRESENTED_CERTIFICATES} certificates`);
  return { kind: 'x509', chain, source: 'forwarded' };
}

function urlDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/** Splits on `sep` outside double quotes (XFCC values may quote `,` and `;`, with `\"` escapes). */
function splitQuoted(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && quoted && i + 1 < s.length) {
      cur += ch + s[++i]!;
    } else if (ch === '"') {
      quoted = !quoted;
      cur += ch;
    } else if (ch === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter((p) => p.length > 0);
}

function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
}
