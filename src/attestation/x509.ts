/**
 * Client-certificate attestation (kind `x509`): SPIFFE X.509-SVIDs, and non-SPIFFE certificates
 * whose subject a config entry maps explicitly.
 *
 * The chain is validated in-process against the trust bundles (x509-chain.ts) for both the TLS
 * handshake and the forwarded-header path, and that validation alone decides: OpenSSL's own
 * verdict on the handshake (`handshakeError`) is not consulted, so one certificate gets one
 * decision, and one error, whichever way it arrives (issue 12). The workload id is
 * the leaf's SPIFFE ID, whose trust domain must be the one whose bundle validated the chain, and
 * the token is bound to the leaf (`cnf.x5t#S256`, RFC 8705 §3.1).
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import 'reflect-metadata';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Name as AsnName } from '@peculiar/asn1-x509';
import { Name } from '@peculiar/x509';
import { z } from 'zod';
import { AttestationFailed } from '../errors.js';
import type { TlsMaterial } from '../tls/material.js';
import type { Attestor, AttestorDeps, AttestorModule, Evidence, Workload } from './attestor.js';
import { parseSpiffeId, trustDomainProblem } from './spiffe-id.js';
import {
  CertificateParseError,
  DEFAULT_MAX_INTERMEDIATES,
  MAX_INTERMEDIATES,
  parseCertificate,
  rdnKeys,
  svidLeafProblem,
  uriConstraintProblem,
  validateChain,
  type ParsedCertificate,
} from './x509-chain.js';
import { certificateThumbprint } from '../tokens/binding.js';

export type X509Evidence = Extract<Evidence, { kind: 'x509' }>;

/** Longest chain a client may present (leaf + intermediates, not counting our own anchors). */
export const MAX_CHAIN_LENGTH = MAX_INTERMEDIATES + 1;
/** What a transport may hand over at most (room for anchors a client or Node adds); beyond it nothing is parsed. */
export const MAX_PRESENTED_CERTIFICATES = 16;
const CACHE_MAX = 10_000;

export const trustDomainName = z.string().superRefine((v, ctx) => {
  const problem = trustDomainProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

export const spiffeWorkloadId = z.string().superRefine((v, ctx) => {
  const r = parseSpiffeId(v, { requirePath: true });
  if (!r.ok) ctx.addIssue({ code: 'custom', message: `must be a SPIFFE ID: ${r.problem}` });
});

export const distinguishedName = z.string().min(1).max(1024).superRefine((v, ctx) => {
  try {
    if (subjectKeys(v).length === 0) ctx.addIssue({ code: 'custom', message: 'must name at least one attribute, e.g. "CN=batch, O=Acme"' });
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be a distinguished name such as "CN=batch, O=Acme"' });
  }
});

/** An address or CIDR block (`10.0.0.0/8`, `::1`). */
export const addressOrCidr = z.string().refine((v) => {
  const [ip, bits, ...rest] = v.split('/');
  const family = isIP(ip ?? '');
  if (!family || rest.length) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}, 'must be an IP address or CIDR block such as 10.0.0.0/8');

export const x509ConfigSchema = z
  .object({
    /**
     * Most intermediate CAs between a client certificate and its trust anchor, in whatever order
     * the client sends them (RFC 8446 §4.4.2). A client may still send at most 8 certificates.
     */
    max_intermediates: z.number().int().min(0).max(MAX_INTERMEDIATES).default(DEFAULT_MAX_INTERMEDIATES),
    /**
     * Non-SPIFFE client certificates (no URI SAN) are refused unless listed here: a subject DN,
     * validated by the named trust domain's bundle, becomes the given SPIFFE ID.
     */
    subjects: z
      .array(z.object({ trust_domain: trustDomainName, subject: distinguishedName, workload: spiffeWorkloadId }).strict())
      .max(1000)
      .default([]),
    /** Client certificates forwarded by a TLS-terminating proxy, accepted only from `trusted_proxies`. */
    forwarded: z
      .object({
        /** Envoy's `x-forwarded-client-cert` (XFCC `Cert`/`Chain`), or a header holding URL-encoded PEM (nginx `$ssl_client_escaped_cert`). */
        header: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'must be an HTTP header name').default('x-forwarded-client-cert'),
        format: z.enum(['xfcc', 'pem']).default('xfcc'),
        trusted_proxies: z.array(addressOrCidr).min(1).max(256),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    c.subjects.forEach((s, i) => {
      const id = parseSpiffeId(s.workload);
      if (id.ok && id.value.trustDomain !== s.trust_domain)
        ctx.addIssue({ code: 'custom', path: ['subjects', i, 'workload'], message: `must be in trust domain ${s.trust_domain}` });
    });
    // One workload id, one subject (attestation/id-spaces.ts); and one mapping per subject.
    const byWorkload = new Map<string, number>();
    const bySubject = new Map<string, number>();
    c.subjects.forEach((s, i) => {
      const first = byWorkload.get(s.workload);
      if (first === undefined) byWorkload.set(s.workload, i);
      else
        ctx.addIssue({
          code: 'custom',
          path: ['subjects', i, 'workload'],
          message: `maps subject "${s.subject}" to the same workload id as attestation.x509.subjects[${first}] (subject "${c.subjects[first]?.subject}"): a mapped workload id belongs to one subject`,
        });
      let key: string;
      try {
        key = [s.trust_domain, ...subjectKeys(s.subject)].join('\n');
      } catch {
        return; // reported by the subject's own schema
      }
      const same = bySubject.get(key);
      if (same === undefined) bySubject.set(key, i);
      else ctx.addIssue({ code: 'custom', path: ['subjects', i, 'subject'], message: `repeats the subject of attestation.x509.subjects[${same}] in trust domain ${s.trust_domain}` });
    });
  });

export type X509Config = z.output<typeof x509ConfigSchema>;

export interface X509Deps extends AttestorDeps {
  /** The current trust bundles (they reload). */
  tls: { readonly current: TlsMaterial };
}

interface Cached {
  generation: number;
  workload: Workload;
  notBefore: number;
  notAfter: number;
}

/** A configured subject DN as comparable RDN keys (same normalisation as certificates). */
function subjectKeys(dn: string): string[] {
  return rdnKeys(AsnConvert.parse(new Name(dn).toArrayBuffer(), AsnName));
}

export function createX509Attestor(config: X509Config, deps: X509Deps): Attestor<X509Evidence> & { cacheSize(): number } {
  const { clock } = deps;
  const mappings = config.subjects.map((s) => ({ ...s, keys: subjectKeys(s.subject).join('\n') }));
  const cache = new Map<string, Cached>();

  function identify(path: ParsedCertificate[], trustDomain: string): string {
    const leaf = path[0]!;
    if (leaf.uris.length > 1) throw new AttestationFailed(`the client certificate has ${leaf.uris.length} URI SANs; an X509-SVID has exactly one`);
    const uri = leaf.uris[0];
    if (uri !== undefined) {
      // An X509-SVID: its own rules beyond RFC 5280 (a mapped subject is not one, and is exempt).
      const svid = svidLeafProblem(leaf);
      if (svid) throw new AttestationFailed(svid);
      const parsed = parseSpiffeId(uri, { requirePath: true });
      if (!parsed.ok) throw new AttestationFailed(`the client certificate's URI SAN is not a valid workload SPIFFE ID: ${parsed.problem}`);
      if (parsed.value.trustDomain !== trustDomain) {
        throw new AttestationFailed(
          `the SPIFFE ID is in trust domain ${parsed.value.trustDomain}, but the chain was validated by the bundle of ${trustDomain}`,
        );
      }
      return uri;
    }
    const keys = leaf.subjectRdns.join('\n');
    const mapped = mappings.find((m) => m.trust_domain === trustDomain && m.keys === keys);
    if (!mapped) {
      throw new AttestationFailed(
        `the client certificate has no URI SAN (not an X509-SVID) and its subject "${leaf.subject.slice(0, 200)}" is not mapped (attestation.x509.subjects)`,
      );
    }
    // A URI-constrained sub-CA must not mint a mapped identity outside its constraints.
    const problem = uriConstraintProblem(path, mapped.workload);
    if (problem) throw new AttestationFailed(`the client certificate's mapped identity is not allowed by its CA: ${problem}`);
    return mapped.workload;
  }

  function verify(chainDer: Uint8Array[]): Omit<Cached, 'generation'> {
    if (chainDer.length === 0) throw new AttestationFailed('no client certificate was presented');
    // Counted without trust anchors: the handshake's chain ends in ours, a forwarded one may not.
    if (chainDer.length > MAX_CHAIN_LENGTH) throw new AttestationFailed(`the client certificate chain is longer than ${MAX_CHAIN_LENGTH} certificates`);
    let chain: ParsedCertificate[];
    try {
      chain = chainDer.map(parseCertificate);
    } catch (e) {
      if (e instanceof CertificateParseError) throw new AttestationFailed('the client certificate is not a valid X.509 certificate', { detail: e.message });
      throw e;
    }
    const claimed = chain[0]!.uris.length === 1 ? parseSpiffeId(chain[0]!.uris[0]!) : undefined;
    const result = validateChain(chain, deps.tls.current.bundles, clock(), claimed?.ok ? claimed.value.trustDomain : undefined, config.max_intermediates);
    if (!result.ok) throw new AttestationFailed(result.problem);
    const leaf = chain[0]!;
    const id = identify(result.path, result.trustDomain);
    const notBefore = Math.max(...result.path.map((c) => c.notBefore));
    const notAfter = Math.min(...result.path.map((c) => c.notAfter));
    const workload: Workload = Object.freeze({
      id,
      kind: 'x509',
      issuer: `spiffe://${result.trustDomain}`,
      attributes: Object.freeze({
        trust_domain: result.trustDomain,
        subject: leaf.subject.slice(0, 512),
        serial_number: leaf.node.serialNumber.slice(0, 128),
      }),
      evidenceExpiresAt: notAfter,
      confirmation: Object.freeze({ 'x5t#S256': certificateThumbprint(leaf.der) }),
    });
    return { workload, notBefore, notAfter };
  }

  async function attest(evidence: X509Evidence): Promise<Workload> {
    if (evidence.problem) throw new AttestationFailed(evidence.problem);
    const { generation, anchorDers } = deps.tls.current;
    // The leaf and what the client sent with it, without our own anchors (a client may send them,
    // they never count against the chain length). Each DER is length-prefixed in the key.
    const isAnchor = (der: Uint8Array) => anchorDers.some((a) => a.length === der.length && a.equals(der));
    const chain = evidence.chain.length === 1 ? evidence.chain : evidence.chain.filter((der, i) => i === 0 || !isAnchor(der));
    const h = createHash('sha256');
    for (const der of chain) h.update(`${der.length}:`).update(der);
    const digest = h.digest('base64url');
    const now = clock();
    let entry = cache.get(digest);
    if (entry && (entry.generation !== generation || now < entry.notBefore || now > entry.notAfter)) {
      cache.delete(digest);
      entry = undefined; // bundles changed or a certificate's validity ended: validate again (and explain)
    }
    if (!entry) {
      entry = { ...verify(chain), generation };
      if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
      cache.set(digest, entry);
    }
    // evidence.handshakeError (OpenSSL's verdict in the handshake) is deliberately not consulted:
    // the forwarded path has no such verdict, and two deciders would answer differently.
    return entry.workload;
  }

  return {
    kind: 'x509',
    attest,
    notReady: () => (deps.tls.current.bundles.size === 0 ? 'no client CA bundle is loaded' : undefined),
    cacheSize: () => cache.size,
  };
}

export const x509Attestor: AttestorModule<X509Config, X509Evidence> = {
  kind: 'x509',
  configSchema: x509ConfigSchema,
  create: (config, deps) => {
    const tls = (deps as Partial<X509Deps>).tls;
    if (!tls) throw new Error('the x509 attestor needs the TLS material (tls.client_ca_bundles)');
    return createX509Attestor(config, { ...deps, tls });
  },
};
