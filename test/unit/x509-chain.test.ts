/**
 * RFC 5280 path validation cases the end-to-end mTLS matrix does not reach. Certificates come from
 * the dev CA, or, for extensions it cannot write (excluded DNS and directoryName subtrees, unknown
 * critical extensions, anyExtendedKeyUsage), from @peculiar/x509's generator right here.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, Name as AsnName, NameConstraints, id_ce_nameConstraints } from '@peculiar/asn1-x509';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectAlternativeNameExtension,
  X509CertificateGenerator,
  type JsonGeneralName,
} from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { CertificateParseError, parseCertificate, validateChain, type ChainResult, type ParsedCertificate } from '../../src/attestation/x509-chain.js';
import { createCA, generateKeys, issueCertificate, type Credential, type IssueOptions } from '../../src/dev/dev-ca.js';

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

function validate(chain: Buffer[], opts: { bundles?: Map<string, ParsedCertificate[]>; now?: number; preferred?: string } = {}): ChainResult<string> {
  return validateChain(chain.map(parseCertificate), opts.bundles ?? bundles, opts.now ?? Date.now(), opts.preferred);
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

interface Crafted {
  subject: string;
  ca?: boolean;
  keyUsage?: number;
  /** OIDs; undefined leaves the extension out. */
  eku?: string[];
  san?: JsonGeneralName[];
  extensions?: Extension[];
}

/** A certificate signed by `issuer` with exactly the extensions asked for, usable as an issuer itself. */
async function craft(issuer: Credential, opts: Crafted): Promise<Credential> {
  const keys = await generateKeys();
  const ca = opts.ca ?? false;
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: '01' + webcrypto.getRandomValues(new Uint8Array(8)).reduce((s, b) => s + b.toString(16).padStart(2, '0'), ''),
      subject: opts.subject,
      issuer: issuer.cert.subject,
      notBefore: new Date(NOW - 60_000),
      notAfter: new Date(NOW + DAY),
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new BasicConstraintsExtension(ca, undefined, true),
        new KeyUsagesExtension(opts.keyUsage ?? (ca ? KeyUsageFlags.keyCertSign : KeyUsageFlags.digitalSignature), true),
        await AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey, false, webcrypto),
        ...(opts.eku ? [new ExtendedKeyUsageExtension(opts.eku, false)] : []),
        ...(opts.san?.length ? [new SubjectAlternativeNameExtension(opts.san, false)] : []),
        ...(opts.extensions ?? []),
      ],
    },
    webcrypto,
  );
  const chainAbove = issuer.intermediates.length || issuer.cert.subject !== issuer.cert.issuer ? [issuer, ...issuer.intermediates] : [];
  return { cert, der: Buffer.from(cert.rawData), keys, intermediates: chainAbove, certPem: cert.toString('pem'), chainPem: '', keyPem: '' };
}

const dnsName = (d: string) => new GeneralName({ dNSName: d });
const dirName = (dn: string) => new GeneralName({ directoryName: AsnConvert.parse(new Name(dn).toArrayBuffer(), AsnName) });

function nameConstraints(permitted: GeneralName[], excluded: GeneralName[] = []): Extension {
  const subtrees = (names: GeneralName[]) => (names.length ? new GeneralSubtrees(names.map((base) => new GeneralSubtree({ base }))) : undefined);
  const p = subtrees(permitted);
  const x = subtrees(excluded);
  const value = new NameConstraints({ ...(p ? { permittedSubtrees: p } : {}), ...(x ? { excludedSubtrees: x } : {}) });
  return new Extension(id_ce_nameConstraints, true, AsnConvert.serialize(value));
}

const constrainedCa = (subject: string, permitted: GeneralName[], excluded: GeneralName[] = []) =>
  craft(root, { subject, ca: true, extensions: [nameConstraints(permitted, excluded)] });

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
    expect(problemOf(presented(await craft(root, { ...base, extensions: [unknown(true)] })))).toBe(
      `the client certificate carries an unsupported critical extension (${UNKNOWN_OID})`,
    );
    expectValid(presented(await craft(root, { ...base, extensions: [unknown(false)] })));
  });

  it('a certificate that carries an extension twice is not parsed at all (which copy would count?)', async () => {
    const twice = await craft(root, {
      subject: 'CN=twice',
      eku: [ExtendedKeyUsage.clientAuth],
      san: [{ type: 'url', value: ID }],
      extensions: [new SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://example.org/ns/other/sa/admin' }], false)],
    });
    expect(() => parseCertificate(twice.der)).toThrow(CertificateParseError);
    expect(() => parseCertificate(twice.der)).toThrow(/extension 2\.5\.29\.17 appears twice/);
  });

  it('an unknown critical extension on an intermediate is refused', async () => {
    const inter = await craft(root, { subject: 'CN=odd intermediate', ca: true, extensions: [unknown(true)] });
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

  it('anyExtendedKeyUsage is enough on an intermediate, but a leaf needs clientAuth itself', async () => {
    const anyInter = await craft(root, { subject: 'CN=any eku', ca: true, eku: [ANY_EKU] });
    expectValid(presented(await leafUnder(anyInter)));
    const serverInter = await craft(root, { subject: 'CN=server eku', ca: true, eku: [ExtendedKeyUsage.serverAuth] });
    expect(problemOf(presented(await leafUnder(serverInter)))).toBe('intermediate CN=server eku has an extendedKeyUsage without clientAuth');
    const anyLeaf = await craft(root, { subject: 'CN=any leaf', eku: [ANY_EKU], san: [{ type: 'url', value: ID }] });
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
