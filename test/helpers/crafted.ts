/**
 * Certificates the dev CA will not make (arbitrary EKU OIDs, subject attributes, name-constraint
 * forms, extra extensions): signed by a dev-CA credential, returned as a full credential.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralSubtree, GeneralSubtrees, NameConstraints, id_ce_nameConstraints, type GeneralName } from '@peculiar/asn1-x509';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  X509CertificateGenerator,
  type JsonGeneralName,
} from '@peculiar/x509';
import { chainAbove, credential, generateKeys, type Credential } from '../../src/dev/dev-ca.js';

const DAY = 86_400_000;

export interface Crafted {
  subject: string;
  ca?: boolean;
  /** keyUsage bits; null leaves the extension out. */
  keyUsage?: number | null;
  /** Default true. */
  keyUsageCritical?: boolean;
  /** EKU OIDs; undefined leaves the extension out. */
  eku?: string[];
  san?: JsonGeneralName[];
  /** Default false. */
  sanCritical?: boolean;
  extensions?: Extension[];
  /** Validity is [now - 1 min, now + 1 day]. */
  now?: number;
}

/** A certificate signed by `issuer` with exactly these extensions (usable as an issuer itself, PKCS#8 key). */
export async function craft(issuer: Credential, opts: Crafted): Promise<Credential> {
  const keys = await generateKeys();
  const ca = opts.ca ?? false;
  const now = opts.now ?? Date.now();
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: '01' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex'),
      subject: opts.subject,
      issuer: issuer.cert.subject,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + DAY),
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new BasicConstraintsExtension(ca, undefined, true),
        ...(opts.keyUsage === null
          ? []
          : [new KeyUsagesExtension(opts.keyUsage ?? (ca ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign : KeyUsageFlags.digitalSignature), opts.keyUsageCritical ?? true)]),
        await AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey, false, webcrypto),
        ...(opts.eku ? [new ExtendedKeyUsageExtension(opts.eku, false)] : []),
        ...(opts.san?.length ? [new SubjectAlternativeNameExtension(opts.san, opts.sanCritical ?? false)] : []),
        ...(opts.extensions ?? []),
      ],
    },
    webcrypto,
  );
  return credential(cert, keys, chainAbove(issuer));
}

/** A critical nameConstraints extension with any GeneralName forms. */
export function nameConstraints(permitted: GeneralName[], excluded: GeneralName[] = []): Extension {
  const subtrees = (names: GeneralName[]) => (names.length ? new GeneralSubtrees(names.map((base) => new GeneralSubtree({ base }))) : undefined);
  const p = subtrees(permitted);
  const x = subtrees(excluded);
  return new Extension(id_ce_nameConstraints, true, AsnConvert.serialize(new NameConstraints({ ...(p ? { permittedSubtrees: p } : {}), ...(x ? { excludedSubtrees: x } : {}) })));
}
