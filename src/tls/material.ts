/**
 * TLS material from files: the server's certificate and key, and the client CA bundles per
 * trust domain. Files are re-read on an interval and swapped in when their content changes
 * (cert-manager and SPIRE rewrite them in place or by symlink swap), so bundles and server
 * certificates rotate without a restart. A changed file that does not parse keeps the last good
 * material and is logged; nothing half-loaded is ever used.
 */
import { createHash, X509Certificate as NodeCertificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseCertificate, type ParsedCertificate } from '../attestation/x509-chain.js';

const MAX_BUNDLE_CERTS = 200;

export interface TlsFiles {
  cert?: string | undefined;
  key?: string | undefined;
  /** trust domain → bundle file (PEM certificates or a SPIFFE bundle JWK set). */
  bundles: Record<string, string>;
}

export interface TlsMaterial {
  /** trust domain → its CA certificates (trust anchors). */
  bundles: ReadonlyMap<string, readonly ParsedCertificate[]>;
  /** Every anchor as PEM, for the TLS server's `ca`. */
  caPem: string[];
  /** Every anchor's DER, to tell our anchors apart from what a client sent. */
  anchorDers: readonly Buffer[];
  cert?: string;
  key?: string;
  /** Increases on every successful reload (keys caches). */
  generation: number;
}

/** Reads and validates every file; throws ConfigError naming each file that is wrong. */
export function loadTlsMaterial(files: TlsFiles, generation = 1): TlsMaterial {
  const problems: string[] = [];
  const read = (path: string, what: string): string | undefined => {
    try {
      return readFileSync(path, 'utf8');
    } catch (e) {
      problems.push(`${what} ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      return undefined;
    }
  };
  const bundles = new Map<string, ParsedCertificate[]>();
  const caPem: string[] = [];
  for (const [trustDomain, path] of Object.entries(files.bundles)) {
    const text = read(path, `tls.client_ca_bundles.${trustDomain}`);
    if (text === undefined) continue;
    try {
      const anchors = parseBundle(text);
      bundles.set(trustDomain, anchors);
      caPem.push(...anchors.map((a) => a.node.toString()));
    } catch (e) {
      problems.push(`tls.client_ca_bundles.${trustDomain} ${path}: ${(e as Error).message}`);
    }
  }
  let cert: string | undefined;
  let key: string | undefined;
  if (files.cert && files.key) {
    cert = read(files.cert, 'tls.cert');
    key = read(files.key, 'tls.key');
    if (cert !== undefined && key !== undefined) {
      try {
        const leaf = new NodeCertificate(cert);
        const priv = createPrivateKey(key);
        if (!leaf.checkPrivateKey(priv)) problems.push(`tls.key ${files.key}: does not match the certificate in ${files.cert}`);
      } catch (e) {
        problems.push(`tls.cert/tls.key: ${(e as Error).message}`);
      }
    }
  }
  if (problems.length) throw new ConfigError(problems);
  const anchorDers = [...bundles.values()].flat().map((c) => c.der);
  return { bundles, caPem, anchorDers, generation, ...(cert !== undefined && key !== undefined ? { cert, key } : {}) };
}

/** PEM certificates, or a SPIFFE bundle (JWK set whose `x509-svid` keys carry `x5c`). Each must be a CA. */
export function parseBundle(text: string): ParsedCertificate[] {
  const ders = text.trimStart().startsWith('{') ? spiffeBundleDers(text) : pemDers(text, 'CERTIFICATE');
  if (ders.length === 0) throw new Error('holds no certificate');
  if (ders.length > MAX_BUNDLE_CERTS) throw new Error(`holds more than ${MAX_BUNDLE_CERTS} certificates`);
  return ders.map((der, i) => {
    const cert = parseCertificate(der);
    if (cert.ca !== true) throw new Error(`certificate ${i + 1} (${cert.subject}) is not a CA (basicConstraints cA=true)`);
    return cert;
  });
}

/** The DER bodies of every `-----BEGIN <label>-----` block. */
export function pemDers(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

function spiffeBundleDers(text: string): Buffer[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('is neither PEM nor valid JSON');
  }
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new Error('is a JSON document without "keys" (expected a SPIFFE bundle)');
  // X509-SVID §6.2: only `use: x509-svid` entries count, and only the first x5c value.
  return keys
    .filter((k): k is { use: string; x5c: string[] } => k?.use === 'x509-svid' && Array.isArray(k.x5c) && typeof k.x5c[0] === 'string')
    .map((k) => Buffer.from(k.x5c[0]!, 'base64'));
}

/** Polls the files and swaps in new material when their bytes change and parse. */
export class TlsMaterialWatcher {
  private material: TlsMaterial;
  private fingerprint: string;
  private lastBad: string | undefined;
  private unreadablePolls = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: ((m: TlsMaterial) => void)[] = [];

  constructor(
    private readonly files: TlsFiles,
    private readonly log: Logger,
  ) {
    this.material = loadTlsMaterial(files);
    this.fingerprint = this.readFingerprint() ?? '';
  }

  get current(): TlsMaterial {
    return this.material;
  }

  onChange(listener: (m: TlsMaterial) => void): void {
    this.listeners.push(listener);
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => this.check(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One poll: reload when any file's bytes changed. Returns whether new material is in use. */
  check(): boolean {
    const fingerprint = this.readFingerprint();
    if (fingerprint === this.fingerprint) this.lastBad = undefined; // rolled back: the same bad files again deserve a new error line
    if (fingerprint === undefined) {
      // Mid-rewrite this lasts a poll; a file still missing at the next one keeps the last
      // material in use, which must be said (once).
      if (++this.unreadablePolls === 2) this.log.warn('a TLS file cannot be read; keeping the previous TLS material until it can');
      return false;
    }
    this.unreadablePolls = 0;
    if (fingerprint === this.fingerprint || fingerprint === this.lastBad) return false;
    let next: TlsMaterial;
    try {
      next = loadTlsMaterial(this.files, this.material.generation + 1);
    } catch (e) {
      this.lastBad = fingerprint; // logged once per bad content, retried when it changes again
      this.log.error({ problems: (e as ConfigError).problems ?? [(e as Error).message] }, 'TLS files changed but do not load; keeping the previous ones');
      return false;
    }
    this.material = next;
    this.fingerprint = fingerprint;
    this.lastBad = undefined;
    this.log.info({ generation: next.generation, trust_domains: [...next.bundles.keys()] }, 'TLS material reloaded');
    for (const l of this.listeners) {
      try {
        l(next);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'applying reloaded TLS material failed');
      }
    }
    return true;
  }

  /** SHA-256 over every file's bytes; undefined while one is unreadable (mid-rewrite). */
  private readFingerprint(): string | undefined {
    const h = createHash('sha256');
    const paths = [this.files.cert, this.files.key, ...Object.values(this.files.bundles)];
    try {
      for (const p of paths) if (p !== undefined) h.update(p).update('\0').update(readFileSync(p)).update('\0');
    } catch {
      return undefined;
    }
    return h.digest('hex');
  }
}
