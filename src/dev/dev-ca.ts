/**
 * The dev CA: a throwaway certificate authority for a trust domain that issues X.509-SVIDs
 * (client certificates with a SPIFFE ID) and server certificates. Dev mode, the README's mTLS
 * walk-through and the tests use it; production certificates come from SPIRE, cert-manager or a
 * mesh. ECDSA P-256 keys, SHA-256 signatures, PKCS#8 PEM private keys.
 *
 * `issueCertificate` takes options that produce deliberately wrong certificates (CA-flagged
 * leaves, serverAuth-only EKU, extra URI SANs, …) so the tests can show each one refused.
 */
import 'reflect-metadata';
import { X509Certificate as NodeCertificate, randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName as AsnGeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  PemConverter,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
  type JsonGeneralName,
} from '@peculiar/x509';
import { trustDomainProblem, parseSpiffeId } from '../attestation/spiffe-id.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

/** A certificate with its private key (and, for issued ones, the chain above it up to the root, excluded). */
export interface Credential {
  cert: X509Certificate;
  der: Buffer;
  keys: CryptoKeyPair;
  /** Intermediates between this certificate and the root, nearest first. */
  intermediates: Credential[];
  certPem: string;
  /** This certificate followed by its intermediates: what a client presents. */
  chainPem: string;
  keyPem: string;
}

export interface NameConstraintOptions {
  permittedUris?: string[];
  excludedUris?: string[];
  permittedDns?: string[];
}

export interface CaOptions {
  trustDomain: string;
  commonName?: string;
  notBefore?: Date;
  notAfter?: Date;
  pathLength?: number;
  nameConstraints?: NameConstraintOptions;
}

export interface IssueOptions {
  /** URI SANs (one SPIFFE ID for an SVID; any number for the refusal tests). */
  uris?: string[];
  dns?: string[];
  ips?: string[];
  /** Subject DN, e.g. "CN=batch, O=Acme"; default CN from the SPIFFE path or the DNS name. */
  subject?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** Issue a CA (an intermediate) rather than a leaf. */
  ca?: boolean;
  pathLength?: number;
  /** Leave out basicConstraints altogether (an "intermediate" that is not a CA). */
  omitBasicConstraints?: boolean;
  /** Extended key usages; null leaves the extension out. Default clientAuth (+ serverAuth for `server`). */
  eku?: ('clientAuth' | 'serverAuth')[] | null;
  keyUsage?: number;
  /** A server certificate: serverAuth EKU, DNS/IP SANs. */
  server?: boolean;
  nameConstraints?: NameConstraintOptions;
}

export async function generateKeys(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(EC, true, ['sign', 'verify']);
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01; // positive and 16 bytes long
  return b.toString('hex');
}

async function keyPem(keys: CryptoKeyPair): Promise<string> {
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]);
}

function nameConstraintsExtension(nc: NameConstraintOptions): Extension {
  const subtrees = (names: AsnGeneralName[]) =>
    names.length ? new GeneralSubtrees(names.map((base) => new GeneralSubtree({ base }))) : undefined;
  const permitted = subtrees([
    ...(nc.permittedUris ?? []).map((u) => new AsnGeneralName({ uniformResourceIdentifier: u })),
    ...(nc.permittedDns ?? []).map((d) => new AsnGeneralName({ dNSName: d })),
  ]);
  const excluded = subtrees((nc.excludedUris ?? []).map((u) => new AsnGeneralName({ uniformResourceIdentifier: u })));
  const value = new NameConstraints({ ...(permitted ? { permittedSubtrees: permitted } : {}), ...(excluded ? { excludedSubtrees: excluded } : {}) });
  return new Extension(id_ce_nameConstraints, true, AsnConvert.serialize(value));
}

/** A signed certificate, its keys and the chain above it as one credential (with PEM forms). */
export async function credential(cert: X509Certificate, keys: CryptoKeyPair, intermediates: Credential[]): Promise<Credential> {
  const certPem = cert.toString('pem');
  return {
    cert,
    der: Buffer.from(cert.rawData),
    keys,
    intermediates,
    certPem: `${certPem}\n`,
    chainPem: [certPem, ...intermediates.map((i) => i.certPem.trim())].join('\n') + '\n',
    keyPem: await keyPem(keys),
  };
}

/** A self-signed root CA for one trust domain (its own SPIFFE ID as URI SAN, X509-SVID §3.2). */
export async function createCA(opts: CaOptions): Promise<Credential> {
  const problem = trustDomainProblem(opts.trustDomain);
  if (problem) throw new Error(`invalid trust domain "${opts.trustDomain}": ${problem}`);
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: `CN=${opts.commonName ?? `jit-broker dev CA ${opts.trustDomain}`}, O=jit-broker dev`,
      notBefore: opts.notBefore ?? new Date(now - 60_000),
      notAfter: opts.notAfter ?? new Date(now + 365 * DAY),
      keys,
      signingAlgorithm: SIGN,
      extensions: [
        new BasicConstraintsExtension(true, opts.pathLength, true),
        new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
        await SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        new SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${opts.trustDomain}` }]),
        ...(opts.nameConstraints ? [nameConstraintsExtension(opts.nameConstraints)] : []),
      ],
    },
    crypto,
  );
  return credential(cert, keys, []);
}

/** Issues a leaf (default) or an intermediate CA signed by `issuer`. */
export async function issueCertificate(issuer: Credential, opts: IssueOptions): Promise<Credential> {
  const keys = await generateKeys();
  const now = Date.now();
  const names: JsonGeneralName[] = [
    ...(opts.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(opts.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const firstUri = opts.uris?.[0];
  const cn = firstUri ? (firstUri.split('/').filter(Boolean).pop() ?? 'workload') : (opts.dns?.[0] ?? opts.ips?.[0] ?? 'workload');
  const ca = opts.ca ?? false;
  const eku =
    opts.eku === null ? undefined : (opts.eku ?? (ca ? undefined : opts.server ? ['serverAuth', 'clientAuth'] : ['clientAuth']));
  const extensions: Extension[] = [
    ...(opts.omitBasicConstraints ? [] : [new BasicConstraintsExtension(ca, ca ? opts.pathLength : undefined, true)]),
    new KeyUsagesExtension(opts.keyUsage ?? (ca ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign : KeyUsageFlags.digitalSignature), true),
    ...(eku ? [new ExtendedKeyUsageExtension(eku.map((e) => ExtendedKeyUsage[e]), false)] : []),
    await SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    await AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey, false, crypto),
    ...(names.length ? [new SubjectAlternativeNameExtension(names, false)] : []),
    ...(opts.nameConstraints ? [nameConstraintsExtension(opts.nameConstraints)] : []),
  ];
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject: opts.subject ?? `CN=${cn}`,
      issuer: issuer.cert.subject,
      notBefore: opts.notBefore ?? new Date(now - 60_000),
      notAfter: opts.notAfter ?? new Date(now + DAY),
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: SIGN,
      extensions,
    },
    crypto,
  );
  return credential(cert, keys, chainAbove(issuer));
}

/** What a certificate issued by `issuer` is presented with: the issuer and its own chain, unless the issuer is a root. */
export function chainAbove(issuer: Credential): Credential[] {
  // A root signs itself; a self-issued intermediate (same name, another key) does not.
  const selfSigned = issuer.cert.subject === issuer.cert.issuer && new NodeCertificate(issuer.der).verify(new NodeCertificate(issuer.der).publicKey);
  return issuer.intermediates.length || !selfSigned ? [issuer, ...issuer.intermediates] : [];
}

/** The same certificate with one bit of its signature flipped (for the refusal tests). */
export function tamperSignature(der: Uint8Array): Buffer {
  const out = Buffer.from(der);
  out[out.length - 8]! ^= 0x01; // inside the trailing ECDSA signature value
  return out;
}

export function derToPem(der: Uint8Array): string {
  return `${PemConverter.encode([{ type: 'CERTIFICATE', rawData: new Uint8Array(der).buffer }])}\n`;
}

// ---------------------------------------------------------------------------------------------
// On disk, for `jit-broker dev-ca init|issue`

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca-key.pem';

/** A private key file, created anew with mode 0600 (never through an existing file or symlink). */
function writeKey(path: string, pem: string): void {
  rmSync(path, { force: true });
  writeFileSync(path, pem, { mode: 0o600, flag: 'wx' });
}

/** Creates DIR/ca.pem and DIR/ca-key.pem (mode 0600); refuses to overwrite an existing CA. */
export async function initCaDir(dir: string, trustDomain: string, opts: { force?: boolean } = {}): Promise<{ cert: string; key: string }> {
  const cert = join(dir, CA_CERT_FILE);
  const key = join(dir, CA_KEY_FILE);
  if (!opts.force && existsSync(cert)) throw new Error(`${cert} already exists (use --force to replace the CA)`);
  const ca = await createCA({ trustDomain });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(cert, ca.certPem);
  writeKey(key, ca.keyPem);
  return { cert, key };
}

/** Loads the CA a previous `initCaDir` wrote. */
export async function loadCaDir(dir: string): Promise<Credential> {
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  let certText: string;
  let keyText: string;
  try {
    certText = readFileSync(certPath, 'utf8');
    keyText = readFileSync(keyPath, 'utf8');
  } catch {
    throw new Error(`no dev CA in ${dir} (run: jit-broker dev-ca init --dir ${dir})`);
  }
  const cert = new X509Certificate(certText);
  const privateKey = await crypto.subtle.importKey('pkcs8', new Uint8Array(PemConverter.decodeFirst(keyText)), EC, true, ['sign']);
  const publicKey = await cert.publicKey.export(EC, ['verify'], crypto);
  return credential(cert, { privateKey, publicKey }, []);
}

export interface IssueToDirOptions {
  spiffeId?: string;
  dns?: string[];
  ips?: string[];
  server?: boolean;
  ttlMs?: number;
  name: string;
}

/** Issues a workload (SPIFFE ID) or server (DNS/IP) certificate into DIR/NAME.pem and DIR/NAME-key.pem. */
export async function issueToDir(dir: string, opts: IssueToDirOptions): Promise<{ cert: string; key: string; id?: string }> {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(opts.name) || opts.name.startsWith('.')) throw new Error('--out must be a plain file name such as "workload"');
  if (opts.name === 'ca' || opts.name === 'ca-key') throw new Error(`--out "${opts.name}" would overwrite the CA`);
  if (!opts.spiffeId && !opts.server) throw new Error('give --spiffe-id ID (a workload certificate) or --server (a server certificate)');
  if (opts.spiffeId) {
    const id = parseSpiffeId(opts.spiffeId, { requirePath: true });
    if (!id.ok) throw new Error(`invalid --spiffe-id: ${id.problem}`);
  }
  const ca = await loadCaDir(dir);
  const caDomain = ca.cert.getExtension(SubjectAlternativeNameExtension)?.names.items.find((n) => n.type === 'url')?.value;
  if (opts.spiffeId && caDomain && !opts.spiffeId.startsWith(`${caDomain}/`)) {
    throw new Error(`--spiffe-id must be in this CA's trust domain (${caDomain}/...): the broker refuses a SPIFFE ID from another trust domain`);
  }
  const now = Date.now();
  const issued = await issueCertificate(ca, {
    ...(opts.spiffeId ? { uris: [opts.spiffeId] } : {}),
    dns: opts.dns ?? (opts.server ? ['localhost'] : []),
    ips: opts.ips ?? (opts.server ? ['127.0.0.1'] : []),
    ...(opts.server ? { server: true } : {}),
    notAfter: new Date(now + (opts.ttlMs ?? DAY)),
  });
  const cert = join(dir, `${opts.name}.pem`);
  const key = join(dir, `${opts.name}-key.pem`);
  writeFileSync(cert, issued.chainPem);
  writeKey(key, issued.keyPem);
  return { cert, key, ...(opts.spiffeId ? { id: opts.spiffeId } : {}) };
}
