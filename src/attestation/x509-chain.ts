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
 * not a CA, keyUsage (when present) with digitalSignature and without keyCertSign/cRLSign. On
 * every certificate: an empty subject only with a critical subjectAltName (RFC 5280 §4.2.1.6).
 * The path has at most `maxIntermediates` certificates between leaf and anchor, whatever order
 * they were sent in (RFC 8446 §4.4.2: build the path, don't assume it).
 * The rules only an X509-SVID must meet (keyUsage present and critical, X509-SVID §4.3) are
 * `svidLeafProblem`; which names apply is the caller's business (x509.ts).
 */
import 'reflect-metadata'; // @peculiar/x509 needs the Reflect metadata API
import { X509Certificate as NodeCertificate } from 'node:crypto';
import { AsnConvert, BitString } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  SubjectKeyIdentifier,
  id_ce_authorityKeyIdentifier,
  id_ce_subjectKeyIdentifier,
  Certificate as AsnCertificate,
  ExtendedKeyUsage,
  KeyUsage,
  KeyUsageFlags,
  NameConstraints,
  SubjectAlternativeName,
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
import { clip } from '../util/text.js';

/** Names and subjects quoted in a refusal are cut to this many characters. */
const NAME_MAX = 200;

/** Most intermediates a path may ever have (attestation.x509.max_intermediates is at most this). */
export const MAX_INTERMEDIATES = 7;
/** Default for attestation.x509.max_intermediates. */
export const DEFAULT_MAX_INTERMEDIATES = 4;
/** Longest path tried: leaf, up to MAX_INTERMEDIATES intermediates (the attestor's cap of 8 certificates), the anchor. */
const MAX_DEPTH = MAX_INTERMEDIATES + 1;
/**
 * Path building is a search: certificates that share a name and key "sign" one another, and a
 * chain of them makes the search explode. Each (child, issuer) signature is checked once, and the
 * whole search has a fixed budget; a chain that needs more is refused.
 */
const MAX_SIGNATURE_CHECKS = 48;
const MAX_WALK_STEPS = 256;
const OID_EMAIL_ADDRESS = '1.2.840.113549.1.9.1';
const OID_COMMON_NAME = '2.5.4.3';
/** Signature algorithms accepted on issued certificates (SHA-1 and MD5 are not). */
const SIGNATURE_ALGORITHMS = new Map([
  ['1.2.840.10045.4.3.2', 'ecdsa-with-SHA256'],
  ['1.2.840.10045.4.3.3', 'ecdsa-with-SHA384'],
  ['1.2.840.10045.4.3.4', 'ecdsa-with-SHA512'],
  ['1.2.840.113549.1.1.11', 'sha256WithRSAEncryption'],
  ['1.2.840.113549.1.1.12', 'sha384WithRSAEncryption'],
  ['1.2.840.113549.1.1.13', 'sha512WithRSAEncryption'],
  ['1.2.840.113549.1.1.10', 'RSASSA-PSS'],
  ['1.3.101.112', 'Ed25519'],
  ['1.3.101.113', 'Ed448'],
]);
const MIN_RSA_BITS = 2048;
/** Elliptic curves accepted for keys (NIST P-256, P-384, P-521; Ed25519 and Ed448 are separate key types). */
const EC_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

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
  '2.16.840.1.113730.1.1', // Netscape cert type (as OpenSSL reads it)
]);
const OID_NS_CERT_TYPE = '2.16.840.1.113730.1.1';
/** Netscape cert type bits, numbered as BitString.toNumber() reads them (bit 0 = 1). */
const NS_SSL_CLIENT = 1;
const NS_SSL_CA = 32;

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
  /** Whether keyUsage is marked critical (undefined when absent). */
  keyUsageCritical: boolean | undefined;
  /** Whether subjectAltName is marked critical (undefined when absent). */
  sanCritical: boolean | undefined;
  extKeyUsage: string[] | undefined;
  uris: string[];
  dnsNames: string[];
  emails: string[];
  ips: string[];
  unknownCritical: string[];
  nameConstraints: NameConstraints | undefined;
  subjectRdns: string[];
  /** Subject attributes that name constraints also bind: emailAddress and commonName. */
  subjectEmails: string[];
  subjectCommonNames: string[];
  /** Netscape cert type bits when present (old, but OpenSSL still honours it). */
  nsCertType: number | undefined;
  /** subjectKeyIdentifier, and the authorityKeyIdentifier's keyIdentifier (hex), to pick issuers as OpenSSL does. */
  ski: string | undefined;
  aki: string | undefined;
  /** The public key (SPKI DER, base64): with the subject, what makes two certificates "the same CA". */
  key: string;
  /** Why its signature algorithm, or its key, is too weak to rely on (judged apart: an anchor's self-signature is not relied on, its key is). */
  weakSignature: string | undefined;
  weakKey: string | undefined;
  /** A subject emailAddress not encoded as IA5String, which OpenSSL cannot check against name constraints. */
  oddEmailSyntax: boolean;
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
    // Exactly one certificate: trailing bytes would change the thumbprint but not the certificate.
    if (!node.raw.equals(buf)) throw new Error('bytes follow the certificate');
    // Times OpenSSL cannot read (month 13) must not be read differently here.
    if (Number.isNaN(Date.parse(node.validFrom)) || Number.isNaN(Date.parse(node.validTo))) throw new Error('its validity times are malformed');
    const asn = AsnConvert.parse(buf, AsnCertificate);
    const tbs = asn.tbsCertificate;
    // RFC 5280 §4.1.2.5: whole seconds in Zulu time. Anything else (fractions, offsets, missing
    // seconds) OpenSSL refuses or reads otherwise, so both readings must agree to the second.
    for (const [asnTime, nodeTime] of [
      [tbs.validity.notBefore.getTime().getTime(), node.validFrom],
      [tbs.validity.notAfter.getTime().getTime(), node.validTo],
    ] as const) {
      if (asnTime % 1000 !== 0 || asnTime !== Date.parse(nodeTime)) throw new Error('its validity times are malformed');
    }
    const values = new Map<string, ArrayBuffer>();
    const critical = new Map<string, boolean>();
    const unknownCritical: string[] = [];
    for (const e of tbs.extensions ?? []) {
      // RFC 5280 §4.2: an extension appears at most once; which copy would count is ambiguous.
      if (values.has(e.extnID)) throw new Error(`extension ${e.extnID} appears twice`);
      values.set(e.extnID, e.extnValue.buffer);
      critical.set(e.extnID, e.critical);
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
      keyUsageCritical: critical.get(id_ce_keyUsage),
      sanCritical: critical.get(id_ce_subjectAltName),
      extKeyUsage: eku ? [...eku] : undefined,
      uris: pick('uniformResourceIdentifier'),
      dnsNames: pick('dNSName'),
      emails: pick('rfc822Name'),
      ips: pick('iPAddress'),
      unknownCritical,
      nameConstraints: ext(id_ce_nameConstraints, NameConstraints),
      subjectRdns: rdnKeys(tbs.subject),
      subjectEmails: attributeValues(tbs.subject, OID_EMAIL_ADDRESS),
      subjectCommonNames: attributeValues(tbs.subject, OID_COMMON_NAME),
      nsCertType: ext(OID_NS_CERT_TYPE, BitString)?.toNumber(),
      ski: hex(ext(id_ce_subjectKeyIdentifier, SubjectKeyIdentifier)?.buffer),
      aki: hex(ext(id_ce_authorityKeyIdentifier, AuthorityKeyIdentifier)?.keyIdentifier?.buffer),
      key: node.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      weakSignature: SIGNATURE_ALGORITHMS.has(asn.signatureAlgorithm.algorithm)
        ? undefined
        : `is signed with an algorithm that is not accepted (${asn.signatureAlgorithm.algorithm})`,
      weakKey: weakKey(node),
      oddEmailSyntax: [...tbs.subject].some((rdn) => [...rdn].some((atv) => atv.type === OID_EMAIL_ADDRESS && atv.value.ia5String === undefined)),
    };
  } catch (e) {
    throw new CertificateParseError(`not a valid DER X.509 certificate (${(e as Error).message})`);
  }
}

function hex(buffer: ArrayBuffer | undefined): string | undefined {
  return buffer === undefined ? undefined : Buffer.from(buffer).toString('hex');
}

function attributeValues(name: AsnName, type: string): string[] {
  return [...name].flatMap((rdn) => [...rdn].filter((atv) => atv.type === type).map((atv) => atv.value.toString()));
}

function weakKey(node: NodeCertificate): string | undefined {
  const key = node.publicKey;
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss': {
      const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      return bits < MIN_RSA_BITS ? `has a ${bits}-bit RSA key (at least ${MIN_RSA_BITS} bits are required)` : undefined;
    }
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve ?? 'unknown';
      return EC_CURVES.has(curve) ? undefined : `has an EC key on a curve that is not accepted (${curve}; P-256, P-384 or P-521 are)`;
    }
    case 'ed25519':
    case 'ed448':
      return undefined;
    default:
      return `has a ${key.asymmetricKeyType ?? 'unknown'} key, which is not accepted (RSA, EC or EdDSA keys are)`;
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
  /** Most intermediates between the leaf and the anchor (attestation.x509.max_intermediates). */
  maxIntermediates: number = DEFAULT_MAX_INTERMEDIATES,
): ChainResult<T> {
  const [leaf, ...intermediates] = chain;
  if (!leaf) return { ok: false, problem: 'no client certificate was presented' };
  let firstProblem: string | undefined;
  let badSignature: string | undefined;
  let overBudget = false;
  const order = [...bundles].sort(([a], [b]) => Number(b === preferred) - Number(a === preferred));
  for (const [trustDomain, anchors] of order) {
    const found = searchPath(leaf, intermediates, anchors, (path) => checkPath(path, now, maxIntermediates));
    if (found.path) return { ok: true, trustDomain, path: found.path };
    firstProblem ??= found.problem;
    badSignature ??= found.badSignature;
    overBudget ||= found.overBudget;
  }
  if (firstProblem) return { ok: false, problem: firstProblem };
  if (overBudget) return { ok: false, problem: 'the client certificate chain is too convoluted to validate (too many candidate paths)' };
  if (badSignature) return { ok: false, problem: badSignature };
  return { ok: false, problem: `the client certificate (issuer ${clip(leaf.issuer, NAME_MAX)}) was not issued by a CA in any trusted bundle` };
}

/**
 * The first path leaf → … → anchor whose signatures verify and that `check` accepts (depth-first,
 * memoised, on a fixed budget); otherwise the first reason a signature-valid path was refused.
 */
function searchPath(
  leaf: ParsedCertificate,
  presented: ParsedCertificate[],
  anchors: readonly ParsedCertificate[],
  check: (path: ParsedCertificate[]) => string | undefined,
) {
  let accepted: ParsedCertificate[] | undefined;
  let problem: string | undefined;
  let tried = 0;
  let badSignature: string | undefined;
  let overBudget = false;
  let checks = 0;
  let steps = 0;
  // Anchors are never intermediates, and a certificate sent twice counts once.
  const pool = presented.filter((c, i) => !anchors.some((a) => a.der.equals(c.der)) && presented.findIndex((o) => o.der.equals(c.der)) === i);
  const verdicts = new Map<ParsedCertificate, Map<ParsedCertificate, boolean>>();
  const signedBy = (child: ParsedCertificate, issuer: ParsedCertificate): boolean => {
    if (child.issuer !== issuer.subject) return false;
    // Key identifiers, when both are there, must agree: a same-named CA with another key is not
    // a candidate and costs no signature check (as OpenSSL's issuer check).
    if (child.aki !== undefined && issuer.ski !== undefined && child.aki !== issuer.ski) return false;
    let byIssuer = verdicts.get(child);
    if (!byIssuer) verdicts.set(child, (byIssuer = new Map()));
    const known = byIssuer.get(issuer);
    if (known !== undefined) return known;
    if (++checks > MAX_SIGNATURE_CHECKS) {
      overBudget = true;
      return false;
    }
    let ok = false;
    try {
      ok = child.node.verify(issuer.node.publicKey);
    } catch {
      ok = false;
    }
    byIssuer.set(issuer, ok);
    if (!ok) badSignature ??= `the signature on certificate ${clip(child.subject || '(no subject)', NAME_MAX)} does not verify with its issuer's key`;
    return ok;
  };
  const walk = (path: ParsedCertificate[]) => {
    if (accepted || tried >= 8 || path.length > MAX_DEPTH || overBudget) return;
    if (++steps > MAX_WALK_STEPS) {
      overBudget = true;
      return;
    }
    const current = path[path.length - 1]!;
    for (const anchor of anchors) {
      if (accepted || !signedBy(current, anchor)) continue;
      const candidate = [...path, anchor];
      const why = check(candidate);
      tried++;
      if (why === undefined) accepted = candidate;
      else problem ??= why;
    }
    for (const next of pool) {
      // The same name and key twice in one path is a loop, not a longer path (key rollovers,
      // with a new key under the same name, stay possible).
      if (path.some((c) => c === next || (c.subject === next.subject && c.key === next.key))) continue;
      if (signedBy(current, next)) walk([...path, next]);
    }
  };
  walk([leaf]);
  return { path: accepted, problem, badSignature, overBudget: overBudget && !accepted };
}

/** The first reason this signature-valid path is unacceptable, or undefined. */
function checkPath(path: ParsedCertificate[], now: number, maxIntermediates: number): string | undefined {
  const intermediates = path.length - 2;
  if (intermediates > maxIntermediates)
    return `the client certificate chain needs ${intermediates} intermediate certificates; at most ${maxIntermediates} are accepted (attestation.x509.max_intermediates)`;
  for (let i = 0; i < path.length; i++) {
    const cert = path[i]!;
    const what = i === 0 ? 'the client certificate' : i === path.length - 1 ? `the trust anchor ${clip(cert.subject, NAME_MAX)}` : `intermediate ${clip(cert.subject, NAME_MAX)}`;
    if (now < cert.notBefore) return `${what} is not valid until ${new Date(cert.notBefore).toISOString()}`;
    if (now > cert.notAfter) return `${what} expired at ${new Date(cert.notAfter).toISOString()}`;
    if (cert.unknownCritical.length) return `${what} carries an unsupported critical extension (${cert.unknownCritical.join(', ')})`;
    // RFC 5280 §4.1.2.6 and §4.2.1.6: an empty subject needs a subjectAltName, marked critical.
    if (cert.subjectRdns.length === 0) {
      if (cert.sanCritical === undefined) return `${what} has an empty subject and no subjectAltName`;
      if (!cert.sanCritical) return `${what} has an empty subject and a non-critical subjectAltName (RFC 5280 §4.2.1.6 requires it critical)`;
    }
    // A trust anchor's own self-signature is not relied on; its key is.
    if (cert.weakKey) return `${what} ${cert.weakKey}`;
    if (cert.weakSignature && i < path.length - 1) return `${what} ${cert.weakSignature}`;
    // As OpenSSL's clientAuth purpose check: every certificate that lists usages must list
    // clientAuth (anyExtendedKeyUsage is not enough, on a CA either).
    if (cert.extKeyUsage && !cert.extKeyUsage.includes(id_kp_clientAuth)) return `${what} has an extendedKeyUsage without clientAuth`;
    if (i === 0) {
      if (cert.nsCertType !== undefined && !(cert.nsCertType & NS_SSL_CLIENT)) return 'the client certificate has a Netscape cert type without SSL client';
      if (cert.ca === true) return 'the client certificate is a CA certificate (basicConstraints cA=true); a client must present a leaf';
      if (cert.keyUsage !== undefined) {
        if (cert.keyUsage & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) return 'the client certificate has keyCertSign or cRLSign key usage; a leaf must not';
        if (!(cert.keyUsage & KeyUsageFlags.digitalSignature)) return 'the client certificate key usage lacks digitalSignature';
      }
      continue;
    }
    if (cert.nsCertType !== undefined && !(cert.nsCertType & NS_SSL_CA)) return `${what} has a Netscape cert type without SSL CA`;
    if (cert.ca !== true) return `${what} is not a CA (basicConstraints cA=true is missing) but issued ${clip(path[i - 1]!.subject || 'a certificate', NAME_MAX)}`;
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

/**
 * The rules an X509-SVID leaf must meet beyond RFC 5280 (X509-SVID §4.3): keyUsage present and
 * marked critical (digitalSignature set, keyCertSign and cRLSign not: checkPath, for every leaf).
 * Certificates mapped by subject (attestation.x509.subjects) are not SVIDs and are exempt.
 */
export function svidLeafProblem(leaf: ParsedCertificate): string | undefined {
  if (leaf.keyUsage === undefined) return 'the client certificate has no keyUsage extension; an X509-SVID must have one, critical, with digitalSignature';
  if (!leaf.keyUsageCritical) return "the client certificate's keyUsage extension is not critical; an X509-SVID must mark it critical";
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Name constraints (RFC 5280 §4.2.1.10) for URI, DNS, email and directoryName; IP-address
// constraints are not evaluated, so a certificate with IP SANs under them is refused (fail closed).

const ODD_SUBTREE = 'it carries a name constraint with a minimum or maximum distance, which is not supported';

type ConstraintCheck = (kind: NameKind, values: string[], label: string) => string | undefined;

function constraintChecker(nc: NameConstraints): { check: ConstraintCheck; permitted: AsnGeneralName[]; excluded: AsnGeneralName[]; oddSubtree: boolean } {
  const permitted = nc.permittedSubtrees ? [...nc.permittedSubtrees].map((s) => s.base) : [];
  const excluded = nc.excludedSubtrees ? [...nc.excludedSubtrees].map((s) => s.base) : [];
  const check: ConstraintCheck = (kind, values, label) => {
    const p = permitted.filter((g) => kindOf(g) === kind);
    const x = excluded.filter((g) => kindOf(g) === kind);
    for (const value of values) {
      if (kind === 'ip' && (p.length || x.length)) return `IP address name constraints are not supported, and a certificate below it names ${label} ${value}`;
      // Names these constraints cannot be read against are refused, as OpenSSL does (unsupported name syntax).
      if ((p.length || x.length) && ((kind === 'email' && !value.includes('@')) || (kind === 'uri' && uriHost(value) === undefined)))
        return `${label} ${clip(value, NAME_MAX)} cannot be checked against its name constraints`;
      if (x.some((g) => matches(kind, g, value))) return `${label} ${clip(value.replace(/\n/g, ', '), NAME_MAX)} is excluded by its name constraints`;
      if (p.length && !p.some((g) => matches(kind, g, value))) return `${label} ${clip(value.replace(/\n/g, ', '), NAME_MAX)} is outside its permitted name constraints`;
    }
    return undefined;
  };
  // RFC 5280 fixes minimum at 0 and maximum absent; OpenSSL refuses anything else.
  const oddSubtree = [...(nc.permittedSubtrees ?? []), ...(nc.excludedSubtrees ?? [])].some((st) => st.minimum !== 0 || st.maximum !== undefined);
  return { check, permitted, excluded, oddSubtree };
}

/**
 * A workload id given to a certificate by configuration (a mapped subject) must stay inside the
 * URI name constraints of its path, as the certificate's own SPIFFE ID would have to.
 */
export function uriConstraintProblem(path: ParsedCertificate[], uri: string): string | undefined {
  for (const ca of path.slice(1)) {
    const checker = ca.nameConstraints && constraintChecker(ca.nameConstraints);
    const problem = checker && (checker.oddSubtree ? ODD_SUBTREE : checker.check('uri', [uri], 'mapped workload id'));
    if (problem) return `${ca.subject}: ${problem}`;
  }
  return undefined;
}

/** `below` is every certificate under the constraining CA, leaf first. */
function nameConstraintProblem(nc: NameConstraints, below: ParsedCertificate[]): string | undefined {
  const { check, permitted, excluded, oddSubtree } = constraintChecker(nc);
  if (oddSubtree) return ODD_SUBTREE;
  // The names of intermediates count too (RFC 5280 §6.1.3 b, c), as OpenSSL checks them in the
  // handshake; a self-issued intermediate (key rollover) is exempt.
  for (const cert of below) {
    if (cert !== below[0] && cert.subject === cert.issuer) continue;
    const problem =
      (cert.subjectRdns.length ? check('dn', [cert.subjectRdns.join('\n')], 'subject') : undefined) ??
      check('uri', cert.uris, 'URI') ??
      check('dns', cert.dnsNames, 'DNS name') ??
      // emailAddress in the subject is bound like an rfc822Name (RFC 5280 §4.2.1.10); OpenSSL
      // reads it only as IA5String and refuses any other encoding under name constraints.
      (cert.oddEmailSyntax ? 'a subject emailAddress is not an IA5String, which name constraints cannot check' : undefined) ??
      check('email', [...cert.emails, ...cert.subjectEmails], 'email') ??
      // A leaf without DNS SANs whose CN looks like a host name: OpenSSL binds the CN to DNS constraints.
      (cert === below[0] && cert.dnsNames.length === 0 ? commonNameProblem(cert.subjectCommonNames, check) : undefined) ??
      check('ip', cert.ips, 'IP address');
    if (problem) return problem;
  }
  return unsupportedKinds(permitted, excluded);
}

/** OpenSSL's CN check: trailing NULs dropped, an inner NUL refused, host-name-like CNs bound by DNS constraints. */
function commonNameProblem(commonNames: string[], check: ConstraintCheck): string | undefined {
  const names = commonNames.map((cn) => cn.replace(/\0+$/, ''));
  if (names.some((cn) => cn.includes('\0'))) return 'a common name holds a NUL character, which name constraints cannot check';
  return check('dns', names.filter(looksLikeHostname), 'common name');
}

/** OpenSSL's test for a CN that is a host name: at least two labels of letters, digits and hyphens. */
function looksLikeHostname(cn: string): boolean {
  // OpenSSL's cn2dnsid: letters, digits and "_" anywhere; "-" and "." not first or last; "." not
  // next to "." or "-"; at least one ".".
  let dotted = false;
  for (let i = 0; i < cn.length; i++) {
    const c = cn[i]!;
    if (/[A-Za-z0-9_]/.test(c)) continue;
    const inner = i > 0 && i < cn.length - 1;
    if (c === '-' && inner) continue;
    if (c === '.' && inner && !'.-'.includes(cn[i + 1]!) && !'.-'.includes(cn[i - 1]!)) {
      dotted = true;
      continue;
    }
    return false;
  }
  return dotted;
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
      return dnsMatches(g.dNSName!, value.replace(/[A-Z]/g, (c) => c.toLowerCase()));
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
/**
 * The host a URI constraint compares with, read as OpenSSL reads it: after "://", up to ":" or
 * "/" (so userinfo stays part of it and cannot hide the real host). Undefined: no host.
 */
function uriHost(uri: string): string | undefined {
  const start = uri.indexOf('://');
  if (start <= 0) return undefined;
  const host = uri.slice(start + 3).split(/[:/]/, 1)[0]!;
  return host === '' ? undefined : host.replace(/[A-Z]/g, (ch) => ch.toLowerCase());
}

function uriHostMatches(constraint: string, uri: string): boolean {
  const host = uriHost(uri);
  if (host === undefined) return false;
  const c = constraint.replace(/[A-Z]/g, (ch) => ch.toLowerCase());
  return c.startsWith('.') ? host.endsWith(c) : host === c;
}

/** DNS constraints: the name itself or any subdomain; a leading dot means subdomains only. */
function dnsMatches(constraint: string, name: string): boolean {
  const c = constraint.toLowerCase();
  if (c === '') return true;
  if (c.startsWith('.')) return name.endsWith(c);
  return name === c || name.endsWith(`.${c}`);
}

/** The local part compares exactly (RFC 5280 §4.2.1.10, as OpenSSL does); host names ignore ASCII case. */
function emailMatches(constraint: string, email: string): boolean {
  const lower = (v: string) => v.replace(/[A-Z]/g, (ch) => ch.toLowerCase());
  const at = email.lastIndexOf('@');
  const host = lower(email.slice(at + 1));
  const cAt = constraint.lastIndexOf('@');
  if (cAt >= 0) return email.slice(0, at) === constraint.slice(0, cAt) && host === lower(constraint.slice(cAt + 1));
  const c = lower(constraint);
  return c.startsWith('.') ? host.endsWith(c) : host === c;
}

/**
 * Each RDN as escaped `type=value` pairs for comparison (subject mappings, directoryName
 * constraints): whitespace collapsed, ASCII letters case-folded (not Unicode: the Kelvin sign is
 * not a "k"), separators escaped so one value can never read as two attributes, and values that
 * are not strings kept apart from strings that spell their hex.
 */
export function rdnKeys(name: AsnName): string[] {
  return [...name].map((rdn) =>
    [...rdn]
      .map((atv) => {
        const v = atv.value;
        const isString = [v.utf8String, v.printableString, v.ia5String, v.teletexString, v.bmpString, v.universalString].some((x) => x !== undefined);
        const text = isString ? v.toString().replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '').replace(/[ \t\n\v\f\r]+/g, ' ').replace(/[A-Z]/g, (c) => c.toLowerCase()) : v.toString();
        const escaped = text.replace(/[\\+,=#\n]/g, (c) => `\\${c}`);
        return `${atv.type}=${isString ? escaped : `#${escaped}`}`; // only non-strings start with a bare #
      })
      .sort()
      .join('+'),
  );
}

