/**
 * Certificates for the X.509 conformance suite, with every field under the case's control: key
 * type and size, signature hash, validity, each extension present or not and critical or not,
 * an empty subject. Everything is generated at test time with @peculiar/x509 over node:crypto's
 * WebCrypto; nothing is read from disk or mocked.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  PemConverter,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
  type JsonGeneralName,
  type X509Certificate,
} from '@peculiar/x509';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;

export type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-1024';
export type Hash = 'SHA-256' | 'SHA-384' | 'SHA-1';

export interface Minted {
  cert: X509Certificate;
  der: Buffer;
  pem: string;
  keys: CryptoKeyPair;
  keyKind: KeyKind;
  keyPem: string;
  subject: string;
}

export interface MintOptions {
  /** Subject DN; '' for an empty subject. */
  subject: string;
  /** The issuer; undefined: self-signed. */
  issuer?: Minted;
  /** Key of the new certificate (default ec-p256). */
  key?: KeyKind;
  /** Hash of the issuer's signature (default SHA-256). */
  hash?: Hash;
  notBefore: Date;
  notAfter: Date;
  /** basicConstraints: undefined leaves it out. */
  ca?: boolean | undefined;
  pathLength?: number;
  /** keyUsage bits: null leaves the extension out (default: keyCertSign|cRLSign for a CA, digitalSignature otherwise). */
  keyUsage?: number | null;
  keyUsageCritical?: boolean;
  /** EKU OIDs: null leaves the extension out (default clientAuth for a leaf, none for a CA). */
  eku?: string[] | null;
  san?: JsonGeneralName[];
  sanCritical?: boolean;
  extensions?: Extension[];
}

const RSA = (bits: number) => ({ name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
const EC = (curve: string) => ({ name: 'ECDSA', namedCurve: curve });

export async function generate(kind: KeyKind): Promise<CryptoKeyPair> {
  switch (kind) {
    case 'ec-p256':
      return crypto.subtle.generateKey(EC('P-256'), true, ['sign', 'verify']);
    case 'ec-p384':
      return crypto.subtle.generateKey(EC('P-384'), true, ['sign', 'verify']);
    case 'rsa-2048':
      return crypto.subtle.generateKey(RSA(2048), true, ['sign', 'verify']);
    case 'rsa-1024':
      return crypto.subtle.generateKey(RSA(1024), true, ['sign', 'verify']);
  }
}

/** WebCrypto keys are bound to one hash; a signature with another hash needs the key imported again. */
async function signingKey(issuer: Minted, hash: Hash): Promise<{ key: webcrypto.CryptoKey; algorithm: { name: string; hash: string } }> {
  const rsa = issuer.keyKind.startsWith('rsa');
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', issuer.keys.privateKey);
  if (rsa) {
    const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'RSASSA-PKCS1-v1_5', hash }, false, ['sign']);
    return { key, algorithm: { name: 'RSASSA-PKCS1-v1_5', hash } };
  }
  return { key: issuer.keys.privateKey, algorithm: { name: 'ECDSA', hash } };
}

export async function mint(opts: MintOptions): Promise<Minted> {
  const keyKind = opts.key ?? 'ec-p256';
  const keys = await generate(keyKind);
  const ca = opts.ca;
  const keyUsage = opts.keyUsage === undefined ? (ca ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign : KeyUsageFlags.digitalSignature) : opts.keyUsage;
  const eku = opts.eku === undefined ? (ca ? null : ['1.3.6.1.5.5.7.3.2']) : opts.eku;
  const extensions: Extension[] = [
    ...(ca === undefined ? [] : [new BasicConstraintsExtension(ca, ca ? opts.pathLength : undefined, true)]),
    ...(keyUsage === null ? [] : [new KeyUsagesExtension(keyUsage, opts.keyUsageCritical ?? true)]),
    ...(eku === null ? [] : [new ExtendedKeyUsageExtension(eku, false)]),
    await SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    ...(opts.issuer ? [await AuthorityKeyIdentifierExtension.create(opts.issuer.keys.publicKey, false, crypto)] : []),
    ...(opts.san?.length ? [new SubjectAlternativeNameExtension(opts.san, opts.sanCritical ?? false)] : []),
    ...(opts.extensions ?? []),
  ];
  const signer = opts.issuer ? await signingKey(opts.issuer, opts.hash ?? 'SHA-256') : await signingKey({ keys, keyKind } as Minted, opts.hash ?? 'SHA-256');
  const serialNumber = (() => {
    const b = randomBytes(16);
    b[0] = (b[0]! & 0x7f) | 0x01;
    return b.toString('hex');
  })();
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber,
      subject: opts.subject,
      issuer: opts.issuer ? opts.issuer.cert.subject : opts.subject,
      notBefore: opts.notBefore,
      notAfter: opts.notAfter,
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions,
    },
    crypto,
  );
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    cert,
    der: Buffer.from(cert.rawData),
    pem: `${cert.toString('pem')}\n`,
    keys,
    keyKind,
    keyPem: PemConverter.encode([{ type: 'PRIVATE KEY', rawData: pkcs8 }]),
    subject: opts.subject,
  };
}
