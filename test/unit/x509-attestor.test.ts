/**
 * The x509 attestor above path validation: chains counted and cached without our own trust
 * anchors (a client may send them), a cache key that cannot be forged by
 * moving bytes between certificates, and mapped (non-SPIFFE) subjects held to the URI name
 * constraints of their CAs.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { ExtendedKeyUsage, KeyUsageFlags, X509CertificateGenerator } from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { createX509Attestor, x509ConfigSchema, type X509Evidence } from '../../src/attestation/x509.js';
import { parseCertificate } from '../../src/attestation/x509-chain.js';
import { createCA, generateKeys, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { AttestationFailed } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { TlsMaterial } from '../../src/tls/material.js';
import { craft } from '../helpers/crafted.js';

const ID = 'spiffe://example.org/ns/payments/sa/api';
const BATCH = 'spiffe://example.org/legacy/batch';

let root: Credential;
let tls: { current: TlsMaterial };

beforeAll(async () => {
  root = await createCA({ trustDomain: 'example.org' });
  tls = {
    current: {
      bundles: new Map([['example.org', [parseCertificate(root.der)]]]),
      caPem: [root.certPem],
      anchorDers: [root.der],
      generation: 1,
    },
  };
});

function attestor(subjects: { trust_domain: string; subject: string; workload: string }[] = [], maxIntermediates = 7) {
  return createX509Attestor(x509ConfigSchema.parse({ subjects, max_intermediates: maxIntermediates }), { clock: Date.now, log: silentLogger, tls });
}

const evidence = (chain: Uint8Array[], source: X509Evidence['source'] = 'forwarded'): X509Evidence => ({ kind: 'x509', chain, source });
const presented = (c: Credential): Buffer[] => [c.der, ...c.intermediates.map((i) => i.der)];

/** The AttestationFailed an attestation ends in (fails the test when it succeeds). */
async function refusal(a: ReturnType<typeof attestor>, ev: X509Evidence): Promise<AttestationFailed> {
  try {
    const w = await a.attest(ev);
    throw new Error(`expected a refusal, but ${w.id} was attested`);
  } catch (e) {
    if (!(e instanceof AttestationFailed)) throw e;
    return e;
  }
}

/** A leaf under `depth` intermediates, each issued by the one above. */
async function deepLeaf(depth: number): Promise<Credential> {
  let issuer = root;
  for (let i = 1; i <= depth; i++) issuer = await issueCertificate(issuer, { ca: true, subject: `CN=depth ${i}` });
  return issueCertificate(issuer, { uris: [ID] });
}

describe('chain length counts what the client sent, not our anchors', () => {
  it('max_intermediates: 4 by default, at most 7; the path counts, in whatever order it was sent', async () => {
    expect(x509ConfigSchema.parse({}).max_intermediates).toBe(4);
    expect(x509ConfigSchema.safeParse({ max_intermediates: 8 }).success).toBe(false);
    expect(x509ConfigSchema.safeParse({ max_intermediates: -1 }).success).toBe(false);
    const byDefault = createX509Attestor(x509ConfigSchema.parse({}), { clock: Date.now, log: silentLogger, tls });
    const four = presented(await deepLeaf(4));
    const reversed = [four[0]!, ...four.slice(1).reverse()];
    expect((await byDefault.attest(evidence(reversed))).id).toBe(ID);
    const five = presented(await deepLeaf(5));
    expect((await refusal(byDefault, evidence([five[0]!, ...five.slice(1).reverse()]))).description).toBe(
      'the client certificate chain needs 5 intermediate certificates; at most 4 are accepted (attestation.x509.max_intermediates)',
    );
    expect((await attestor([], 5).attest(evidence(five))).id).toBe(ID);
    expect((await refusal(attestor([], 0), evidence(presented(await deepLeaf(1))))).description).toMatch(/needs 1 intermediate certificates; at most 0/);
  });

  it('leaf + 7 intermediates is accepted (max_intermediates 7), with or without the anchor, and cached once', async () => {
    const a = attestor();
    const leaf = await deepLeaf(7);
    const sent = presented(leaf);
    expect(sent).toHaveLength(8);
    expect((await a.attest(evidence(sent))).id).toBe(ID);
    expect(a.cacheSize()).toBe(1);
    // A client may send our anchor too.
    expect((await a.attest(evidence([...sent, root.der], 'handshake'))).id).toBe(ID);
    expect(a.cacheSize()).toBe(1);
  });

  it('leaf + 8 intermediates is refused, with or without the anchor', async () => {
    const a = attestor();
    const sent = presented(await deepLeaf(8));
    expect(sent).toHaveLength(9);
    for (const chain of [sent, [...sent, root.der]]) {
      expect((await refusal(a, evidence(chain))).description).toBe('the client certificate chain is longer than 8 certificates');
    }
  });

  it('only our own anchors are left out: a stranger CA counts like any intermediate', async () => {
    const a = attestor();
    const stranger = await createCA({ trustDomain: 'example.org', commonName: 'stranger' });
    const sent = presented(await deepLeaf(7));
    expect((await refusal(a, evidence([...sent, stranger.der]))).description).toBe('the client certificate chain is longer than 8 certificates');
  });

  it('a client that sends our anchor itself as its only certificate is not let through by the filtering', async () => {
    const e = await refusal(attestor(), evidence([root.der]));
    expect(e.description).toBe('the client certificate is a CA certificate (basicConstraints cA=true); a client must present a leaf');
  });
});

describe('the validation cache', () => {
  it('is keyed on each certificate, not on the bytes of the chain run together', async () => {
    const a = attestor();
    const inter = await issueCertificate(root, { ca: true, subject: 'CN=cached intermediate' });
    const leaf = await issueCertificate(inter, { uris: [ID] });
    expect((await a.attest(evidence([leaf.der, inter.der]))).id).toBe(ID);
    // The same bytes as one "certificate": not the cached chain, and not a certificate either.
    const joined = await refusal(a, evidence([Buffer.concat([leaf.der, inter.der])]));
    expect(joined.description).toBe('the client certificate is not a valid X.509 certificate');
    expect(joined.detail).toBe('not a valid DER X.509 certificate (bytes follow the certificate)');
    // Split at another boundary: also refused.
    const cut = leaf.der.length - 10;
    const split = await refusal(a, evidence([leaf.der.subarray(0, cut), Buffer.concat([leaf.der.subarray(cut), inter.der])]));
    expect(split.description).toBe('the client certificate is not a valid X.509 certificate');
    expect(a.cacheSize()).toBe(1);
  });
});

describe('mapped (non-SPIFFE) subjects and URI name constraints', () => {
  const mapping = [{ trust_domain: 'example.org', subject: 'CN=legacy-batch, O=Acme', workload: BATCH }];
  const mapped = (issuer: Credential) => issueCertificate(issuer, { subject: 'CN=legacy-batch, O=Acme', dns: ['batch.internal'] });

  it('a CA permitting only another host cannot mint the mapped identity', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=payments only', nameConstraints: { permittedUris: ['payments.example.org'] } });
    const e = await refusal(attestor(mapping), evidence(presented(await mapped(ca))));
    expect(e.description).toBe(
      `the client certificate's mapped identity is not allowed by its CA: CN=payments only: mapped workload id ${BATCH} is outside its permitted name constraints`,
    );
  });

  it('nor one that excludes its host', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=not example.org', nameConstraints: { excludedUris: ['example.org'] } });
    const e = await refusal(attestor(mapping), evidence(presented(await mapped(ca))));
    expect(e.description).toBe(
      `the client certificate's mapped identity is not allowed by its CA: CN=not example.org: mapped workload id ${BATCH} is excluded by its name constraints`,
    );
  });

  it('a constraint higher up the path counts too, including on the trust anchor', async () => {
    const top = await issueCertificate(root, { ca: true, subject: 'CN=top', nameConstraints: { permittedUris: ['payments.example.org'] } });
    const below = await issueCertificate(top, { ca: true, subject: 'CN=below' });
    expect((await refusal(attestor(mapping), evidence(presented(await mapped(below))))).description).toBe(
      `the client certificate's mapped identity is not allowed by its CA: CN=top: mapped workload id ${BATCH} is outside its permitted name constraints`,
    );
    const constrainedRoot = await createCA({ trustDomain: 'example.org', commonName: 'constrained root', nameConstraints: { permittedUris: ['payments.example.org'] } });
    const own = { current: { ...tls.current, bundles: new Map([['example.org', [parseCertificate(constrainedRoot.der)]]]), anchorDers: [constrainedRoot.der] } };
    const a = createX509Attestor(x509ConfigSchema.parse({ subjects: mapping }), { clock: Date.now, log: silentLogger, tls: own });
    expect((await refusal(a, evidence(presented(await mapped(constrainedRoot))))).description).toBe(
      `the client certificate's mapped identity is not allowed by its CA: CN=constrained root, O=jit-broker dev: mapped workload id ${BATCH} is outside its permitted name constraints`,
    );
  });

  it('inside the constraints, or without any, the mapping applies', async () => {
    const ca = await issueCertificate(root, { ca: true, subject: 'CN=td wide', nameConstraints: { permittedUris: ['example.org'] } });
    expect((await attestor(mapping).attest(evidence(presented(await mapped(ca))))).id).toBe(BATCH);
    expect((await attestor(mapping).attest(evidence(presented(await mapped(root))))).id).toBe(BATCH);
    // DNS constraints do not bind the mapped URI (its DNS SAN is what they bind).
    const dnsOnly = await issueCertificate(root, { ca: true, subject: 'CN=dns only', nameConstraints: { permittedDns: ['internal'] } });
    expect((await attestor(mapping).attest(evidence(presented(await mapped(dnsOnly))))).id).toBe(BATCH);
  });

  it('a single attribute value that spells a multi-valued RDN does not match its mapping', async () => {
    const a = attestor([{ trust_domain: 'example.org', subject: 'CN=batch+O=Acme', workload: BATCH }]);
    const keys = await generateKeys();
    const cert = await X509CertificateGenerator.create(
      {
        serialNumber: '0a01',
        subject: [{ O: ['Acme+2.5.4.3=batch'] }],
        issuer: root.cert.subject,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        publicKey: keys.publicKey,
        signingKey: root.keys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      },
      webcrypto,
    );
    const der = Buffer.from(cert.rawData);
    expect((await refusal(a, evidence([der]))).description).toBe(
      `the client certificate has no URI SAN (not an X509-SVID) and its subject "${parseCertificate(der).subject}" is not mapped (attestation.x509.subjects)`,
    );
    // The real multi-valued RDN does.
    expect((await a.attest(evidence([(await issueCertificate(root, { subject: 'O=Acme+CN=batch' })).der]))).id).toBe(BATCH);
  });
});

describe('X509-SVID rules (issue 12): SVIDs only; mapped subjects keep the RFC 5280 rules', () => {
  const mapping = [{ trust_domain: 'example.org', subject: 'CN=legacy-batch, O=Acme', workload: BATCH }];
  const svid = { subject: 'CN=api', eku: [ExtendedKeyUsage.clientAuth], san: [{ type: 'url' as const, value: ID }] };
  const legacy = { subject: 'CN=legacy-batch, O=Acme', eku: [ExtendedKeyUsage.clientAuth], san: [{ type: 'dns' as const, value: 'batch.internal' }] };

  it('an SVID leaf without keyUsage, or with a non-critical one, is refused (X509-SVID §4.3)', async () => {
    expect((await refusal(attestor(), evidence([(await craft(root, { ...svid, keyUsage: null })).der]))).description).toBe(
      'the client certificate has no keyUsage extension; an X509-SVID must have one, critical, with digitalSignature',
    );
    expect((await refusal(attestor(), evidence([(await craft(root, { ...svid, keyUsageCritical: false })).der]))).description).toBe(
      "the client certificate's keyUsage extension is not critical; an X509-SVID must mark it critical",
    );
    expect((await attestor().attest(evidence([(await craft(root, svid)).der]))).id).toBe(ID);
  });

  it('a mapped subject is exempt from them, not from RFC 5280 (keyCertSign on a leaf, empty subject rules)', async () => {
    expect((await attestor(mapping).attest(evidence([(await craft(root, { ...legacy, keyUsage: null })).der]))).id).toBe(BATCH);
    expect((await attestor(mapping).attest(evidence([(await craft(root, { ...legacy, keyUsageCritical: false })).der]))).id).toBe(BATCH);
    expect((await refusal(attestor(mapping), evidence([(await craft(root, { ...legacy, keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign })).der]))).description).toBe(
      'the client certificate has keyCertSign or cRLSign key usage; a leaf must not',
    );
  });

  it('an empty subject needs a critical subjectAltName (RFC 5280 §4.2.1.6)', async () => {
    expect((await refusal(attestor(), evidence([(await craft(root, { ...svid, subject: '' })).der]))).description).toBe(
      'the client certificate has an empty subject and a non-critical subjectAltName (RFC 5280 §4.2.1.6 requires it critical)',
    );
    expect((await attestor().attest(evidence([(await craft(root, { ...svid, subject: '', sanCritical: true })).der]))).id).toBe(ID);
  });

  it("OpenSSL's handshake verdict does not decide: the validator does, as for a forwarded chain", async () => {
    const leaf = await issueCertificate(root, { uris: [ID] });
    const a = attestor();
    expect((await a.attest({ ...evidence([leaf.der], 'handshake'), handshakeError: 'UNABLE_TO_GET_ISSUER_CERT' })).id).toBe(ID);
    const expired = await issueCertificate(root, { uris: [ID], notBefore: new Date(Date.now() - 7_200_000), notAfter: new Date(Date.now() - 3_600_000) });
    const hs = await refusal(a, evidence([expired.der], 'handshake'));
    const fw = await refusal(a, evidence([expired.der], 'forwarded'));
    expect(hs.description).toMatch(/^the client certificate expired at /);
    expect(hs.description).toBe(fw.description);
  });
});
