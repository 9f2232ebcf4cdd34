/**
 * X.509 conformance (issue 12): a table of generated client-certificate chains, each citing the
 * section of RFC 5280, SPIFFE X509-SVID or RFC 8446 it exercises, sent to a REAL broker process
 * (`jit-broker serve`, HTTPS with client CA bundles, forwarded certificates trusted from
 * 127.0.0.1) along two paths:
 *
 * - handshake: a real TLS handshake from 127.0.0.2 (not a trusted proxy), presenting the chain
 *   in the case's own order; cases with SHA-1 or small keys use a client that lowers its own
 *   security level (`DEFAULT@SECLEVEL=0`) so that the broker, not the client, decides;
 * - forwarded: Envoy's x-forwarded-client-cert header (Cert + Chain, the chain in the same order)
 *   on a TLS connection from 127.0.0.1, the trusted proxy.
 *
 * Both paths must give the same HTTP status and the same error code, and the outcome the case
 * expects. For the chain-level cases (signatures, validity, basic constraints, path length, name
 * constraints, EKU, algorithm strength) `openssl verify -x509_strict` is an independent oracle:
 * which cases it judges is fixed in the table (`openssl: true`), and on each of them the broker
 * and openssl must agree. OpenSSL's `verify` applies no security level unless asked, so the
 * oracle runs with `-auth_level 2` (112-bit security: RSA >= 2048, no SHA-1), the broker's floor.
 */
import 'reflect-metadata';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName } from '@peculiar/asn1-x509';
import { Extension, KeyUsageFlags as KU } from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCA, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { freePort } from '../../src/util/net.js';
import { nameConstraints } from '../helpers/crafted.js';
import { captureChildOutput } from '../helpers/log-capture.js';
import { mint, type Minted, type MintOptions } from './x509-pki.js';

const run = promisify(execFile);
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const ID = 'spiffe://example.org/ns/conf/sa/api';
const MAPPED_SUBJECT = 'CN=legacy-batch, O=Acme';
const MAPPED_ID = 'spiffe://example.org/legacy/batch';
const intent = { audience: 'db.conf', actions: ['read'], purpose: 'conformance' };
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

const dir = mkdtempSync(join(tmpdir(), 'jit-x509-conformance-'));
let child: ChildProcess | undefined;
let url: string;
let serverCa: Credential;
/** The configured anchors: example.org's root, and other.org's. */
let root: Minted;
let otherRoot: Minted;
/** Not configured anywhere; and one with the same name as `root` but another key. */
let strangerRoot: Minted;
let impostorRoot: Minted;
let unrelated: Minted;

const write = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

// ---- certificates --------------------------------------------------------------------------

const now = () => Date.now();
const valid = () => ({ notBefore: new Date(now() - HOUR), notAfter: new Date(now() + DAY) });

/** An intermediate CA below `issuer`. */
const ca = (issuer: Minted, subject: string, over: Partial<MintOptions> = {}) => mint({ subject, issuer, ca: true, ...valid(), ...over });
/** A leaf below `issuer`, an X509-SVID for ID unless told otherwise. */
const leaf = (issuer: Minted, over: Partial<MintOptions> = {}) =>
  mint({ subject: 'CN=api, O=conformance', issuer, ca: false, san: [{ type: 'url', value: ID }], ...valid(), ...over });

/** root → i1 → … → iN → leaf; returns [leaf, iN, …, i1] (the usual presentation order). */
async function ladder(n: number, top: Minted = root, leafOver: Partial<MintOptions> = {}): Promise<Minted[]> {
  const cas: Minted[] = [];
  let issuer = top;
  for (let i = 1; i <= n; i++) cas.push((issuer = await ca(issuer, `CN=conformance intermediate ${i} of ${n}, O=conformance`)));
  return [await leaf(issuer, leafOver), ...cas.reverse()];
}

/** The chain presented in the order given by `order` (indexes into [leaf, iN, …, i1]). */
const reorder = (chain: Minted[], order: number[]) => order.map((i) => chain[i]!);

// ---- the table -----------------------------------------------------------------------------

type Outcome = { accept: string } | { refuse: RegExp };

interface Case {
  id: string;
  /** What the case is, in words. */
  name: string;
  /** The spec section the expectation rests on. */
  cite: string;
  /** The chain as the client presents it: leaf first, then the rest in the case's own order. */
  make: () => Promise<Minted[]>;
  expected: Outcome;
  /** openssl verify judges this case (decided here, before anything runs). */
  openssl: boolean;
  /** SHA-1 or a small key: the handshake client lowers its own security level. */
  weak?: boolean;
}

const ACCEPT: Outcome = { accept: ID };
const refuse = (re: RegExp): Outcome => ({ refuse: re });
const UNTRUSTED = /was not issued by a CA in any trusted bundle/;
const TOO_MANY = /needs 5 intermediate certificates; at most 4 are accepted \(attestation\.x509\.max_intermediates\)/;

const cases: Case[] = [
  // -- path building: intermediates in any order (RFC 8446 §4.4.2; RFC 5280 §6.1) --
  { id: 'X01', name: 'leaf issued by the configured root', cite: 'RFC 5280 §6.1; X509-SVID §4', make: () => ladder(0), expected: ACCEPT, openssl: true },
  { id: 'X02', name: 'one intermediate', cite: 'RFC 5280 §6.1', make: () => ladder(1), expected: ACCEPT, openssl: true },
  { id: 'X03', name: 'two intermediates in issuing order', cite: 'RFC 5280 §6.1; RFC 8446 §4.4.2', make: () => ladder(2), expected: ACCEPT, openssl: true },
  { id: 'X04', name: 'two intermediates, reversed', cite: 'RFC 8446 §4.4.2 (unordered certificates)', make: async () => reorder(await ladder(2), [0, 2, 1]), expected: ACCEPT, openssl: true },
  { id: 'X05', name: 'three intermediates in issuing order', cite: 'RFC 5280 §6.1', make: () => ladder(3), expected: ACCEPT, openssl: true },
  { id: 'X06', name: 'three intermediates, reversed', cite: 'RFC 8446 §4.4.2', make: async () => reorder(await ladder(3), [0, 3, 2, 1]), expected: ACCEPT, openssl: true },
  { id: 'X07', name: 'three intermediates, shuffled', cite: 'RFC 8446 §4.4.2', make: async () => reorder(await ladder(3), [0, 2, 3, 1]), expected: ACCEPT, openssl: true },
  { id: 'X08', name: 'two intermediates reversed, the root sent too', cite: 'RFC 8446 §4.4.2 (root may be omitted or sent)', make: async () => [...reorder(await ladder(2), [0, 2, 1]), root], expected: ACCEPT, openssl: true },
  { id: 'X09', name: 'four intermediates (the default maximum), shuffled', cite: 'RFC 8446 §4.4.2; broker limit attestation.x509.max_intermediates', make: async () => reorder(await ladder(4), [0, 3, 1, 4, 2]), expected: ACCEPT, openssl: true },
  { id: 'X10', name: 'five intermediates: one more than the default maximum', cite: 'broker limit attestation.x509.max_intermediates (RFC 5280 §6.1 sets none)', make: () => ladder(5), expected: refuse(TOO_MANY), openssl: false },
  { id: 'X11', name: 'five intermediates, shuffled', cite: 'broker limit attestation.x509.max_intermediates', make: async () => reorder(await ladder(5), [0, 5, 3, 1, 4, 2]), expected: refuse(TOO_MANY), openssl: false },
  { id: 'X12', name: 'an unrelated extra certificate beside the intermediate', cite: 'RFC 8446 §4.4.2 (extra certificates are allowed)', make: async () => [...(await ladder(1)), unrelated], expected: ACCEPT, openssl: true },
  { id: 'X13', name: 'the intermediate sent twice', cite: 'RFC 8446 §4.4.2', make: async () => { const c = await ladder(1); return [...c, c[1]!]; }, expected: ACCEPT, openssl: true },

  // -- trust anchors: only configured roots (RFC 5280 §6.1.1(d); X509-SVID §5.1) --
  { id: 'A01', name: 'leaf under a root nobody configured', cite: 'RFC 5280 §6.1.1(d)', make: () => ladder(1, strangerRoot), expected: refuse(UNTRUSTED), openssl: true },
  { id: 'A02', name: 'leaf under an unconfigured root that the client sends itself', cite: 'RFC 5280 §6.1.1(d) (a presented self-signed certificate is not an anchor)', make: async () => [...(await ladder(1, strangerRoot)), strangerRoot], expected: refuse(UNTRUSTED), openssl: true },
  { id: 'A03', name: 'an impostor root with the configured root\'s name, sent by the client', cite: 'RFC 5280 §6.1.1(d), §6.1.3(a)(1)', make: async () => [...(await ladder(0, impostorRoot)), impostorRoot], expected: refuse(/not issued by a CA in any trusted bundle|does not verify/), openssl: true },
  { id: 'A04', name: 'example.org SPIFFE ID under the other.org anchor', cite: 'X509-SVID §5.1 (the bundle of the ID\'s trust domain)', make: () => ladder(0, otherRoot), expected: refuse(/trust domain example\.org, but the chain was validated by the bundle of other\.org/), openssl: false },

  // -- validity: inclusive bounds, no tolerance (RFC 5280 §4.1.2.5, §6.1.3(a)(2)) --
  { id: 'V01', name: 'leaf expired an hour ago', cite: 'RFC 5280 §4.1.2.5', make: () => ladder(0, root, { notBefore: new Date(now() - DAY), notAfter: new Date(now() - HOUR) }), expected: refuse(/client certificate expired at/), openssl: true },
  { id: 'V02', name: 'leaf not valid for another hour', cite: 'RFC 5280 §4.1.2.5', make: () => ladder(0, root, { notBefore: new Date(now() + HOUR), notAfter: new Date(now() + DAY) }), expected: refuse(/client certificate is not valid until/), openssl: true },
  { id: 'V03', name: 'leaf valid from one second ago (no tolerance needed, none given)', cite: 'RFC 5280 §4.1.2.5', make: () => ladder(0, root, { notBefore: new Date(Math.floor(now() / 1000) * 1000 - 1000), notAfter: new Date(now() + DAY) }), expected: ACCEPT, openssl: true },
  { id: 'V04', name: 'expired intermediate', cite: 'RFC 5280 §6.1.3(a)(2)', make: async () => { const i = await ca(root, 'CN=expired intermediate', { notBefore: new Date(now() - DAY), notAfter: new Date(now() - HOUR) }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=expired intermediate expired at/), openssl: true },
  { id: 'V05', name: 'intermediate not yet valid', cite: 'RFC 5280 §6.1.3(a)(2)', make: async () => { const i = await ca(root, 'CN=future intermediate', { notBefore: new Date(now() + HOUR), notAfter: new Date(now() + DAY) }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=future intermediate is not valid until/), openssl: true },

  // -- algorithm strength --
  { id: 'S01', name: 'leaf signed with ECDSA-SHA1', cite: 'RFC 5280 §4.1.1.2; CA/B BR §7.1.3 (SHA-1 not accepted)', make: () => ladder(0, root, { hash: 'SHA-1' }), expected: refuse(/signed with an algorithm that is not accepted/), openssl: true, weak: true },
  { id: 'S02', name: 'intermediate signed with ECDSA-SHA1', cite: 'RFC 5280 §4.1.1.2', make: async () => { const i = await ca(root, 'CN=sha1 intermediate', { hash: 'SHA-1' }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=sha1 intermediate is signed with an algorithm that is not accepted/), openssl: true, weak: true },
  { id: 'S03', name: 'leaf with a 1024-bit RSA key', cite: 'NIST SP 800-131A (RSA < 2048 disallowed)', make: () => ladder(0, root, { key: 'rsa-1024' }), expected: refuse(/has a 1024-bit RSA key/), openssl: true, weak: true },
  { id: 'S04', name: 'leaf with a 2048-bit RSA key', cite: 'NIST SP 800-131A', make: () => ladder(0, root, { key: 'rsa-2048' }), expected: ACCEPT, openssl: true },
  { id: 'S05', name: 'RSA-1024 intermediate', cite: 'NIST SP 800-131A', make: async () => { const i = await ca(root, 'CN=rsa1024 intermediate', { key: 'rsa-1024' }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=rsa1024 intermediate has a 1024-bit RSA key/), openssl: true, weak: true },
  { id: 'S06', name: 'P-384 leaf under an RSA-2048 intermediate (SHA-384)', cite: 'RFC 5280 §4.1.1.2', make: async () => { const i = await ca(root, 'CN=rsa intermediate', { key: 'rsa-2048' }); return [await leaf(i, { key: 'ec-p384', hash: 'SHA-384' }), i]; }, expected: ACCEPT, openssl: true },
  { id: 'S07', name: 'leaf signed with SHA-1 by an RSA intermediate', cite: 'RFC 5280 §4.1.1.2', make: async () => { const i = await ca(root, 'CN=rsa intermediate sha1', { key: 'rsa-2048' }); return [await leaf(i, { hash: 'SHA-1' }), i]; }, expected: refuse(/signed with an algorithm that is not accepted/), openssl: true, weak: true },

  // -- basic constraints and path length (RFC 5280 §4.2.1.9, §6.1.4(k)-(m)) --
  { id: 'B01', name: 'intermediate without basicConstraints', cite: 'RFC 5280 §6.1.4(k)', make: async () => { const i = await ca(root, 'CN=no basic constraints', { ca: undefined, keyUsage: KU.keyCertSign }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=no basic constraints is not a CA|not issued by a CA/), openssl: true },
  { id: 'B02', name: 'intermediate with cA=false', cite: 'RFC 5280 §6.1.4(k)', make: async () => { const i = await ca(root, 'CN=ca false', { ca: false, keyUsage: KU.keyCertSign, eku: null }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=ca false is not a CA|not issued by a CA/), openssl: true },
  // Listed as judged at first; openssl verify -purpose sslclient accepts a CA certificate as the
  // end entity (RFC 5280 does not forbid it), so the rule is X509-SVID §4.1's alone: not judged.
  { id: 'B03', name: 'leaf with cA=true', cite: 'X509-SVID §4.1 (leaf cA MUST be false)', make: () => ladder(0, root, { ca: true, keyUsage: KU.digitalSignature }), expected: refuse(/is a CA certificate/), openssl: false },
  { id: 'B04', name: 'pathLenConstraint 0 with an intermediate below', cite: 'RFC 5280 §4.2.1.9, §6.1.4(m)', make: async () => { const i1 = await ca(root, 'CN=pathlen zero', { pathLength: 0 }); const i2 = await ca(i1, 'CN=below pathlen zero'); return [await leaf(i2), i2, i1]; }, expected: refuse(/CN=pathlen zero allows 0 intermediate\(s\) below it/), openssl: true },
  { id: 'B05', name: 'pathLenConstraint 1 with one intermediate below, reversed', cite: 'RFC 5280 §4.2.1.9', make: async () => { const i1 = await ca(root, 'CN=pathlen one', { pathLength: 1 }); const i2 = await ca(i1, 'CN=below pathlen one'); return [await leaf(i2), i1, i2]; }, expected: ACCEPT, openssl: true },

  // -- key usage (X509-SVID §4.3; RFC 5280 §4.2.1.3) --
  { id: 'K01', name: 'leaf without keyUsage', cite: 'X509-SVID §4.3 (leaf keyUsage MUST be set)', make: () => ladder(0, root, { keyUsage: null }), expected: refuse(/has no keyUsage extension; an X509-SVID must have one/), openssl: false },
  { id: 'K02', name: 'leaf keyUsage digitalSignature, not critical', cite: 'X509-SVID §4.3 (keyUsage MUST be critical)', make: () => ladder(0, root, { keyUsageCritical: false }), expected: refuse(/keyUsage extension is not critical; an X509-SVID must mark it critical/), openssl: false },
  { id: 'K03', name: 'leaf keyUsage keyEncipherment only (no digitalSignature)', cite: 'X509-SVID §4.3; RFC 5280 §4.2.1.3', make: () => ladder(0, root, { keyUsage: KU.keyEncipherment }), expected: refuse(/key usage lacks digitalSignature/), openssl: true },
  { id: 'K04', name: 'leaf keyUsage digitalSignature + keyCertSign', cite: 'X509-SVID §4.3; RFC 5280 §4.2.1.3', make: () => ladder(0, root, { keyUsage: KU.digitalSignature | KU.keyCertSign }), expected: refuse(/keyCertSign or cRLSign/), openssl: true },
  { id: 'K05', name: 'leaf keyUsage digitalSignature + cRLSign', cite: 'X509-SVID §4.3', make: () => ladder(0, root, { keyUsage: KU.digitalSignature | KU.cRLSign }), expected: refuse(/keyCertSign or cRLSign/), openssl: false },
  { id: 'K06', name: 'leaf keyUsage digitalSignature + keyEncipherment + keyAgreement', cite: 'X509-SVID §4.3 (other bits allowed)', make: () => ladder(0, root, { keyUsage: KU.digitalSignature | KU.keyEncipherment | KU.keyAgreement }), expected: ACCEPT, openssl: true },
  { id: 'K07', name: 'intermediate keyUsage without keyCertSign', cite: 'RFC 5280 §6.1.4(n); X509-SVID §4.3 (signing certificates)', make: async () => { const i = await ca(root, 'CN=no keyCertSign', { keyUsage: KU.digitalSignature | KU.cRLSign }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=no keyCertSign lacks keyCertSign key usage|not issued by a CA/), openssl: true },

  // -- subject-mapped certificates: RFC 5280 rules, not the SVID-only ones --
  { id: 'M01', name: 'mapped subject, no URI SAN, no keyUsage', cite: 'README (subject mappings are exempt from X509-SVID §4.3 presence)', make: () => ladder(0, root, { subject: MAPPED_SUBJECT, san: [{ type: 'dns', value: 'batch.internal' }], keyUsage: null }), expected: { accept: MAPPED_ID }, openssl: true },
  { id: 'M02', name: 'mapped subject, non-critical keyUsage', cite: 'README (exempt from X509-SVID §4.3 criticality)', make: () => ladder(0, root, { subject: MAPPED_SUBJECT, san: [], keyUsageCritical: false }), expected: { accept: MAPPED_ID }, openssl: true },
  { id: 'M03', name: 'mapped subject with keyCertSign on a non-CA', cite: 'RFC 5280 §4.2.1.3 (keyCertSign only with cA)', make: () => ladder(0, root, { subject: MAPPED_SUBJECT, san: [], keyUsage: KU.digitalSignature | KU.keyCertSign }), expected: refuse(/keyCertSign or cRLSign/), openssl: true },
  { id: 'M04', name: 'mapped subject, expired', cite: 'RFC 5280 §4.1.2.5', make: () => ladder(0, root, { subject: MAPPED_SUBJECT, san: [], notBefore: new Date(now() - DAY), notAfter: new Date(now() - HOUR) }), expected: refuse(/client certificate expired at/), openssl: true },
  { id: 'M05', name: 'mapped subject under an intermediate, serverAuth-only EKU', cite: 'RFC 5280 §4.2.1.12', make: async () => { const c = await ladder(1, root, { subject: MAPPED_SUBJECT, san: [], eku: [SERVER_AUTH] }); return c; }, expected: refuse(/extendedKeyUsage without clientAuth/), openssl: true },

  // -- subject alternative names (X509-SVID §2, §5.2; RFC 5280 §4.2.1.6) --
  { id: 'N01', name: 'no URI SAN and an unmapped subject', cite: 'X509-SVID §2 (exactly one URI SAN)', make: () => ladder(0, root, { san: [{ type: 'dns', value: 'api.internal' }] }), expected: refuse(/has no URI SAN \(not an X509-SVID\)/), openssl: false },
  { id: 'N02', name: 'two URI SANs', cite: 'X509-SVID §2', make: () => ladder(0, root, { san: [{ type: 'url', value: ID }, { type: 'url', value: 'spiffe://example.org/ns/conf/sa/other' }] }), expected: refuse(/has 2 URI SANs; an X509-SVID has exactly one/), openssl: false },
  { id: 'N03', name: 'one URI SAN beside a DNS SAN', cite: 'X509-SVID §2 (other SAN types allowed)', make: () => ladder(0, root, { san: [{ type: 'dns', value: 'api.example.org' }, { type: 'url', value: ID }] }), expected: ACCEPT, openssl: true },
  { id: 'N04', name: 'empty subject, critical SAN', cite: 'RFC 5280 §4.2.1.6; X509-SVID §2', make: () => ladder(0, root, { subject: '', sanCritical: true }), expected: ACCEPT, openssl: true },
  { id: 'N05', name: 'empty subject, non-critical SAN', cite: 'RFC 5280 §4.2.1.6 (SAN MUST be critical when the subject is empty)', make: () => ladder(0, root, { subject: '', sanCritical: false }), expected: refuse(/has an empty subject and a non-critical subjectAltName/), openssl: true },
  { id: 'N06', name: 'subject present, critical SAN', cite: 'RFC 5280 §4.2.1.6 (SHOULD NOT, allowed)', make: () => ladder(0, root, { sanCritical: true }), expected: ACCEPT, openssl: true },
  { id: 'N07', name: 'empty subject, non-critical SAN, under a reversed pair of intermediates', cite: 'RFC 5280 §4.2.1.6; RFC 8446 §4.4.2', make: async () => reorder(await ladder(2, root, { subject: '' }), [0, 2, 1]), expected: refuse(/has an empty subject and a non-critical subjectAltName/), openssl: true },

  // -- extended key usage (RFC 5280 §4.2.1.12; X509-SVID §4.4) --
  { id: 'E01', name: 'leaf EKU serverAuth only', cite: 'RFC 5280 §4.2.1.12', make: () => ladder(0, root, { eku: [SERVER_AUTH] }), expected: refuse(/client certificate has an extendedKeyUsage without clientAuth/), openssl: true },
  { id: 'E02', name: 'leaf without EKU', cite: 'RFC 5280 §4.2.1.12 (absent: any use)', make: () => ladder(0, root, { eku: null }), expected: ACCEPT, openssl: true },
  { id: 'E03', name: 'leaf EKU serverAuth + clientAuth', cite: 'X509-SVID §4.4', make: () => ladder(0, root, { eku: [SERVER_AUTH, CLIENT_AUTH] }), expected: ACCEPT, openssl: true },
  { id: 'E04', name: 'intermediate EKU serverAuth only', cite: 'RFC 5280 §4.2.1.12 (as OpenSSL applies it to CAs)', make: async () => { const i = await ca(root, 'CN=server-only intermediate', { eku: [SERVER_AUTH] }); return [await leaf(i), i]; }, expected: refuse(/intermediate CN=server-only intermediate has an extendedKeyUsage without clientAuth|not issued by a CA/), openssl: true },

  // -- name constraints (RFC 5280 §4.2.1.10, §6.1.3(b)-(c)) --
  { id: 'C01', name: 'URI inside the permitted subtree', cite: 'RFC 5280 §4.2.1.10', make: async () => { const i = await ca(root, 'CN=permits example.org', { extensions: [nameConstraints([new GeneralName({ uniformResourceIdentifier: 'example.org' })])] }); return [await leaf(i), i]; }, expected: ACCEPT, openssl: true },
  { id: 'C02', name: 'URI outside the permitted subtree', cite: 'RFC 5280 §4.2.1.10', make: async () => { const i = await ca(root, 'CN=permits payments only', { extensions: [nameConstraints([new GeneralName({ uniformResourceIdentifier: 'payments.example.org' })])] }); return [await leaf(i), i]; }, expected: refuse(/is outside its permitted name constraints/), openssl: true },
  { id: 'C03', name: 'URI in an excluded subtree', cite: 'RFC 5280 §4.2.1.10', make: async () => { const i = await ca(root, 'CN=excludes example.org', { extensions: [nameConstraints([], [new GeneralName({ uniformResourceIdentifier: 'example.org' })])] }); return [await leaf(i), i]; }, expected: refuse(/is excluded by its name constraints/), openssl: true },
  { id: 'C04', name: 'constraint two levels up, chain reversed', cite: 'RFC 5280 §6.1.3(b)', make: async () => { const i1 = await ca(root, 'CN=permits payments only', { extensions: [nameConstraints([new GeneralName({ uniformResourceIdentifier: 'payments.example.org' })])] }); const i2 = await ca(i1, 'CN=below the constraint'); return [await leaf(i2), i1, i2]; }, expected: refuse(/is outside its permitted name constraints/), openssl: true },

  // -- signatures and critical extensions (RFC 5280 §6.1.3(a)(1), §4.2) --
  { id: 'G01', name: 'leaf signature does not verify', cite: 'RFC 5280 §6.1.3(a)(1)', make: async () => { const [l] = await ladder(0); return [tampered(l!)]; }, expected: refuse(/does not verify with its issuer's key/), openssl: true },
  { id: 'G02', name: 'leaf with an unknown critical extension', cite: 'RFC 5280 §4.2', make: () => ladder(0, root, { extensions: [new Extension('1.3.6.1.4.1.55555.1', true, AsnConvert.serialize(new GeneralName({ dNSName: 'x' })))] }), expected: refuse(/unsupported critical extension/), openssl: true },
];

/** The leaf with one bit of its signature flipped (still parses; its key is unchanged). */
function tampered(m: Minted): Minted {
  const der = Buffer.from(m.der);
  der[der.length - 8]! ^= 0x01;
  const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;
  return { ...m, der, pem };
}

// ---- transport -----------------------------------------------------------------------------

interface Answer {
  status: number;
  json: Record<string, unknown>;
}

function request(opts: { path: string; method?: string; body?: unknown; chain?: Minted[]; weak?: boolean; localAddress?: string; headers?: Record<string, string> }): Promise<Answer> {
  const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const leafKey = opts.chain?.[0]?.keyPem;
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${url}${opts.path}`,
      {
        method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
        ca: serverCa.certPem,
        servername: 'localhost',
        agent: false,
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        ...(opts.chain ? { cert: opts.chain.map((c) => c.pem).join(''), key: leafKey } : {}),
        // SHA-1 and small keys: the client lowers its own floor so the broker is the one deciding.
        ...(opts.weak ? { ciphers: 'DEFAULT@SECLEVEL=0' } : {}),
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers },
        timeout: 15_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: Record<string, unknown>;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** A real handshake from 127.0.0.2 (not a trusted proxy), presenting the chain in the case's order. */
const viaHandshake = (chain: Minted[], weak = false) => request({ path: '/v1/tasks', body: { intent }, chain, weak, localAddress: '127.0.0.2' });

/** The trusted proxy (127.0.0.1) forwarding the same chain, in the same order, as Envoy's XFCC. */
const viaForwarded = (chain: Minted[]) => {
  const cert = encodeURIComponent(chain[0]!.pem);
  const all = encodeURIComponent(chain.map((c) => c.pem).join(''));
  const hash = createHash('sha256').update(chain[0]!.der).digest('hex');
  return request({ path: '/v1/tasks', body: { intent }, localAddress: '127.0.0.1', headers: { 'x-forwarded-client-cert': `Hash=${hash};Cert="${cert}";Chain="${all}"` } });
};

/** openssl verify's verdict at `at` (seconds), the configured bundles as CAfile, the rest of the chain as untrusted. */
async function opensslVerify(chain: Minted[], at: number, n: number): Promise<{ ok: boolean; output: string }> {
  const leafFile = write(`case-${n}-leaf.pem`, chain[0]!.pem);
  const rest = chain.slice(1);
  const args = ['verify', '-x509_strict', '-auth_level', '2', '-purpose', 'sslclient', '-attime', String(at), '-CAfile', write('bundles.pem', root.pem + otherRoot.pem)];
  if (rest.length) args.push('-untrusted', write(`case-${n}-untrusted.pem`, rest.map((c) => c.pem).join('')));
  args.push(leafFile);
  try {
    const r = await run('openssl', args, { timeout: 20_000 });
    return { ok: true, output: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, output: `${err.stdout ?? ''}${err.stderr ?? err.message}` };
  }
}

// ---- the broker process ---------------------------------------------------------------------

beforeAll(async () => {
  const year = () => ({ notBefore: new Date(now() - DAY), notAfter: new Date(now() + 365 * DAY) });
  const rootExt = (td: string) => ({ ca: true, san: [{ type: 'url' as const, value: `spiffe://${td}` }], ...year() });
  root = await mint({ subject: 'CN=conformance root, O=example.org', ...rootExt('example.org') });
  otherRoot = await mint({ subject: 'CN=conformance root, O=other.org', ...rootExt('other.org') });
  strangerRoot = await mint({ subject: 'CN=stranger root, O=example.org', ...rootExt('example.org') });
  impostorRoot = await mint({ subject: 'CN=conformance root, O=example.org', ...rootExt('example.org') });
  unrelated = await ca(strangerRoot, 'CN=unrelated intermediate');
  serverCa = await createCA({ trustDomain: 'server.test', commonName: 'conformance server CA' });
  const server = await issueCertificate(serverCa, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });

  const port = await freePort();
  url = `https://127.0.0.1:${port}`;
  const config = {
    issuer: url,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'memory' },
    tls: {
      cert: write('server.pem', server.chainPem),
      key: write('server-key.pem', server.keyPem),
      client_ca_bundles: { 'example.org': write('example.org.pem', root.pem), 'other.org': write('other.org.pem', otherRoot.pem) },
    },
    attestation: {
      x509: {
        subjects: [{ trust_domain: 'example.org', subject: MAPPED_SUBJECT, workload: MAPPED_ID }],
        forwarded: { trusted_proxies: ['127.0.0.1/32'] },
      },
    },
    http: { trusted_proxies: ['127.0.0.1/32'] },
    // Every case fails from the same two addresses: the per-address failure limit must not answer first.
    limits: { failed_attestations: { rate: 1_000_000, per: '1s', burst: 1_000_000 } },
    policies: [
      { name: 'conformance', workloads: ['spiffe://example.org/ns/conf/sa/*', 'spiffe://other.org/ns/conf/sa/*', MAPPED_ID], audiences: ['db.conf'], actions: ['read'] },
    ],
  };
  const path = write('broker.yaml', stringify(config));
  child = spawn(process.execPath, [...CLI, 'serve', '--config', path], { env: { ...process.env, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  captureChildOutput(child, 'x509-conformance-serve');
  let logs = '';
  child.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  for (;;) {
    const up = await request({ path: '/healthz' }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (up) break;
    if (child.exitCode !== null) throw new Error(`broker did not start:\n${logs}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);

afterAll(async () => {
  if (child?.pid && child.exitCode === null) {
    const exited = new Promise((resolve) => child!.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

// ---- the runs ------------------------------------------------------------------------------

describe('the table', () => {
  it('has at least 40 cases, each with a spec citation and a unique id', () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    expect(new Set(cases.map((c) => c.id)).size).toBe(cases.length);
    for (const c of cases) expect(c.cite, c.id).toMatch(/RFC \d+|X509-SVID|NIST|CA\/B|README|broker limit/);
  });
});

describe.each(cases.map((c, n) => [`${c.id} ${c.name} (${c.cite})`, c, n] as const))('%s', (_title, c, n) => {
  it('same status and error code through the handshake and the forwarded header, as expected; openssl agrees where it judges', async () => {
    const chain = await c.make();
    const at = Math.floor(Date.now() / 1000);
    const hs = await viaHandshake(chain, c.weak);
    const fw = await viaForwarded(chain);
    const summary = (a: Answer) => ({ status: a.status, error: a.json.error, error_description: a.json.error_description, workload: a.json.workload });
    // One decision whichever way the certificate arrives.
    expect(summary(hs), `handshake: ${String(hs.json.error_description)}\nforwarded: ${String(fw.json.error_description)}`).toEqual(summary(fw));
    if ('accept' in c.expected) {
      expect({ status: hs.status, workload: hs.json.workload }, String(hs.json.error_description)).toEqual({ status: 201, workload: c.expected.accept });
    } else {
      expect({ status: hs.status, error: hs.json.error }).toEqual({ status: 401, error: 'invalid_client' });
      expect(hs.json.error_description).toMatch(c.expected.refuse);
      expect(fw.json.error_description).toMatch(c.expected.refuse);
    }
    if (c.openssl) {
      const verdict = await opensslVerify(chain, at, n);
      expect(verdict.ok, `openssl verify: ${verdict.output}`).toBe(hs.status === 201);
    }
  });
});
