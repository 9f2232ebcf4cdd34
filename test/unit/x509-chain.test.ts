/**
 * RFC 5280 path validation cases the end-to-end mTLS matrix does not reach. Certificates come from
 * the dev CA, or, for extensions it cannot write (excluded DNS and directoryName subtrees, unknown
 * critical extensions, anyExtendedKeyUsage), from @peculiar/x509's generator right here.
 */
import 'reflect-metadata';
import { generateKeyPairSync, webcrypto } from 'node:crypto';
import { AsnConvert, BitString } from '@peculiar/asn1-schema';
import {
  AttributeTypeAndValue,
  AttributeValue,
  GeneralName,
  GeneralSubtree,
  GeneralSubtrees,
  NameConstraints,
  Name as AsnName,
  RelativeDistinguishedName,
} from '@peculiar/asn1-x509';
import {
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectAlternativeNameExtension,
  X509CertificateGenerator,
  type JsonGeneralName,
} from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { CertificateParseError, parseCertificate, rdnKeys, validateChain, type ChainResult, type ParsedCertificate } from '../../src/attestation/x509-chain.js';
import { createCA, generateKeys, issueCertificate, type Credential, type IssueOptions } from '../../src/dev/dev-ca.js';
import { craft, nameConstraints, type Crafted } from '../helpers/crafted.js';

const DAY = 86_400_000;
const ANY_EKU = '2.5.29.37.0';
const ID = 'spiffe://example.org/ns/payments/sa/api';
/** Whole seconds, as X.509 stores them, so expiry messages can be asserted exactly. */
const NOW = Math.floor(Date.now() / 1000) * 1000;

let root: Credential;
let other: Credential;
let bundles: Map<string, ParsedCertificate[]>;

beforeAll(async () => {
  root = await createCA({ trustDomain: 'example.org' });
  other = await createCA({ trustDomain: 'other.org' });
  bundles = new Map([
    ['example.org', [parseCertificate(root.der)]],
    ['other.org', [parseCertificate(other.der)]],
  ]);
});

/** What a client presents: the credential followed by its intermediates. */
const presented = (c: Credential): Buffer[] => [c.der, ...c.intermediates.map((i) => i.der)];

function validate(
  chain: Buffer[],
  opts: { bundles?: Map<string, ParsedCertificate[]>; now?: number; preferred?: string; maxIntermediates?: number } = {},
): ChainResult<string> {
  return validateChain(chain.map(parseCertificate), opts.bundles ?? bundles, opts.now ?? Date.now(), opts.preferred, opts.maxIntermediates);
}

/** The problem text of a refused chain (fails the test when it validates). */
function problemOf(chain: Buffer[], opts?: Parameters<typeof validate>[1]): string {
  const r = validate(chain, opts);
  if (r.ok) throw new Error(`expected the chain to be refused, but ${r.trustDomain} validated it`);
  return r.problem;
}

function expectValid(chain: Buffer[], trustDomain = 'example.org', opts?: Parameters<typeof validate>[1]) {
  const r = validate(chain, opts);
  expect(r.ok ? { trustDomain: r.trustDomain } : { problem: r.problem }).toEqual({ trustDomain });
  return r as Extract<ChainResult<string>, { ok: true }>;
}

const leafUnder = (issuer: Credential, over: IssueOptions = {}) => issueCertificate(issuer, { uris: [ID], ...over });

// ---- certificates the dev CA cannot make ------------------------------------------------------

const craftAt = (issuer: Credential, opts: Crafted) => craft(issuer, { now: NOW, ...opts });
const dnsName = (d: string) => new GeneralName({ dNSName: d });
const dirName = (dn: string) => new GeneralName({ directoryName: AsnConvert.parse(new Name(dn).toArrayBuffer(), AsnName) });

const constrainedCa = (subject: string, permitted: GeneralName[], excluded: GeneralName[] = []) =>
  craftAt(root, { subject, ca: true, extensions: [nameConstraints(permitted, excluded)] });

// -----------------------------------------------------------------------------------------------

describe('baseline', () => {
  it('a leaf under the trust domain CA validates, with the path leaf → anchor', async () => {
    const leaf = await leafUnder(root);
    const r = expectValid(presented(leaf));
    expect(r.path.map((c) => c.subject)).toEqual(['CN=api', root.cert.subject]);
  });

  it('an empty chain and an unknown issuer are refused with their reasons', async () => {
    expect(validate([])).toEqual({ ok: false, problem: 'no client certificate was presented' });
    const stranger = await createCA({ trustDomain: 'example.org', commonName: 'stranger' });
    expect(problemOf(presented(await leafUnder(stranger)))).toBe(
      'the client certificate (issuer CN=stranger, O=jit-broker dev) was not issued by a CA in any trusted bundle',
    );
  });
});

describe('URI name constraints', () => {
  it('a URI in an excluded subtree is refused', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=excludes example.org', nameConstraints: { excludedUris: ['example.org'] } });
    expect(problemOf(presented(await leafUnder(ca)))).toBe(`intermediate CN=excludes example.org: URI ${ID} is excluded by its name constraints`);
    // Another host is outside the excluded subtree.
    expectValid(presented(await leafUnder(ca, { uris: ['spiffe://payments.example.org/a'] })));
  });

  it('a leading dot excludes subdomains but not the domain itself, and exclusion beats permission', async () => {
    const ca = await issueCertificate(root, {
      ca: true,
      subject: 'CN=td subtree',
      nameConstraints: { permittedUris: ['example.org', '.example.org'], excludedUris: ['.blocked.example.org'] },
    });
    expectValid(presented(await leafUnder(ca)));
    expectValid(presented(await leafUnder(ca, { uris: ['spiffe://blocked.example.org/a'] })));
    expect(problemOf(presented(await leafUnder(ca, { uris: ['spiffe://x.blocked.example.org/a'] })))).toBe(
      'intermediate CN=td subtree: URI spiffe://x.blocked.example.org/a is excluded by its name constraints',
    );
    expect(problemOf(presented(await leafUnder(ca, { uris: ['spiffe://notexample.org/a'] })))).toBe(
      'intermediate CN=td subtree: URI spiffe://notexample.org/a is outside its permitted name constraints',
    );
  });

  it("constraints also bind an intermediate's own URI SAN (as OpenSSL does in the handshake)", async () => {
    const top = await issueCertificate(root, { ca: true, subject: 'CN=payments only', nameConstraints: { permittedUris: ['payments.example.org'] } });
    const inside = await issueCertificate(top, { ca: true, subject: 'CN=inner ok', uris: ['spiffe://payments.example.org'] });
    expectValid(presented(await leafUnder(inside, { uris: ['spiffe://payments.example.org/api'] })));
    const outside = await issueCertificate(top, { ca: true, subject: 'CN=inner wide', uris: ['spiffe://example.org'] });
    expect(problemOf(presented(await leafUnder(outside, { uris: ['spiffe://payments.example.org/api'] })))).toBe(
      'intermediate CN=payments only: URI spiffe://example.org is outside its permitted name constraints',
    );
  });

  it('a self-issued intermediate (key rollover) is exempt from its issuer’s constraints, as in OpenSSL', async () => {
    const top = await issueCertificate(root, { ca: true, subject: 'CN=rolling', nameConstraints: { permittedUris: ['payments.example.org'] } });
    const rolled = await issueCertificate(top, { ca: true, subject: 'CN=rolling', uris: ['spiffe://example.org'] });
    const r = expectValid(presented(await leafUnder(rolled, { uris: ['spiffe://payments.example.org/api'] })));
    expect(r.path).toHaveLength(4);
    // The leaf itself is never exempt.
    expect(problemOf(presented(await leafUnder(rolled)))).toBe(`intermediate CN=rolling: URI ${ID} is outside its permitted name constraints`);
  });
});

describe('DNS name constraints', () => {
  it('permitted: the name itself and any subdomain, compared case-insensitively', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=dns example.com', nameConstraints: { permittedDns: ['example.com'] } });
    for (const dns of ['example.com', 'api.example.com', 'a.b.example.com', 'API.Example.COM']) {
      expectValid(presented(await leafUnder(ca, { dns: [dns] })));
    }
    for (const dns of ['badexample.com', 'example.com.evil.net', 'example.org']) {
      expect(problemOf(presented(await leafUnder(ca, { dns: [dns] })))).toBe(
        `intermediate CN=dns example.com: DNS name ${dns} is outside its permitted name constraints`,
      );
    }
    // Every DNS SAN must fit, not just one of them.
    expect(problemOf(presented(await leafUnder(ca, { dns: ['api.example.com', 'api.example.net'] })))).toBe(
      'intermediate CN=dns example.com: DNS name api.example.net is outside its permitted name constraints',
    );
  });

  it('permitted with a leading dot: subdomains only', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=dns .example.com', nameConstraints: { permittedDns: ['.example.com'] } });
    expectValid(presented(await leafUnder(ca, { dns: ['api.example.com'] })));
    expect(problemOf(presented(await leafUnder(ca, { dns: ['example.com'] })))).toBe(
      'intermediate CN=dns .example.com: DNS name example.com is outside its permitted name constraints',
    );
  });

  it('a DNS constraint does not restrict a leaf without DNS names, nor its URI', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=dns only', nameConstraints: { permittedDns: ['example.com'] } });
    expectValid(presented(await leafUnder(ca)));
  });

  it('excluded: the name and its subdomains, not look-alikes', async () => {
    const ca = await constrainedCa('CN=dns excluded', [], [dnsName('evil.example.com')]);
    for (const dns of ['evil.example.com', 'x.evil.example.com', 'X.EVIL.example.com']) {
      expect(problemOf(presented(await leafUnder(ca, { dns: [dns] })))).toBe(
        `intermediate CN=dns excluded: DNS name ${dns} is excluded by its name constraints`,
      );
    }
    for (const dns of ['notevil.example.com', 'example.com', 'evil.example.com.au']) {
      expectValid(presented(await leafUnder(ca, { dns: [dns] })));
    }
  });

  it('excluded with a leading dot: subdomains only', async () => {
    const ca = await constrainedCa('CN=dns excluded dot', [], [dnsName('.evil.example.com')]);
    expectValid(presented(await leafUnder(ca, { dns: ['evil.example.com'] })));
    expect(problemOf(presented(await leafUnder(ca, { dns: ['a.evil.example.com'] })))).toBe(
      'intermediate CN=dns excluded dot: DNS name a.evil.example.com is excluded by its name constraints',
    );
  });

  it('permitted and excluded together', async () => {
    const ca = await constrainedCa('CN=dns both', [dnsName('example.com')], [dnsName('admin.example.com')]);
    expectValid(presented(await leafUnder(ca, { dns: ['api.example.com'] })));
    expect(problemOf(presented(await leafUnder(ca, { dns: ['x.admin.example.com'] })))).toBe(
      'intermediate CN=dns both: DNS name x.admin.example.com is excluded by its name constraints',
    );
  });
});

describe('directoryName constraints', () => {
  it('permitted: the subject must start with the constraint RDNs (case- and space-folded)', async () => {
    const ca = await constrainedCa('C=US, O=Acme, CN=acme issuing', [dirName('C=US, O=Acme')]);
    expectValid(presented(await leafUnder(ca, { subject: 'C=US, O=Acme, OU=Payments, CN=api' })));
    expectValid(presented(await leafUnder(ca, { subject: 'C=us, O=ACME,  CN=api' })));
    expect(problemOf(presented(await leafUnder(ca, { subject: 'C=US, O=Other, CN=api' })))).toBe(
      'intermediate C=US, O=Acme, CN=acme issuing: subject 2.5.4.6=us, 2.5.4.10=other, 2.5.4.3=api is outside its permitted name constraints',
    );
    // The constraint is a prefix in RDN order, not a set of attributes found anywhere.
    expect(problemOf(presented(await leafUnder(ca, { subject: 'O=Acme, C=US, CN=api' })))).toMatch(/subject 2\.5\.4\.10=acme, 2\.5\.4\.6=us, 2\.5\.4\.3=api is outside/);
    // Shorter than the constraint: outside.
    expect(problemOf(presented(await leafUnder(ca, { subject: 'C=US' })))).toMatch(/subject 2\.5\.4\.6=us is outside its permitted/);
  });

  it('excluded subtree', async () => {
    const ca = await constrainedCa('CN=dn excluded', [], [dirName('C=US, O=Acme, OU=Blocked')]);
    expectValid(presented(await leafUnder(ca, { subject: 'C=US, O=Acme, OU=Fine, CN=api' })));
    expect(problemOf(presented(await leafUnder(ca, { subject: 'C=US, O=Acme, OU=Blocked, CN=api' })))).toBe(
      'intermediate CN=dn excluded: subject 2.5.4.6=us, 2.5.4.10=acme, 2.5.4.11=blocked, 2.5.4.3=api is excluded by its name constraints',
    );
  });

  it('binds the subjects of intermediates below the constraint too', async () => {
    const top = await constrainedCa('C=US, O=Acme, CN=acme root', [dirName('C=US, O=Acme')]);
    const stray = await issueCertificate(top, { ca: true, subject: 'C=US, O=Elsewhere, CN=stray' });
    expect(problemOf(presented(await leafUnder(stray, { subject: 'C=US, O=Acme, CN=api' })))).toBe(
      'intermediate C=US, O=Acme, CN=acme root: subject 2.5.4.6=us, 2.5.4.10=elsewhere, 2.5.4.3=stray is outside its permitted name constraints',
    );
  });
});

describe('other name-constraint forms fail closed', () => {
  it('IP address constraints refuse any certificate with an IP SAN', async () => {
    const ca = await constrainedCa('CN=ip constrained', [new GeneralName({ iPAddress: '10.0.0.0/8' })]);
    expect(problemOf(presented(await leafUnder(ca, { ips: ['10.1.2.3'] })))).toBe(
      'intermediate CN=ip constrained: IP address name constraints are not supported, and a certificate below it names IP address 10.1.2.3',
    );
    expectValid(presented(await leafUnder(ca)));
  });

  it('a registeredID constraint is refused outright', async () => {
    const ca = await constrainedCa('CN=odd constraint', [new GeneralName({ registeredID: '1.2.3.4' })]);
    expect(problemOf(presented(await leafUnder(ca)))).toBe('intermediate CN=odd constraint: it carries a name constraint form that is not supported');
  });
});

describe('extensions and key usage', () => {
  const UNKNOWN_OID = '1.3.6.1.4.1.55555.1';
  const unknown = (critical: boolean) => new Extension(UNKNOWN_OID, critical, new Uint8Array([0x05, 0x00]));

  it('an unknown critical extension on the leaf is refused; the same extension non-critical is fine', async () => {
    const base = { subject: 'CN=odd', eku: [ExtendedKeyUsage.clientAuth], san: [{ type: 'url' as const, value: ID }] };
    expect(problemOf(presented(await craftAt(root, { ...base, extensions: [unknown(true)] })))).toBe(
      `the client certificate carries an unsupported critical extension (${UNKNOWN_OID})`,
    );
    expectValid(presented(await craftAt(root, { ...base, extensions: [unknown(false)] })));
  });

  it('a certificate that carries an extension twice is not parsed at all (which copy would count?)', async () => {
    const twice = await craftAt(root, {
      subject: 'CN=twice',
      eku: [ExtendedKeyUsage.clientAuth],
      san: [{ type: 'url', value: ID }],
      extensions: [new SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://example.org/ns/other/sa/admin' }], false)],
    });
    expect(() => parseCertificate(twice.der)).toThrow(CertificateParseError);
    expect(() => parseCertificate(twice.der)).toThrow(/extension 2\.5\.29\.17 appears twice/);
  });

  it('an unknown critical extension on an intermediate is refused', async () => {
    const inter = await craftAt(root, { subject: 'CN=odd intermediate', ca: true, extensions: [unknown(true)] });
    expect(problemOf(presented(await leafUnder(inter)))).toBe(`intermediate CN=odd intermediate carries an unsupported critical extension (${UNKNOWN_OID})`);
  });

  it('an intermediate whose keyUsage lacks keyCertSign is refused', async () => {
    const inter = await issueCertificate(root, { ca: true, subject: 'CN=no certsign', keyUsage: KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature });
    expect(problemOf(presented(await leafUnder(inter)))).toBe('intermediate CN=no certsign lacks keyCertSign key usage');
  });

  it('a leaf whose keyUsage lacks digitalSignature is refused', async () => {
    expect(problemOf(presented(await leafUnder(root, { keyUsage: KeyUsageFlags.keyAgreement })))).toBe(
      'the client certificate key usage lacks digitalSignature',
    );
    expectValid(presented(await leafUnder(root, { keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyAgreement })));
  });

  it('anyExtendedKeyUsage is not clientAuth, on a leaf or a CA (as OpenSSL decides in the handshake)', async () => {
    const anyInter = await craftAt(root, { subject: 'CN=any eku', ca: true, eku: [ANY_EKU] });
    expect(problemOf(presented(await leafUnder(anyInter)))).toBe('intermediate CN=any eku has an extendedKeyUsage without clientAuth');
    const bothInter = await craftAt(root, { subject: 'CN=client eku', ca: true, eku: [ANY_EKU, ExtendedKeyUsage.clientAuth] });
    expectValid(presented(await leafUnder(bothInter)));
    const serverInter = await craftAt(root, { subject: 'CN=server eku', ca: true, eku: [ExtendedKeyUsage.serverAuth] });
    expect(problemOf(presented(await leafUnder(serverInter)))).toBe('intermediate CN=server eku has an extendedKeyUsage without clientAuth');
    const anyLeaf = await craftAt(root, { subject: 'CN=any leaf', eku: [ANY_EKU], san: [{ type: 'url', value: ID }] });
    expect(problemOf(presented(anyLeaf))).toBe('the client certificate has an extendedKeyUsage without clientAuth');
    // No EKU extension at all places no restriction.
    expectValid(presented(await leafUnder(root, { eku: null })));
  });
});

describe('validity of issuers', () => {
  it('an expired intermediate is refused even when the leaf is current', async () => {
    const inter = await issueCertificate(root, { ca: true, subject: 'CN=old intermediate', notBefore: new Date(NOW - 3 * DAY), notAfter: new Date(NOW - DAY) });
    expect(problemOf(presented(await leafUnder(inter)))).toBe(`intermediate CN=old intermediate expired at ${new Date(NOW - DAY).toISOString()}`);
  });

  it('a not-yet-valid intermediate is refused', async () => {
    const inter = await issueCertificate(root, { ca: true, subject: 'CN=future intermediate', notBefore: new Date(NOW + DAY), notAfter: new Date(NOW + 3 * DAY) });
    expect(problemOf(presented(await leafUnder(inter)))).toBe(`intermediate CN=future intermediate is not valid until ${new Date(NOW + DAY).toISOString()}`);
  });

  it('an expired trust anchor is refused', async () => {
    const old = await createCA({ trustDomain: 'example.org', commonName: 'expired root', notBefore: new Date(NOW - 10 * DAY), notAfter: new Date(NOW - DAY) });
    const leaf = await leafUnder(old);
    expect(problemOf(presented(leaf), { bundles: new Map([['example.org', [parseCertificate(old.der)]]]) })).toBe(
      `the trust anchor CN=expired root, O=jit-broker dev expired at ${new Date(NOW - DAY).toISOString()}`,
    );
  });

  it('both bounds are inclusive, with no tolerance: valid at notBefore and at notAfter, not a millisecond outside', async () => {
    const from = Math.floor(NOW / 1000) * 1000 - 60_000;
    const to = from + 3_600_000;
    const leaf = await leafUnder(root, { notBefore: new Date(from), notAfter: new Date(to) });
    expectValid(presented(leaf), 'example.org', { now: from });
    expectValid(presented(leaf), 'example.org', { now: to });
    expect(problemOf(presented(leaf), { now: from - 1 })).toBe(`the client certificate is not valid until ${new Date(from).toISOString()}`);
    expect(problemOf(presented(leaf), { now: to + 1 })).toBe(`the client certificate expired at ${new Date(to).toISOString()}`);
  });

  it('validity is judged at the given time', async () => {
    const leaf = await leafUnder(root, { notBefore: new Date(NOW - 60_000), notAfter: new Date(NOW + 3_600_000) });
    expectValid(presented(leaf), 'example.org', { now: NOW });
    expect(problemOf(presented(leaf), { now: NOW + 3_600_001 })).toBe(`the client certificate expired at ${new Date(NOW + 3_600_000).toISOString()}`);
  });
});

describe('path building', () => {
  it('intermediates presented in any order (and with strays) still validate', async () => {
    const i1 = await issueCertificate(root, { ca: true, subject: 'CN=i1' });
    const i2 = await issueCertificate(i1, { ca: true, subject: 'CN=i2' });
    const i3 = await issueCertificate(i2, { ca: true, subject: 'CN=i3' });
    const leaf = await leafUnder(i3);
    const stray = await issueCertificate(root, { ca: true, subject: 'CN=stray' });
    const expected = ['CN=api', 'CN=i3', 'CN=i2', 'CN=i1', root.cert.subject];
    for (const rest of [
      [i1, i2, i3],
      [i2, i3, i1],
      [i3, i1, i2],
      [stray, i1, root, i3, i2],
    ]) {
      const r = expectValid([leaf.der, ...rest.map((c) => c.der)]);
      expect(r.path.map((c) => c.subject)).toEqual(expected);
    }
    // A missing link is a missing link.
    expect(problemOf([leaf.der, i3.der, i1.der])).toBe('the client certificate (issuer CN=i3) was not issued by a CA in any trusted bundle');
  });

  it('the pathLenConstraint of the trust anchor counts every intermediate', async () => {
    const strict = await createCA({ trustDomain: 'example.org', commonName: 'pathlen 1 root', pathLength: 1 });
    const only = new Map([['example.org', [parseCertificate(strict.der)]]]);
    const i1 = await issueCertificate(strict, { ca: true, subject: 'CN=pl i1' });
    expectValid(presented(await leafUnder(i1)), 'example.org', { bundles: only });
    const i2 = await issueCertificate(i1, { ca: true, subject: 'CN=pl i2' });
    expect(problemOf(presented(await leafUnder(i2)), { bundles: only })).toBe(
      'the trust anchor CN=pathlen 1 root, O=jit-broker dev allows 1 intermediate(s) below it (pathLenConstraint) but the chain has 2',
    );
  });

  it("a chain that only another trust domain's bundle validates reports that trust domain", async () => {
    // The leaf claims example.org, but other.org's CA issued it: the caller must see other.org to refuse the mismatch.
    const leaf = await leafUnder(other);
    expect(expectValid(presented(leaf), 'other.org').path.map((c) => c.subject)).toEqual(['CN=api', other.cert.subject]);
    expectValid(presented(leaf), 'other.org', { preferred: 'example.org' });
  });

  it('a CA in two bundles validates under the preferred trust domain', async () => {
    const both = new Map([
      ['example.org', [parseCertificate(root.der)]],
      ['other.org', [parseCertificate(other.der), parseCertificate(root.der)]],
    ]);
    const leaf = await leafUnder(root);
    expectValid(presented(leaf), 'example.org', { bundles: both });
    expectValid(presented(leaf), 'other.org', { bundles: both, preferred: 'other.org' });
    expectValid(presented(leaf), 'example.org', { bundles: both, preferred: 'example.org' });
  });
});

// ---- certificates with a chosen key, issuer name and signature algorithm ------------------------

type KeyPair = webcrypto.CryptoKeyPair;

interface RawOptions {
  subject: string;
  issuer: string;
  /** The certified key pair. */
  keys: KeyPair;
  /** The issuer's private key (defaults to `keys`, a self-signature). */
  signingKey?: webcrypto.CryptoKey;
  signingAlgorithm?: Parameters<typeof X509CertificateGenerator.create>[0]['signingAlgorithm'];
  ca?: boolean;
  san?: JsonGeneralName[];
  notAfter?: Date;
}

let serialCounter = 0x100;

/** A certificate with exactly the names, keys and algorithm asked for (DER). */
async function rawCert(opts: RawOptions): Promise<Buffer> {
  const ca = opts.ca ?? false;
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: (serialCounter++).toString(16).padStart(4, '0'),
      subject: opts.subject,
      issuer: opts.issuer,
      notBefore: new Date(NOW - 60_000),
      notAfter: opts.notAfter ?? new Date(NOW + DAY),
      publicKey: opts.keys.publicKey,
      signingKey: opts.signingKey ?? opts.keys.privateKey,
      signingAlgorithm: opts.signingAlgorithm ?? { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new BasicConstraintsExtension(ca, undefined, true),
        new KeyUsagesExtension(ca ? KeyUsageFlags.keyCertSign : KeyUsageFlags.digitalSignature, true),
        ...(opts.san?.length ? [new SubjectAlternativeNameExtension(opts.san, false)] : []),
      ],
    },
    webcrypto,
  );
  return Buffer.from(cert.rawData);
}

const RSA_PKCS1 = 'RSASSA-PKCS1-v1_5';
const rsaKeys = (bits: number, hash = 'SHA-256'): Promise<KeyPair> =>
  webcrypto.subtle.generateKey({ name: RSA_PKCS1, modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash }, true, ['sign', 'verify']);
/** The same RSA private key bound to another hash (WebCrypto ties the hash to the key). */
async function rsaSigningKey(keys: KeyPair, hash: string): Promise<webcrypto.CryptoKey> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return webcrypto.subtle.importKey('pkcs8', pkcs8, { name: RSA_PKCS1, hash }, false, ['sign']);
}
const onlyBundle = (...anchors: Buffer[]) => new Map([['example.org', anchors.map((a) => parseCertificate(a))]]);
const svid = [{ type: 'url' as const, value: ID }];

describe('path building on a budget', () => {
  it('8 CA certificates sharing one subject and one key (they all "sign" one another) are refused at once, as unchained', async () => {
    const loopKey = await generateKeys();
    const loops: Buffer[] = [];
    for (let i = 0; i < 8; i++) loops.push(await rawCert({ subject: 'CN=loop CA', issuer: 'CN=loop CA', keys: loopKey, ca: true }));
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=loop CA', keys: await generateKeys(), signingKey: loopKey.privateKey, san: svid });
    // Every one verifies under every other: without the loop rule this is 8! paths, or with
    // memoisation 8 + 8·7 = 64 signature checks (over the budget of 48).
    const loopCerts = loops.map((d) => parseCertificate(d));
    expect(loopCerts.every((c) => loopCerts.every((o) => c.node.verify(o.node.publicKey)))).toBe(true);
    const unchained = 'the client certificate (issuer CN=loop CA) was not issued by a CA in any trusted bundle';
    expect(problemOf([leaf, ...loops])).toBe(unchained);
    expect(problemOf([leaf, ...[...loops].reverse()])).toBe(unchained);
    // Sent twice over, duplicates count once.
    expect(problemOf([leaf, ...loops, ...loops])).toBe(unchained);
  });

  it('among such copies, the one a trusted CA issued still makes a path (the others are skipped, not followed)', async () => {
    const sharedKey = await generateKeys();
    const loops: Buffer[] = [];
    for (let i = 0; i < 7; i++) loops.push(await rawCert({ subject: 'CN=loop CA', issuer: 'CN=loop CA', keys: sharedKey, ca: true }));
    const real = await rawCert({ subject: 'CN=loop CA', issuer: root.cert.subject, keys: sharedKey, signingKey: root.keys.privateKey, ca: true });
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=loop CA', keys: await generateKeys(), signingKey: sharedKey.privateKey, san: svid });
    const r = expectValid([leaf, ...loops, real]);
    expect(r.path.map((c) => c.der.equals(real))).toEqual([false, true, false]);
    expect(r.path.map((c) => c.subject)).toEqual(['CN=api', 'CN=loop CA', root.cert.subject]);
  });

  it('a search over the signature-check budget is refused with a definite problem, not run to the end', async () => {
    // A bundle that kept 6 rotated roots under one name (as SPIRE does), and a client that sends 7
    // self-issued "rollovers" under that name: every step is checked against every root.
    const rootName = 'CN=rotating root';
    const rootKeys = await Promise.all(Array.from({ length: 6 }, () => generateKeys()));
    const roots = await Promise.all(rootKeys.map((keys) => rawCert({ subject: rootName, issuer: rootName, keys, ca: true })));
    const keys = await Promise.all(Array.from({ length: 9 }, () => generateKeys()));
    // Rollover i carries key i+1 and is signed with key i+2; the leaf is signed with key 1.
    const rollovers: Buffer[] = [];
    for (let i = 0; i < 7; i++) rollovers.push(await rawCert({ subject: rootName, issuer: rootName, keys: keys[i + 1]!, signingKey: keys[i + 2]!.privateKey, ca: true }));
    const leaf = await rawCert({ subject: 'CN=api', issuer: rootName, keys: keys[0]!, signingKey: keys[1]!.privateKey, san: svid });
    expect(1 + rollovers.length).toBe(8); // no more certificates than a client may present
    const bundle = onlyBundle(...roots);
    const convoluted = 'the client certificate chain is too convoluted to validate (too many candidate paths)';
    expect(problemOf([leaf, ...rollovers], { bundles: bundle })).toBe(convoluted);
    // Fewer rollovers stay within the budget and get the ordinary answer.
    expect(problemOf([leaf, ...rollovers.slice(0, 2)], { bundles: bundle })).toBe(
      `the signature on certificate CN=api does not verify with its issuer's key`,
    );
    // The budget is per validation: an honest leaf of the last root validates right after.
    const honest = await rawCert({ subject: 'CN=api', issuer: rootName, keys: await generateKeys(), signingKey: rootKeys[5]!.privateKey, san: svid });
    const r = expectValid([honest], 'example.org', { bundles: bundle });
    expect(r.path[1]!.der.equals(roots[5]!)).toBe(true);
  });

  it('a key rollover (same name, new key) cross-certified both ways still validates, and the loop ends', async () => {
    const oldKey = await generateKeys();
    const newKey = await generateKeys();
    const name = 'CN=issuing CA';
    const oldCa = await rawCert({ subject: name, issuer: root.cert.subject, keys: oldKey, signingKey: root.keys.privateKey, ca: true });
    const newWithOld = await rawCert({ subject: name, issuer: name, keys: newKey, signingKey: oldKey.privateKey, ca: true });
    const oldWithNew = await rawCert({ subject: name, issuer: name, keys: oldKey, signingKey: newKey.privateKey, ca: true });
    const leaf = await rawCert({ subject: 'CN=api', issuer: name, keys: await generateKeys(), signingKey: newKey.privateKey, san: svid });
    for (const rest of [
      [newWithOld, oldCa],
      [oldWithNew, newWithOld, oldCa],
      [oldCa, oldWithNew, newWithOld],
    ]) {
      const r = expectValid([leaf, ...rest]);
      expect(r.path.map((c) => c.der)).toEqual([leaf, newWithOld, oldCa, root.der]);
    }
    // The old key's own leaves validate through the original certificate.
    const oldLeaf = await rawCert({ subject: 'CN=api', issuer: name, keys: await generateKeys(), signingKey: oldKey.privateKey, san: svid });
    expect(expectValid([oldLeaf, oldWithNew, newWithOld, oldCa]).path.map((c) => c.der)).toEqual([oldLeaf, oldCa, root.der]);
  });
});

describe('signature algorithms and key sizes', () => {
  const ECDSA_SHA1 = '1.2.840.10045.4.1';
  const RSA_SHA1 = '1.2.840.113549.1.1.5';

  it('a SHA-1 signature on the leaf or an intermediate is refused', async () => {
    const sha1Leaf = await rawCert({
      subject: 'CN=api',
      issuer: root.cert.subject,
      keys: await generateKeys(),
      signingKey: root.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-1' },
      san: svid,
    });
    expect(problemOf([sha1Leaf])).toBe(`the client certificate is signed with an algorithm that is not accepted (${ECDSA_SHA1})`);
    const interKeys = await generateKeys();
    const sha1Inter = await rawCert({
      subject: 'CN=sha1 intermediate',
      issuer: root.cert.subject,
      keys: interKeys,
      signingKey: root.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-1' },
      ca: true,
    });
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=sha1 intermediate', keys: await generateKeys(), signingKey: interKeys.privateKey, san: svid });
    expect(problemOf([leaf, sha1Inter])).toBe(`intermediate CN=sha1 intermediate is signed with an algorithm that is not accepted (${ECDSA_SHA1})`);
  });

  it('RSA: sha256WithRSAEncryption is accepted, sha1WithRSAEncryption is not', async () => {
    const rsaRootKeys = await rsaKeys(2048);
    const rsaRoot = await rawCert({ subject: 'CN=rsa root', issuer: 'CN=rsa root', keys: rsaRootKeys, ca: true });
    const bundle = onlyBundle(rsaRoot);
    const sha256 = await rawCert({ subject: 'CN=api', issuer: 'CN=rsa root', keys: await generateKeys(), signingKey: rsaRootKeys.privateKey, san: svid });
    expectValid([sha256], 'example.org', { bundles: bundle });
    const sha1 = await rawCert({
      subject: 'CN=api',
      issuer: 'CN=rsa root',
      keys: await generateKeys(),
      signingKey: await rsaSigningKey(rsaRootKeys, 'SHA-1'),
      san: svid,
    });
    expect(problemOf([sha1], { bundles: bundle })).toBe(`the client certificate is signed with an algorithm that is not accepted (${RSA_SHA1})`);
  });

  it('an RSA key under 2048 bits is refused on the leaf and on an anchor', async () => {
    expect(problemOf([await rawCert({ subject: 'CN=api', issuer: root.cert.subject, keys: await rsaKeys(1024), signingKey: root.keys.privateKey, san: svid })])).toBe(
      'the client certificate has a 1024-bit RSA key (at least 2048 bits are required)',
    );
    expectValid([await rawCert({ subject: 'CN=api', issuer: root.cert.subject, keys: await rsaKeys(2048), signingKey: root.keys.privateKey, san: svid })]);
    const smallRootKeys = await rsaKeys(1024);
    const smallRoot = await rawCert({ subject: 'CN=small root', issuer: 'CN=small root', keys: smallRootKeys, ca: true });
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=small root', keys: await generateKeys(), signingKey: smallRootKeys.privateKey, san: svid });
    expect(problemOf([leaf], { bundles: onlyBundle(smallRoot) })).toBe('the trust anchor CN=small root has a 1024-bit RSA key (at least 2048 bits are required)');
  });

  it('a weak anchor key is refused even when its self-signature is weak too (old roots: SHA-1 and 1024 bits)', async () => {
    const keys = await rsaKeys(1024, 'SHA-1');
    const oldRoot = await rawCert({ subject: 'CN=old root', issuer: 'CN=old root', keys, ca: true });
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=old root', keys: await generateKeys(), signingKey: await rsaSigningKey(keys, 'SHA-256'), san: svid });
    expect(problemOf([leaf], { bundles: onlyBundle(oldRoot) })).toBe('the trust anchor CN=old root has a 1024-bit RSA key (at least 2048 bits are required)');
  });

  it("a trust anchor's own SHA-1 self-signature is not relied on, so it does not matter", async () => {
    const keys = await rsaKeys(2048, 'SHA-1');
    const legacyRoot = await rawCert({ subject: 'CN=legacy root', issuer: 'CN=legacy root', keys, ca: true });
    expect(parseCertificate(legacyRoot).weakSignature).toBe(`is signed with an algorithm that is not accepted (${RSA_SHA1})`);
    const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=legacy root', keys: await generateKeys(), signingKey: await rsaSigningKey(keys, 'SHA-256'), san: svid });
    expectValid([leaf], 'example.org', { bundles: onlyBundle(legacyRoot) });
    // Cross-certified by a modern root (SHA-256), the same key is an ordinary intermediate.
    const cross = await rawCert({ subject: 'CN=legacy root', issuer: root.cert.subject, keys, signingKey: root.keys.privateKey, ca: true });
    expect(expectValid([leaf, cross]).path.map((c) => c.subject)).toEqual(['CN=api', 'CN=legacy root', root.cert.subject]);
  });

  it('keys on other EC curves, and DSA keys, are refused (P-256, P-384, P-521, EdDSA and RSA >= 2048 are accepted)', async () => {
    for (const [type, options, why] of [
      ['ec', { namedCurve: 'secp224r1' }, 'has an EC key on a curve that is not accepted (secp224r1; P-256, P-384 or P-521 are)'],
      ['ec', { namedCurve: 'secp256k1' }, 'has an EC key on a curve that is not accepted (secp256k1; P-256, P-384 or P-521 are)'],
      ['dsa', { modulusLength: 2048, divisorLength: 256 }, 'has a dsa key, which is not accepted (RSA, EC or EdDSA keys are)'],
    ] as const) {
      const { publicKey } = generateKeyPairSync(type as 'ec', options as { namedCurve: string });
      const spki = publicKey.export({ type: 'spki', format: 'der' });
      const cert = await X509CertificateGenerator.create(
        {
          serialNumber: '01',
          subject: 'CN=odd key',
          issuer: root.cert.subject,
          notBefore: new Date(NOW - 60_000),
          notAfter: new Date(NOW + DAY),
          publicKey: new Uint8Array(spki),
          signingKey: root.keys.privateKey,
          signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
          extensions: [new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true), new SubjectAlternativeNameExtension([{ type: 'url', value: ID }])],
        },
        webcrypto,
      );
      expect(problemOf([Buffer.from(cert.rawData)])).toBe(`the client certificate ${why}`);
    }
  });

  it('Ed25519, RSA-PSS and ECDSA with SHA-384 are accepted', async () => {
    const algorithms: [webcrypto.AlgorithmIdentifier | webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams, RawOptions['signingAlgorithm']][] = [
      [{ name: 'Ed25519' }, { name: 'Ed25519' }],
      [{ name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' } as webcrypto.RsaHashedKeyGenParams, { name: 'RSA-PSS', saltLength: 32 }],
      [{ name: 'ECDSA', namedCurve: 'P-384' } as webcrypto.EcKeyGenParams, { name: 'ECDSA', hash: 'SHA-384' }],
    ];
    for (const [generate, signingAlgorithm] of algorithms) {
      const keys = (await webcrypto.subtle.generateKey(generate, true, ['sign', 'verify'])) as KeyPair;
      const anchor = await rawCert({ subject: 'CN=modern root', issuer: 'CN=modern root', keys, signingAlgorithm, ca: true });
      const leaf = await rawCert({ subject: 'CN=api', issuer: 'CN=modern root', keys: await generateKeys(), signingKey: keys.privateKey, signingAlgorithm, san: svid });
      expect(parseCertificate(leaf).weakSignature).toBeUndefined();
      expect(parseCertificate(leaf).weakKey).toBeUndefined();
      expectValid([leaf], 'example.org', { bundles: onlyBundle(anchor) });
    }
  });
});

describe('parseCertificate refuses what it cannot read one way only', () => {
  it('bytes after the certificate (they would change the thumbprint, not the certificate)', async () => {
    const leaf = await leafUnder(root);
    for (const extra of [Buffer.from([0]), Buffer.from('junk'), leaf.der]) {
      expect(() => parseCertificate(Buffer.concat([leaf.der, extra]))).toThrow(
        new CertificateParseError('not a valid DER X.509 certificate (bytes follow the certificate)'),
      );
    }
    expect(parseCertificate(leaf.der).der.equals(leaf.der)).toBe(true);
  });

  it('a validity time Node cannot read (month 13, day 32)', async () => {
    const leaf = await leafUnder(root, { notAfter: new Date(Date.UTC(2030, 0, 15)) });
    const at = leaf.der.indexOf('300115000000Z', 0, 'latin1');
    expect(at).toBeGreaterThan(0);
    for (const bad of ['301315000000Z', '300132000000Z']) {
      const der = Buffer.from(leaf.der);
      der.write(bad, at, 'latin1');
      expect(() => parseCertificate(der)).toThrow(new CertificateParseError('not a valid DER X.509 certificate (its validity times are malformed)'));
    }
  });
});

describe('rdnKeys: one name, one key', () => {
  const text = (type: string, value: string) => new AttributeTypeAndValue({ type, value: new AttributeValue({ utf8String: value }) });
  const name = (...rdns: AttributeTypeAndValue[][]) => new AsnName(rdns.map((atvs) => new RelativeDistinguishedName(atvs)));
  const CN = '2.5.4.3';
  const O = '2.5.4.10';

  it('a single value that spells a multi-valued RDN is not that RDN', () => {
    const single = rdnKeys(name([text(O, 'b+2.5.4.3=a')]));
    const multi = rdnKeys(name([text(CN, 'a'), text(O, 'b')]));
    expect(multi).toEqual(['2.5.4.10=b+2.5.4.3=a']);
    expect(single).toEqual(['2.5.4.10=b\\+2.5.4.3\\=a']);
    expect(single).not.toEqual(multi);
  });

  it('a value with a comma or backslash cannot read as two RDNs or another escape', () => {
    expect(rdnKeys(name([text(O, 'a, 2.5.4.3=b')]))).toEqual(['2.5.4.10=a\\, 2.5.4.3\\=b']);
    expect(rdnKeys(name([text(O, 'a\\+x')]))).not.toEqual(rdnKeys(name([text(O, 'a+x')])));
  });

  it('only ASCII letters are case-folded: the Kelvin sign is not a "k"', () => {
    expect('\u212A'.toLowerCase()).toBe('k'); // what Unicode folding would have made of it
    expect(rdnKeys(name([text(CN, '\u212Aelvin')]))).toEqual([`${CN}=\u212Aelvin`]);
    expect(rdnKeys(name([text(CN, 'kelvin')]))).toEqual([`${CN}=kelvin`]);
    expect(rdnKeys(name([text(CN, 'KELVIN')]))).toEqual([`${CN}=kelvin`]);
  });

  it('a value that is not a string is marked, and differs from a string spelling its hex', () => {
    const integer = new AttributeTypeAndValue({ type: CN, value: new AttributeValue({ anyValue: new Uint8Array([0x02, 0x01, 0x05]).buffer }) });
    expect(rdnKeys(name([integer]))).toEqual([`${CN}=#020105`]);
    expect(rdnKeys(name([text(CN, '#020105')]))).toEqual([`${CN}=\\#020105`]);
    expect(rdnKeys(name([text(CN, '020105')]))).toEqual([`${CN}=020105`]);
  });

  it('whitespace is collapsed and ASCII case folded, as before', () => {
    expect(rdnKeys(name([text(O, '  Acme   Corp ')], [text(CN, 'API')]))).toEqual(['2.5.4.10=acme corp', '2.5.4.3=api']);
  });
});

describe('email and common-name constraints', () => {
  const email = (e: string) => new GeneralName({ rfc822Name: e });

  it('an emailAddress in the subject is bound by excluded rfc822 constraints', async () => {
    const ca = await constrainedCa('CN=mail excluded', [], [email('evil.com')]);
    const bad = await craftAt(ca, { subject: 'CN=api, E=bad@evil.com', eku: [ExtendedKeyUsage.clientAuth], san: svid });
    expect(problemOf(presented(bad))).toBe('intermediate CN=mail excluded: email bad@evil.com is excluded by its name constraints');
    const upper = await craftAt(ca, { subject: 'CN=api, E=Bad@EVIL.com', eku: [ExtendedKeyUsage.clientAuth], san: svid });
    expect(problemOf(presented(upper))).toBe('intermediate CN=mail excluded: email Bad@EVIL.com is excluded by its name constraints');
    expectValid(presented(await craftAt(ca, { subject: 'CN=api, E=ops@example.com', eku: [ExtendedKeyUsage.clientAuth], san: svid })));
    // An rfc822Name SAN is bound the same way.
    const san = await craftAt(ca, { subject: 'CN=api', eku: [ExtendedKeyUsage.clientAuth], san: [...svid, { type: 'email', value: 'x@evil.com' }] });
    expect(problemOf(presented(san))).toBe('intermediate CN=mail excluded: email x@evil.com is excluded by its name constraints');
  });

  it('an emailAddress in the subject must fit permitted rfc822 constraints, on intermediates too', async () => {
    const ca = await constrainedCa('CN=mail permitted', [email('example.com')]);
    expectValid(presented(await craftAt(ca, { subject: 'CN=api, E=ops@example.com', eku: [ExtendedKeyUsage.clientAuth], san: svid })));
    expect(problemOf(presented(await craftAt(ca, { subject: 'CN=api, E=ops@example.net', eku: [ExtendedKeyUsage.clientAuth], san: svid })))).toBe(
      'intermediate CN=mail permitted: email ops@example.net is outside its permitted name constraints',
    );
    const inner = await craftAt(ca, { subject: 'CN=inner, E=pki@example.net', ca: true });
    expect(problemOf(presented(await leafUnder(inner)))).toBe('intermediate CN=mail permitted: email pki@example.net is outside its permitted name constraints');
  });

  it('a leaf without DNS SANs whose CN is a host name is bound by DNS constraints (as OpenSSL does)', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=dns example.org', nameConstraints: { permittedDns: ['example.org'] } });
    expect(problemOf(presented(await leafUnder(ca, { subject: 'CN=host.evil.com' })))).toBe(
      'intermediate CN=dns example.org: common name host.evil.com is outside its permitted name constraints',
    );
    for (const cn of ['api.example.org', 'API.Example.ORG', 'example.org']) expectValid(presented(await leafUnder(ca, { subject: `CN=${cn}` })));
    // Not a host name (one label, or characters a host name lacks): not bound.
    for (const cn of ['api', 'payments api', 'host.evil.com.']) expectValid(presented(await leafUnder(ca, { subject: `CN=${cn}` })));
    // With a DNS SAN the SAN is what is bound, not the CN.
    expectValid(presented(await leafUnder(ca, { subject: 'CN=host.evil.com', dns: ['api.example.org'] })));
    // Only the leaf's CN: an intermediate named like a host is not.
    const named = await issueCertificate(ca, { ca: true, subject: 'CN=ca.evil.com' });
    expectValid(presented(await leafUnder(named, { subject: 'CN=api.example.org' })));
  });

  it('an excluded DNS constraint binds such a CN too', async () => {
    const ca = await constrainedCa('CN=dns excludes evil', [], [dnsName('evil.com')]);
    expect(problemOf(presented(await leafUnder(ca, { subject: 'CN=x.evil.com' })))).toBe(
      'intermediate CN=dns excludes evil: common name x.evil.com is excluded by its name constraints',
    );
    expect(problemOf(presented(await leafUnder(ca, { subject: 'CN=api, CN=x.evil.com' })))).toBe(
      'intermediate CN=dns excludes evil: common name x.evil.com is excluded by its name constraints',
    );
    expectValid(presented(await leafUnder(ca, { subject: 'CN=x.example.com' })));
  });
});

describe('subject emailAddress encodings under name constraints', () => {
  /** A leaf `CN=api, emailAddress=<mail>` with the address as UTF8String (OpenSSL reads only IA5String). */
  async function utf8EmailLeaf(issuer: Credential, mail: string): Promise<Buffer> {
    const subject = new Name(
      AsnConvert.serialize(
        new AsnName([
          new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: 'api' }) })]),
          new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '1.2.840.113549.1.9.1', value: new AttributeValue({ utf8String: mail }) })]),
        ]),
      ),
    );
    const keys = await generateKeys();
    const cert = await X509CertificateGenerator.create(
      {
        serialNumber: '7e01',
        subject,
        issuer: issuer.cert.subject,
        notBefore: new Date(NOW - 60_000),
        notAfter: new Date(NOW + DAY),
        publicKey: keys.publicKey,
        signingKey: issuer.keys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [
          new BasicConstraintsExtension(false, undefined, true),
          new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
          new SubjectAlternativeNameExtension([{ type: 'url', value: ID }], false),
        ],
      },
      webcrypto,
    );
    return Buffer.from(cert.rawData);
  }

  it('a UTF8String emailAddress below any name-constrained CA is refused (OpenSSL: unsupported name syntax); without constraints it is fine', async () => {
    const constrained = await issueCertificate(root, { ca: true, subject: 'CN=uri constrained', nameConstraints: { permittedUris: ['example.org'] } });
    const below = await utf8EmailLeaf(constrained, 'ops@example.org');
    expect(parseCertificate(below).oddEmailSyntax).toBe(true);
    expect(problemOf([below, constrained.der])).toBe(
      'intermediate CN=uri constrained: a subject emailAddress is not an IA5String, which name constraints cannot check',
    );
    expectValid([await utf8EmailLeaf(root, 'ops@example.org')]);
  });
});

describe('second review: path search and OpenSSL parity', () => {
  it('many same-named roots in a bundle: key identifiers pick the issuer, no budget is spent on the others', async () => {
    const roots = await Promise.all(Array.from({ length: 24 }, () => createCA({ trustDomain: 'example.org', commonName: 'SPIFFE' })));
    const many = new Map([['example.org', roots.map((r) => parseCertificate(r.der))]]);
    expectValid(presented(await leafUnder(roots[17]!)), 'example.org', { bundles: many });
    // A same-named CA nobody trusts is an unknown CA, not a "convoluted" chain.
    const stranger = await createCA({ trustDomain: 'example.org', commonName: 'SPIFFE' });
    expect(problemOf(presented(await leafUnder(stranger)), { bundles: many })).toMatch(/was not issued by a CA in any trusted bundle/);
  });

  it('nested same-named intermediates under same-named roots (SPIRE upstream style) validate', async () => {
    const roots = await Promise.all(Array.from({ length: 3 }, () => createCA({ trustDomain: 'example.org', commonName: 'SPIFFE' })));
    let issuer = roots[1]!;
    for (let i = 0; i < 7; i++) issuer = await issueCertificate(issuer, { ca: true, subject: roots[1]!.cert.subject });
    const r = expectValid(presented(await leafUnder(issuer)), 'example.org', {
      bundles: new Map([['example.org', roots.map((c) => parseCertificate(c.der))]]),
      maxIntermediates: 7,
    });
    expect(r.path).toHaveLength(9);
  });

  it('a Netscape cert type without SSL client on the leaf, or without SSL CA on an issuer, is refused', async () => {
    const nsType = (bits: number) => new Extension('2.16.840.1.113730.1.1', false, AsnConvert.serialize(new BitString(bits)));
    const base = { eku: [ExtendedKeyUsage.clientAuth], san: [{ type: 'url' as const, value: ID }] };
    expect(problemOf(presented(await craftAt(root, { ...base, subject: 'CN=server only', extensions: [nsType(2)] })))).toBe(
      'the client certificate has a Netscape cert type without SSL client',
    );
    expectValid(presented(await craftAt(root, { ...base, subject: 'CN=client', extensions: [nsType(1)] })));
    const inter = await craftAt(root, { subject: 'CN=ns not ca', ca: true, extensions: [nsType(1)] });
    expect(problemOf(presented(await leafUnder(inter)))).toBe('intermediate CN=ns not ca has a Netscape cert type without SSL CA');
  });

  it('under name constraints: a CN with an inner NUL, an email SAN without "@", a URI without host, min/max distances are refused', async () => {
    const dnsOnly = await craftAt(root, { subject: 'CN=dns constrained', ca: true, extensions: [nameConstraints([dnsName('example.org')])] });
    expect(problemOf(presented(await leafUnder(dnsOnly, { subject: 'CN=a\u0000b.evil.com' })))).toBe(
      'intermediate CN=dns constrained: a common name holds a NUL character, which name constraints cannot check',
    );
    // Trailing NULs are dropped first, as OpenSSL does: the CN is then an ordinary host name.
    expect(problemOf(presented(await leafUnder(dnsOnly, { subject: 'CN=host.evil.com\u0000' })))).toMatch(/common name host\.evil\.com is outside/);

    const mailOnly = await craftAt(root, { subject: 'CN=mail constrained', ca: true, extensions: [nameConstraints([new GeneralName({ rfc822Name: 'example.org' })])] });
    const noAt = await craftAt(mailOnly, { subject: 'CN=api', eku: [ExtendedKeyUsage.clientAuth], san: [{ type: 'url', value: ID }, { type: 'email', value: 'example.org' }] });
    expect(problemOf(presented(noAt))).toBe('intermediate CN=mail constrained: email example.org cannot be checked against its name constraints');

    const uriOnly = await issueCertificate(root, { ca: true, subject: 'CN=uri constrained', nameConstraints: { permittedUris: ['example.org'] } });
    // Userinfo is part of the host as OpenSSL reads it: it cannot smuggle in a permitted host.
    expect(problemOf([(await leafUnder(uriOnly, { uris: ['https://evil.com@example.org/x'] })).der, uriOnly.der])).toBe(
      'intermediate CN=uri constrained: URI https://evil.com@example.org/x is outside its permitted name constraints',
    );
    expect(problemOf([(await leafUnder(uriOnly, { uris: ['urn:example.org:x'] })).der, uriOnly.der])).toBe(
      'intermediate CN=uri constrained: URI urn:example.org:x cannot be checked against its name constraints',
    );

    const withMinimum = new Extension(
      '2.5.29.30',
      true,
      AsnConvert.serialize(new NameConstraints({ permittedSubtrees: new GeneralSubtrees([new GeneralSubtree({ base: new GeneralName({ uniformResourceIdentifier: 'example.org' }), minimum: 1 })]) })),
    );
    const odd = await craftAt(root, { subject: 'CN=odd distances', ca: true, extensions: [withMinimum] });
    expect(problemOf(presented(await leafUnder(odd)))).toBe(
      'intermediate CN=odd distances: it carries a name constraint with a minimum or maximum distance, which is not supported',
    );
  });

  it('subject comparison folds only ASCII whitespace: a no-break space is not a space', () => {
    const keys = (dn: string) => rdnKeys(AsnConvert.parse(new Name(dn).toArrayBuffer(), AsnName));
    expect(keys('O=Acme  Corp')).toEqual(keys('O=Acme Corp'));
    expect(keys('O=Acme\u00a0Corp')).not.toEqual(keys('O=Acme Corp'));
    expect(keys('O=Acme Corp\u2003')).not.toEqual(keys('O=Acme Corp'));
  });
});

describe('validity times', () => {
  /**
   * The DER with its notAfter GeneralizedTime text replaced (lengths of the enclosing validity,
   * tbsCertificate and certificate adjusted; the signature is not re-made: parsing only).
   */
  function withNotAfter(der: Buffer, text: string): Buffer {
    const at = der.indexOf(Buffer.from('20510101000000Z'));
    expect(at).toBeGreaterThan(0);
    const grow = text.length - 15;
    const out = Buffer.concat([der.subarray(0, at - 1), Buffer.from([text.length]), Buffer.from(text, 'latin1'), der.subarray(at + 15)]);
    out[at - 2 - 15 - 1]! += grow; // validity SEQUENCE (short length form)
    out.writeUInt16BE(out.readUInt16BE(6) + grow, 6); // tbsCertificate
    out.writeUInt16BE(out.readUInt16BE(2) + grow, 2); // certificate
    return out;
  }

  it('a fraction of a second or a UTC offset is refused: the ASN.1 decoder and OpenSSL read such times differently', async () => {
    const cert = await issueCertificate(root, { uris: [ID], notAfter: new Date(Date.UTC(2051, 0, 1)) });
    expect(parseCertificate(withNotAfter(cert.der, '20510101000000Z')).notAfter).toBe(Date.UTC(2051, 0, 1));
    for (const odd of ['20510101000000.5Z', '20510101000000+0000']) {
      expect(() => parseCertificate(withNotAfter(cert.der, odd)), odd).toThrow(/validity times are malformed/);
    }
  });
});
