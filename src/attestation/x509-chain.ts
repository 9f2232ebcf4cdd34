/**
 * In-process X.509 path validation (RFC 5280 §6, as X509-SVID §5.1 demands) for client
 * certificates, used for both the TLS-handshake and the forwarded-header path so that one
 * certificate always gets one decision. Signatures and parsing: node:crypto; extensions:
 * @peculiar/x509 (name constraints and RDNs through its ASN.1 schema).
 *
 * Checked on every certificate of the path: validity at `now`, signature by the next one, no
 * unknown critical extension, and extendedKeyUsage (when present) allowing clientAuth. On every
 * issuer (intermediates and the trust anchor): basicConstraints cA=true, keyUsage (when present)
 * with keyCertSign, pathLenConstraint, and nameConstraints over everything below it. On the leaf:
 * not a CA, keyUsage (when present) with digitalSignature and without keyCertSign/cRLSign.
 * Which SPIFFE rules apply to the names is the caller's business (x509.ts).
 */
import 'reflect-metadata'; // @peculiar/x509 needs the Reflect metadata API
import { X509Certificate as NodeCertificate } from 'node:crypto';
import { isIP } from 'node:net';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate as AsnCertificate,
  ExtendedKeyUsage,
  KeyUsage,
  KeyUsageFlags,
  NameConstraints,
  SubjectAlternativeName,
  anyExtendedKeyUsage,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  id_kp_clientAuth,
  type GeneralName as AsnGeneralName,
  type Name as AsnName,
} from '@peculiar/asn1-x509';
import { Name } from '@peculiar/x509';

/** Longest path tried: leaf, up to 6 intermediates, the anchor. */
const MAX_DEPTH = 8;

/** Extensions this validator understands; any other marked critical makes the certificate unusable (RFC 5280 §4.2). */
const KNOWN_EXTENSIONS = new Set([
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.19', // basicConstraints
  '2.5.29.30', // nameConstraints
  '2.5.29.32', // certificatePolicies (not processed; no policy is required)
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extKeyUsage
]);

/** A certificate parsed once, with what validation needs. */
export interface ParsedCertificate {
  der: Buffer;
  node: NodeCertificate;
  subject: string;
  issuer: string;
  notBefore: number;
  notAfter: number;
  /** basicConstraints: undefined when the extension is absent. */
  ca: boolean | undefined;
  pathLength: number | undefined;
  keyUsage: number | undefined;
  extKeyUsage: string[] | undefined;
  uris: string[];
  dnsNames: string[];
  emails: string[];
  ips: string[];
  unknownCritical: string[];
  nameConstraints: NameConstraints | undefined;
  subjectRdns: string[];
}

export class CertificateParseError extends Error {}

/**
 * Parses one DER certificate; throws CertificateParseError when it is not one. The ASN.1 is
 * decoded once and each extension value on its own (@peculiar/x509's X509Certificate and its
 * per-extension getters decode again and again: four times slower on a cold cache).
 */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  const buf = Buffer.from(der);
  try {
    const node = new NodeCertificate(buf);
    const asn = AsnConvert.parse(buf, AsnCertificate);
    const tbs = asn.tbsCertificate;
    const values = new Map<string, ArrayBuffer>();
    const unknownCritical: string[] = [];
    for (const e of tbs.extensions ?? []) {
      // RFC 5280 §4.2: an extension appears at most once; which copy would count is ambiguous.
      if (values.has(e.extnID)) throw new Error(`extension ${e.extnID} appears twice`);
      values.set(e.extnID, e.extnValue.buffer);
      if (e.critical && !KNOWN_EXTENSIONS.has(e.extnID)) unknownCritical.push(e.extnID);
    }
    const ext = <T>(id: string, type: new () => T): T | undefined => {
      const value = values.get(id);
      return value === undefined ? undefined : AsnConvert.parse(value, type);
    };
    const basic = ext(id_ce_basicConstraints, BasicConstraints);
    const ku = ext(id_ce_keyUsage, KeyUsage);
    const eku = ext(id_ce_extKeyUsage, ExtendedKeyUsage);
    const names = [...(ext(id_ce_subjectAltName, SubjectAlternativeName) ?? [])];
    const pick = (key: keyof AsnGeneralName) => names.map((n) => n[key]).filter((v): v is string => typeof v === 'string');
    return {
      der: buf,
      node,
      subject: new Name(tbs.subject).toString(),
      issuer: new Name(tbs.issuer).toString(),
      notBefore: tbs.validity.notBefore.getTime().getTime(),
      notAfter: tbs.validity.notAfter.getTime().getTime(),
      ca: basic ? basic.cA : undefined,
      pathLength: basic?.pathLenConstraint,
      keyUsage: ku ? ku.toNumber() : undefined,
      extKeyUsage: eku ? [...eku] : undefined,
      uris: pick('uniformResourceIdentifier'),
      dnsNames: pick('dNSName'),
      emails: pick('rfc822Name'),
      ips: pick('iPAddress'),
      unknownCritical,
      nameConstraints: ext(id_ce_nameConstraints, NameConstraints),
      subjectRdns: rdnKeys(tbs.subject),
    };
  } catch (e) {
    throw new CertificateParseError(`not a valid DER X.509 certificate (${(e as Error).message})`);
  }
}

export type ChainResult<T extends string> =
  | { ok: true; trustDomain: T; path: ParsedCertificate[] }
  | { ok: false; problem: string };

/**
 * Builds a path from `chain[0]` (the leaf) through `chain[1..]` (untrusted intermediates, any
 * order) to a certificate of one bundle, and validates it. Every bundle is tried: the result
 * names the bundle (trust domain) that validated the chain, so the caller can check it against
 * the leaf's SPIFFE ID.
 */
export function validateChain<T extends string>(
  chain: ParsedCertificate[],
  bundles: ReadonlyMap<T, readonly ParsedCertificate[]>,
  now: number,
  /** Tried first: the trust domain the leaf claims, so a CA shared by two bundles validates it under its own. */
  preferred?: string,
): ChainResult<T> {
  const [leaf, ...intermediates] = chain;
  if (!leaf) return { ok: false, problem: 'no client certificate was presented' };
  let firstProblem: string | undefined;
  let badSignature: string | undefined;
  const order = [...bundles].sort(([a], [b]) => Number(b === preferred) - Number(a === preferred));
  for (const [trustDomain, anchors] of order) {
    const built = buildPaths(leaf, intermediates, anchors);
    if (built.badSignature) badSignature ??= built.badSignature;
    for (const path of built.paths) {
      const problem = checkPath(path, now);
      if (!problem) return { ok: true, trustDomain, path };
      firstProblem ??= problem;
    }
  }
  if (firstProblem) return { ok: false, problem: firstProblem };
  if (badSignature) return { ok: false, problem: badSignature };
  return { ok: false, problem: `the client certificate (issuer ${clip(leaf.issuer)}) was not issued by a CA in any trusted bundle` };
}

/** Every path leaf → … → anchor whose signatures verify (depth-first, bounded). */
function buildPaths(leaf: ParsedCertificate, pool: ParsedCertificate[], anchors: readonly ParsedCertificate[]) {
  const paths: ParsedCertificate[][] = [];
  let badSignature: string | undefined;
  const signedBy = (child: ParsedCertificate, issuer: ParsedCertificate): boolean => {
    if (child.issuer !== issuer.subject) return false;
    let ok = false;
    try {
      ok = child.node.verify(issuer.node.publicKey);
    } catch {
      ok = false;
    }
    if (!ok) badSignature ??= `the signature on certificate ${clip(child.subject || '(no subject)')} does not verify with its issuer's key`;
    return ok;
  };
  const walk = (path: ParsedCertificate[]) => {
    if (paths.length >= 4 || path.length > MAX_DEPTH) return;
    const current = path[path.length - 1]!;
    for (const anchor of anchors) {
      if (signedBy(current, anchor)) paths.push([...path, anchor]);
    }
    for (const next of pool) {
      if (path.includes(next) || anchors.some((a) => a.der.equals(next.der))) continue;
      if (signedBy(current, next)) walk([...path, next]);
    }
  };
  walk([leaf]);
  return { paths, badSignature };
}

/** The first reason this signature-valid path is unacceptable, or undefined. */
function checkPath(path: ParsedCertificate[], now: number): string | undefined {
  for (let i = 0; i < path.length; i++) {
    const cert = path[i]!;
    const what = i === 0 ? 'the client certificate' : i === path.length - 1 ? `the trust anchor ${clip(cert.subject)}` : `intermediate ${clip(cert.subject)}`;
    if (now < cert.notBefore) return `${what} is not valid until ${new Date(cert.notBefore).toISOString()}`;
    if (now > cert.notAfter) return `${what} expired at ${new Date(cert.notAfter).toISOString()}`;
    if (cert.unknownCritical.length) return `${what} carries an unsupported critical extension (${cert.unknownCritical.join(', ')})`;
    if (cert.extKeyUsage && !cert.extKeyUsage.includes(id_kp_clientAuth) && !(i > 0 && cert.extKeyUsage.includes(anyExtendedKeyUsage)))
      return `${what} has an extendedKeyUsage without clientAuth`;
    if (i === 0) {
      if (cert.ca === true) return 'the client certificate is a CA certificate (basicConstraints cA=true); a client must present a leaf';
      if (cert.keyUsage !== undefined) {
        if (cert.keyUsage & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) return 'the client certificate has keyCertSign or cRLSign key usage; a leaf must not';
        if (!(cert.keyUsage & KeyUsageFlags.digitalSignature)) return 'the client certificate key usage lacks digitalSignature';
      }
      continue;
    }
    if (cert.ca !== true) return `${what} is not a CA (basicConstraints cA=true is missing) but issued ${clip(path[i - 1]!.subject || 'a certificate')}`;
    if (cert.keyUsage !== undefined && !(cert.keyUsage & KeyUsageFlags.keyCertSign)) return `${what} lacks keyCertSign key usage`;
    // pathLenConstraint: how many intermediates may follow this CA (RFC 5280 §4.2.1.9).
    if (cert.pathLength !== undefined && i - 1 > cert.pathLength)
      return `${what} allows ${cert.pathLength} intermediate(s) below it (pathLenConstraint) but the chain has ${i - 1}`;
    if (cert.nameConstraints) {
      const problem = nameConstraintProblem(cert.nameConstraints, path.slice(0, i));
      if (problem) return `${what}: ${problem}`;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Name constraints (RFC 5280 §4.2.1.10) for URI, DNS, email and directoryName; IP-address
// constraints are not evaluated, so a certificate with IP SANs under them is refused (fail closed).

/** `below` is every certificate under the constraining CA, leaf first. */
function nameConstraintProblem(nc: NameConstraints, below: ParsedCertificate[]): string | undefined {
  const permitted = nc.permittedSubtrees ? [...nc.permittedSubtrees].map((s) => s.base) : [];
  const excluded = nc.excludedSubtrees ? [...nc.excludedSubtrees].map((s) => s.base) : [];
  const check = (kind: NameKind, values: string[], label: string): string | undefined => {
    const p = permitted.filter((g) => kindOf(g) === kind);
    const x = excluded.filter((g) => kindOf(g) === kind);
    for (const value of values) {
      if (kind === 'ip' && (p.length || x.length)) return `IP address name constraints are not supported, and a certificate below it names ${label} ${value}`;
      if (x.some((g) => matches(kind, g, value))) return `${label} ${clip(value.replace(/\n/g, ', '))} is excluded by its name constraints`;
      if (p.length && !p.some((g) => matches(kind, g, value))) return `${label} ${clip(value.replace(/\n/g, ', '))} is outside its permitted name constraints`;
    }
    return undefined;
  };
  // The names of intermediates count too (RFC 5280 §6.1.3 b, c), as OpenSSL checks them in the
  // handshake; a self-issued intermediate (key rollover) is exempt.
  for (const cert of below) {
    if (cert !== below[0] && cert.subject === cert.issuer) continue;
    const problem =
      (cert.subjectRdns.length ? check('dn', [cert.subjectRdns.join('\n')], 'subject') : undefined) ??
      check('uri', cert.uris, 'URI') ??
      check('dns', cert.dnsNames, 'DNS name') ??
      check('email', cert.emails, 'email') ??
      check('ip', cert.ips, 'IP address');
    if (problem) return problem;
  }
  return unsupportedKinds(permitted, excluded);
}

type NameKind = 'uri' | 'dns' | 'email' | 'dn' | 'ip' | 'other';

function kindOf(g: AsnGeneralName): NameKind {
  if (g.uniformResourceIdentifier !== undefined) return 'uri';
  if (g.dNSName !== undefined) return 'dns';
  if (g.rfc822Name !== undefined) return 'email';
  if (g.directoryName !== undefined) return 'dn';
  if (g.iPAddress !== undefined) return 'ip';
  return 'other';
}

/** Constraint forms we cannot evaluate (otherName, x400, EDI, registeredID) fail closed. */
function unsupportedKinds(permitted: AsnGeneralName[], excluded: AsnGeneralName[]): string | undefined {
  return [...permitted, ...excluded].some((g) => kindOf(g) === 'other') ? 'it carries a name constraint form that is not supported' : undefined;
}

function matches(kind: NameKind, g: AsnGeneralName, value: string): boolean {
  switch (kind) {
    case 'uri':
      return uriHostMatches(g.uniformResourceIdentifier!, value);
    case 'dns':
      return dnsMatches(g.dNSName!, value.toLowerCase());
    case 'email':
      return emailMatches(g.rfc822Name!, value);
    case 'dn': {
      const constraint = rdnKeys(g.directoryName!);
      const subject = value.split('\n');
      return constraint.length <= subject.length && constraint.every((rdn, i) => subject[i] === rdn);
    }
    default:
      return false;
  }
}

/** URI constraints name a host: `host` exactly, `.domain` any host beneath it. */
function uriHostMatches(constraint: string, uri: string): boolean {
  let host: string;
  try {
    host = new URL(uri).hostname.toLowerCase();
  } catch {
    return false;
  }
  if (!host || isIP(host)) return false;
  const c = constraint.toLowerCase();
  return c.startsWith('.') ? host.endsWith(c) : host === c;
}

/** DNS constraints: the name itself or any subdomain; a leading dot means subdomains only. */
function dnsMatches(constraint: string, name: string): boolean {
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return name.endsWith(c);
  return name === c || name.endsWith(`.${c}`);
}

function emailMatches(constraint: string, email: string): boolean {
  const c = constraint.toLowerCase();
  const e = email.toLowerCase();
  if (c.includes('@')) return e === c;
  const host = e.slice(e.lastIndexOf('@') + 1);
  return c.startsWith('.') ? host.endsWith(c) : host === c;
}

/** Each RDN as `type=value` pairs (case-folded, whitespace collapsed) for prefix comparison. */
export function rdnKeys(name: AsnName): string[] {
  return [...name].map((rdn) =>
    [...rdn]
      .map((atv) => `${atv.type}=${atv.value.toString().trim().replace(/\s+/g, ' ').toLowerCase()}`)
      .sort()
      .join('+'),
  );
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
