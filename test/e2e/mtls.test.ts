/**
 * X.509-SVID attestation end to end: every certificate in the matrix is made at test time (by
 * the dev CA, or by @peculiar/x509's generator for what the dev CA cannot write) and presented
 * twice — in a real TLS handshake to an HTTPS broker, and as Envoy's x-forwarded-client-cert
 * header from a trusted proxy address to a plain-HTTP broker — and both paths must reach the same
 * decision. For chain rules OpenSSL enforces too, OpenSSL's own verdict must agree as well.
 */
import 'reflect-metadata';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { AsnConvert, BitString } from '@peculiar/asn1-schema';
import { GeneralName, Name as AsnName } from '@peculiar/asn1-x509';
import {
  ExtendedKeyUsage,
  Extension,
  Name,
  type JsonGeneralName,
} from '@peculiar/x509';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { derToPem, createCA, issueCertificate, tamperSignature, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, xfcc, type TestPki } from '../helpers/pki.js';
import { craft, nameConstraints } from '../helpers/crafted.js';

const ID = 'spiffe://example.org/ns/payments/sa/api';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'reconcile' };
const DAY = 86_400_000;

let issuer: OidcIssuer;
let pki: TestPki;
let files: ReturnType<typeof scratchDir>;
let tlsBroker: BrokerRuntime;
let proxyBroker: BrokerRuntime;
/** A second example.org anchor that allows no intermediate below it (pathLenConstraint 0). */
let pathlenRoot: Credential;

const policies: ConfigInput['policies'] = [
  {
    name: 'payments-svid',
    workloads: ['spiffe://example.org/ns/payments/sa/*', 'spiffe://other.org/ns/payments/sa/*'],
    audiences: ['db.payments'],
    actions: ['read', 'write'],
    resources: ['db://payments/**'],
    require_binding: true,
  },
  {
    name: 'legacy-batch',
    workloads: ['spiffe://example.org/legacy/batch'],
    audiences: ['db.payments'],
    actions: ['read'],
    resources: ['db://payments/**'],
  },
  {
    name: 'payments-k8s',
    workloads: ['k8s://test/ns/payments/sa/*'],
    audiences: ['db.payments'],
    actions: ['read'],
    resources: ['db://payments/**'],
  },
];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  pathlenRoot = await createCA({ trustDomain: 'example.org', commonName: 'pathlen 0 root', pathLength: 0 });
  files = scratchDir();
  const bundles = {
    'example.org': files.write('example.org.pem', pki.example.certPem + pathlenRoot.certPem),
    'other.org': files.write('other.org.pem', pki.other.certPem),
  };
  const x509 = { subjects: [{ trust_domain: 'example.org', subject: 'CN=legacy-batch, O=Acme', workload: 'spiffe://example.org/legacy/batch' }] };
  const oidc: NonNullable<ConfigInput['attestation']>['oidc'] = {
    issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }],
  };
  tlsBroker = await startTestBroker(issuer, {
    tls: { cert: files.write('server.pem', pki.server.chainPem), key: files.write('server-key.pem', pki.server.keyPem), client_ca_bundles: bundles },
    attestation: { oidc, x509 },
    policies,
  });
  proxyBroker = await startTestBroker(issuer, {
    tls: { client_ca_bundles: bundles },
    attestation: { oidc, x509: { ...x509, forwarded: { trusted_proxies: ['127.0.0.1/32', '::1'] } } },
    policies,
  });
}, 30_000);

afterAll(async () => {
  await tlsBroker?.close();
  await proxyBroker?.close();
  await issuer?.close();
  files?.cleanup();
});

interface Presented {
  /** PEM chain the client presents (leaf first). */
  chainPem: string;
  keyPem: string;
  leafDer: Buffer;
}

const present = (c: Credential): Presented => ({ chainPem: c.chainPem, keyPem: c.keyPem, leafDer: c.der });

async function viaHandshake(p: Presented, body: unknown = { intent }) {
  return httpsJson(`${tlsBroker.url}/v1/tasks`, { ca: pki.example.certPem, cert: p.chainPem, key: p.keyPem, body });
}

async function viaProxy(p: Presented, body: unknown = { intent }) {
  const leafPem = p.chainPem.slice(0, p.chainPem.indexOf('-----END CERTIFICATE-----') + 25) + '\n';
  return postJson(`${proxyBroker.url}/v1/tasks`, body, { 'x-forwarded-client-cert': xfcc({ certPem: leafPem, chainPem: p.chainPem }) });
}

/** Both paths, asserting they agree on status, error code and description. */
async function bothPaths(p: Presented, body?: unknown) {
  const a = await viaHandshake(p, body);
  const b = await viaProxy(p, body);
  expect({ status: b.status, error: b.json.error, error_description: b.json.error_description }).toEqual({
    status: a.status,
    error: a.json.error,
    error_description: a.json.error_description,
  });
  return a;
}

const leaf = (over: Parameters<typeof issueCertificate>[1] = {}, from?: Credential) =>
  issueCertificate(from ?? pki.example, { uris: [ID], ...over });

/**
 * OpenSSL's own verdict on a presented chain, from a TLS server set up as the broker's is (our
 * bundles as `ca`, partial chains allowed, client certificates requested but not required).
 */
async function opensslVerdict(p: Presented): Promise<{ authorized: boolean; error?: string }> {
  const server = createTlsServer({
    cert: pki.server.chainPem,
    key: pki.server.keyPem,
    ca: tlsBroker.tls!.current.caPem,
    allowPartialTrustChain: true,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const verdict = new Promise<{ authorized: boolean; error?: string }>((resolve) =>
    server.once('secureConnection', (socket: TLSSocket) => {
      resolve(socket.authorized ? { authorized: true } : { authorized: false, error: String(socket.authorizationError) });
      socket.end();
    }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const socket = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: pki.example.certPem, servername: 'localhost', cert: p.chainPem, key: p.keyPem });
  socket.on('error', () => undefined);
  try {
    return await verdict;
  } finally {
    socket.destroy();
    server.close();
  }
}

// ---- certificates the dev CA cannot make (subject emailAddress, anyExtendedKeyUsage, other constraints) ----

const ANY_EKU = '2.5.29.37.0';

const svidSan: JsonGeneralName[] = [{ type: 'url', value: ID }];

/** A leaf under `depth` intermediates below the example.org CA, each issued by the one above. */
async function deepLeaf(depth: number): Promise<Credential> {
  let from = pki.example;
  for (let i = 1; i <= depth; i++) from = await issueCertificate(from, { ca: true, subject: `CN=depth ${i} of ${depth}` });
  return leaf({}, from);
}

describe('valid X.509-SVIDs', () => {
  it('a leaf issued directly by the trust domain CA gets a token bound to that certificate', async () => {
    const cred = await leaf();
    const res = await bothPaths(present(cred));
    expect(res.status).toBe(201);
    expect(res.json.workload).toBe(ID);
    expect(res.json.rule).toBe('payments-svid');
    const claims = decodeJwt(res.json.access_token as string);
    expect(claims.sub).toBe(ID);
    expect(claims.client_id).toBe(ID);
    // RFC 8705 §3.1: base64url SHA-256 of the DER the client presented.
    expect(claims.cnf).toEqual({ 'x5t#S256': createHash('sha256').update(cred.der).digest('base64url') });
  });

  it('a leaf under an intermediate the client sends with it', async () => {
    const inter = await issueCertificate(pki.example, { ca: true, uris: ['spiffe://example.org'], subject: 'CN=payments intermediate' });
    const cred = await leaf({}, inter);
    expect(cred.intermediates).toHaveLength(1);
    const res = await bothPaths(present(cred));
    expect(res.status).toBe(201);
    expect(decodeJwt(res.json.access_token as string).cnf).toEqual({ 'x5t#S256': createHash('sha256').update(cred.der).digest('base64url') });
  });

  it('a leaf within the name constraints of its intermediate', async () => {
    const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=td-constrained', nameConstraints: { permittedUris: ['example.org'] } });
    const res = await bothPaths(present(await leaf({}, inter)));
    expect(res.status).toBe(201);
  });

  it('a non-SPIFFE certificate whose subject a config entry maps', async () => {
    const cred = await issueCertificate(pki.example, { subject: 'CN=legacy-batch, O=Acme', dns: ['batch.internal'] });
    const res = await bothPaths(present(cred));
    expect(res.status).toBe(201);
    expect(res.json.workload).toBe('spiffe://example.org/legacy/batch');
  });

  it('token lifetime never outlives the certificate', async () => {
    const cred = await leaf({ notAfter: new Date(Date.now() + 90_000) });
    const res = await viaHandshake(present(cred));
    expect(res.status).toBe(201);
    expect(res.json.expires_in).toBeLessThanOrEqual(90);
  });
});

describe('refused certificates: same 401 on the handshake and the forwarded path', () => {
  const cases: [string, () => Promise<Presented>, RegExp][] = [
    ['expired leaf', async () => present(await leaf({ notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) })), /client certificate expired at/],
    ['not-yet-valid leaf', async () => present(await leaf({ notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 2 * DAY) })), /client certificate is not valid until/],
    ['unknown CA', async () => present(await leaf({}, pki.unknown)), /not issued by a CA in any trusted bundle/],
    ['CA-flagged leaf', async () => present(await leaf({ ca: true })), /is a CA certificate/],
    ['serverAuth-only EKU', async () => present(await leaf({ eku: ['serverAuth'] })), /extendedKeyUsage without clientAuth/],
    ['leaf key usage with keyCertSign', async () => present(await leaf({ keyUsage: 0x01 | 0x20 })), /keyCertSign or cRLSign/],
    ['two URI SANs', async () => present(await leaf({ uris: [ID, 'spiffe://example.org/ns/payments/sa/other'] })), /has 2 URI SANs/],
    ['no URI SAN and an unmapped subject', async () => present(await issueCertificate(pki.example, { dns: ['api.internal'] })), /has no URI SAN \(not an X509-SVID\)/],
    ['trust domain of the ID differs from the validating bundle', async () => present(await leaf({ uris: ['spiffe://other.org/ns/payments/sa/api'] })), /trust domain other\.org, but the chain was validated by the bundle of example\.org/],
    [
      'intermediate without basicConstraints',
      async () => present(await leaf({}, await issueCertificate(pki.example, { omitBasicConstraints: true, keyUsage: 0x20, subject: 'CN=not a CA' }))),
      /intermediate CN=not a CA is not a CA/,
    ],
    [
      'intermediate with cA=false',
      async () => present(await leaf({}, await issueCertificate(pki.example, { ca: false, keyUsage: 0x20, eku: null, subject: 'CN=leaf as CA' }))),
      /intermediate CN=leaf as CA is not a CA/,
    ],
    [
      'pathLenConstraint violated',
      async () => {
        const top = await issueCertificate(pki.example, { ca: true, pathLength: 0, subject: 'CN=pathlen zero' });
        const below = await issueCertificate(top, { ca: true, subject: 'CN=one too many' });
        return present(await leaf({}, below));
      },
      /CN=pathlen zero allows 0 intermediate\(s\) below it/,
    ],
    [
      'URI outside the intermediate name constraints',
      async () => present(await leaf({}, await issueCertificate(pki.example, { ca: true, subject: 'CN=constrained', nameConstraints: { permittedUris: ['payments.example.org'] } }))),
      /URI spiffe:\/\/example\.org\/ns\/payments\/sa\/api is outside its permitted name constraints/,
    ],
    [
      'tampered signature',
      async () => {
        const cred = await leaf();
        const der = tamperSignature(cred.der);
        return { chainPem: derToPem(der), keyPem: cred.keyPem, leafDer: der };
      },
      /signature on certificate CN=api does not verify/,
    ],
  ];

  it.each(cases)('%s', async (_name, make, description) => {
    const res = await bothPaths(await make());
    expect(res.status).toBe(401);
    expect(res.json.error).toBe('invalid_client');
    expect(res.json.error_description).toMatch(description);
  });

  const malformed: [string, RegExp][] = [
    ['spiffe://Example.org/ns/payments/sa/api', /must be lowercase/],
    ['spiffe://example.org:8443/ns/payments/sa/api', /must not carry a port/],
    ['spiffe://admin@example.org/ns/payments/sa/api', /must not carry userinfo/],
    ['spiffe://example.org/ns/payments/sa/api?x=1', /must not have a query/],
    ['spiffe://example.org/ns/payments/sa/api#x', /must not have a fragment/],
    ['spiffe://example.org/ns//sa/api', /empty segments/],
    ['spiffe://example.org/ns/./sa/api', /"\." or "\.\." segments/],
    ['spiffe://example.org/ns/../sa/api', /"\." or "\.\." segments/],
    ['spiffe://example.org/ns/payments/sa/api/', /must not end with "\/"/],
    ['spiffe://example.org', /must have a path/],
    ['SPIFFE://example.org/ns/payments/sa/api', /scheme must be "spiffe" in lowercase/],
    ['https://example.org/ns/payments/sa/api', /scheme must be "spiffe:\/\/"/],
    ['spiffe://example.org/ns/pay%20ments/sa/api', /must not be percent-encoded/],
    ['spiffe:///ns/payments/sa/api', /trust domain is empty/],
    ['spiffe://example.org/ns/pay ments/sa/api', /may only contain/],
  ];

  it.each(malformed)('malformed SPIFFE ID %s', async (uri, description) => {
    const res = await bothPaths(present(await leaf({ uris: [uri] })));
    expect(res.status).toBe(401);
    expect(res.json.error_description).toMatch(/not a valid workload SPIFFE ID/);
    expect(res.json.error_description).toMatch(description);
  });

  it('nothing is written for a refused certificate', async () => {
    const before = await tlsBroker.store.listWorkloadGrants(ID, { now: Date.now() });
    await bothPaths(present(await leaf({ eku: ['serverAuth'] })));
    const after = await tlsBroker.store.listWorkloadGrants(ID, { now: Date.now() });
    expect(after.length).toBe(before.length);
  });
});

describe('chain rules OpenSSL applies too: one decision in the handshake, the forwarded header and OpenSSL itself', () => {
  /**
   * Node has no name for OpenSSL's name-constraint errors (X509_V_ERR_PERMITTED_VIOLATION,
   * _EXCLUDED_VIOLATION): it reports them as UNSPECIFIED. The accepted twins below show that the
   * constraint, not something else, is what OpenSSL refuses.
   */
  const NAME_CONSTRAINT_VIOLATION = 'UNSPECIFIED';
  const cases: [string, () => Promise<Presented>, string, string][] = [
    [
      'an intermediate whose only extendedKeyUsage is anyExtendedKeyUsage',
      async () => present(await leaf({}, await craft(pki.example, { subject: 'CN=any-eku intermediate', ca: true, eku: [ANY_EKU] }))),
      'intermediate CN=any-eku intermediate has an extendedKeyUsage without clientAuth',
      'INVALID_PURPOSE',
    ],
    [
      'a subject emailAddress in an excluded email subtree of an intermediate',
      async () => {
        const inter = await craft(pki.example, {
          subject: 'CN=no evil mail',
          ca: true,
          extensions: [nameConstraints([], [new GeneralName({ rfc822Name: 'evil.com' })])],
        });
        return present(await craft(inter, { subject: 'CN=api, E=bad@evil.com', eku: [ExtendedKeyUsage.clientAuth], san: svidSan }));
      },
      'intermediate CN=no evil mail: email bad@evil.com is excluded by its name constraints',
      NAME_CONSTRAINT_VIOLATION, // openssl verify: error 48, excluded subtree violation
    ],
    [
      'a leaf CN that is a host name outside the permitted DNS subtree (no DNS SAN)',
      async () => {
        const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=example.org hosts only', nameConstraints: { permittedDns: ['example.org'] } });
        return present(await leaf({ subject: 'CN=host.evil.com' }, inter));
      },
      'intermediate CN=example.org hosts only: common name host.evil.com is outside its permitted name constraints',
      NAME_CONSTRAINT_VIOLATION, // openssl verify: error 47, permitted subtree violation
    ],
    [
      'a leaf CN with "_" that OpenSSL still reads as a host name (host_1.evil.com)',
      async () => {
        const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=example.org hosts only', nameConstraints: { permittedDns: ['example.org'] } });
        return present(await leaf({ subject: 'CN=host_1.evil.com' }, inter));
      },
      'intermediate CN=example.org hosts only: common name host_1.evil.com is outside its permitted name constraints',
      NAME_CONSTRAINT_VIOLATION,
    ],
    [
      'a subject emailAddress whose local part differs in case from the permitted mailbox',
      async () => {
        const inter = await craft(pki.example, { subject: 'CN=ops mailbox only', ca: true, extensions: [nameConstraints([new GeneralName({ rfc822Name: 'Ops@example.org' })])] });
        return present(await craft(inter, { subject: 'CN=api, E=ops@example.org', eku: [ExtendedKeyUsage.clientAuth], san: svidSan }));
      },
      'intermediate CN=ops mailbox only: email ops@example.org is outside its permitted name constraints',
      NAME_CONSTRAINT_VIOLATION,
    ],
    [
      'a subject outside the directoryName subtree of an intermediate',
      async () => {
        const acme = new GeneralName({ directoryName: AsnConvert.parse(new Name('O=Acme').toArrayBuffer(), AsnName) });
        const inter = await craft(pki.example, { subject: 'O=Acme, CN=acme issuing', ca: true, extensions: [nameConstraints([acme])] });
        return present(await leaf({ subject: 'O=Elsewhere, CN=api' }, inter));
      },
      'intermediate O=Acme, CN=acme issuing: subject 2.5.4.10=elsewhere, 2.5.4.3=api is outside its permitted name constraints',
      NAME_CONSTRAINT_VIOLATION, // openssl verify: error 47, permitted subtree violation
    ],
    [
      'a leaf whose Netscape cert type allows SSL server only',
      async () =>
        present(
          await craft(pki.example, {
            subject: 'CN=ns server only',
            eku: [ExtendedKeyUsage.clientAuth],
            san: svidSan,
            extensions: [new Extension('2.16.840.1.113730.1.1', false, AsnConvert.serialize(new BitString(2)))],
          }),
        ),
      'the client certificate has a Netscape cert type without SSL client',
      'INVALID_PURPOSE',
    ],
    [
      'an intermediate below a trust anchor with pathLenConstraint 0',
      async () => present(await leaf({}, await issueCertificate(pathlenRoot, { ca: true, subject: 'CN=below pathlen 0' }))),
      'the trust anchor CN=pathlen 0 root, O=jit-broker dev allows 0 intermediate(s) below it (pathLenConstraint) but the chain has 1',
      'PATH_LENGTH_EXCEEDED',
    ],
  ];

  it.each(cases)('%s is refused', async (_name, make, description, opensslError) => {
    const p = await make();
    const res = await bothPaths(p);
    expect({ status: res.status, error: res.json.error, error_description: res.json.error_description }).toEqual({
      status: 401,
      error: 'invalid_client',
      error_description: description,
    });
    expect(await opensslVerdict(p)).toEqual({ authorized: false, error: opensslError });
  });

  /** The twins of the refused cases, inside their constraints. */
  const accepted: [string, () => Promise<Presented>][] = [
    [
      'an intermediate with clientAuth beside anyExtendedKeyUsage',
      async () => present(await leaf({}, await craft(pki.example, { subject: 'CN=client-eku intermediate', ca: true, eku: [ANY_EKU, ExtendedKeyUsage.clientAuth] }))),
    ],
    [
      'a subject emailAddress outside the excluded email subtree',
      async () => {
        const inter = await craft(pki.example, { subject: 'CN=no evil mail', ca: true, extensions: [nameConstraints([], [new GeneralName({ rfc822Name: 'evil.com' })])] });
        return present(await craft(inter, { subject: 'CN=api, E=ops@example.org', eku: [ExtendedKeyUsage.clientAuth], san: svidSan }));
      },
    ],
    [
      'a host-name CN inside the permitted DNS subtree',
      async () => {
        const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=example.org hosts only', nameConstraints: { permittedDns: ['example.org'] } });
        return present(await leaf({ subject: 'CN=api.example.org' }, inter));
      },
    ],
    [
      'a subject inside the directoryName subtree',
      async () => {
        const acme = new GeneralName({ directoryName: AsnConvert.parse(new Name('O=Acme').toArrayBuffer(), AsnName) });
        const inter = await craft(pki.example, { subject: 'O=Acme, CN=acme issuing', ca: true, extensions: [nameConstraints([acme])] });
        return present(await leaf({ subject: 'O=Acme, CN=api' }, inter));
      },
    ],
    ['a leaf issued directly by the pathLenConstraint 0 anchor', async () => present(await leaf({}, pathlenRoot))],
    [
      'a CN that OpenSSL does not read as a host name ("-" first), beside a DNS constraint',
      async () => {
        const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=example.org hosts only', nameConstraints: { permittedDns: ['example.org'] } });
        return present(await leaf({ subject: 'CN=-host.evil.com' }, inter));
      },
    ],
    [
      'a subject emailAddress with the host in another case than the permitted mailbox',
      async () => {
        const inter = await craft(pki.example, { subject: 'CN=ops mailbox only', ca: true, extensions: [nameConstraints([new GeneralName({ rfc822Name: 'ops@Example.ORG' })])] });
        return present(await craft(inter, { subject: 'CN=api, E=ops@example.org', eku: [ExtendedKeyUsage.clientAuth], san: svidSan }));
      },
    ],
  ];

  it.each(accepted)('%s is accepted', async (_name, make) => {
    const p = await make();
    const res = await bothPaths(p);
    expect({ status: res.status, workload: res.json.workload }).toEqual({ status: 201, workload: ID });
    expect(await opensslVerdict(p)).toEqual({ authorized: true });
  });
});

describe('chain length: what the client sends, without our anchor', () => {
  it('leaf + 4 intermediates (the default max_intermediates), sent in reverse order, is accepted on both paths', async () => {
    const p = present(await deepLeaf(4));
    const pems = p.chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)!;
    expect(pems).toHaveLength(5);
    const reversed = { ...p, chainPem: [pems[0]!, ...pems.slice(1).reverse()].join('') };
    for (const chain of [p, reversed]) {
      const res = await bothPaths(chain);
      expect({ status: res.status, workload: res.json.workload }).toEqual({ status: 201, workload: ID });
      expect(await opensslVerdict(chain)).toEqual({ authorized: true });
    }
  });

  it('leaf + 5 intermediates is refused on both paths (attestation.x509.max_intermediates)', async () => {
    const p = present(await deepLeaf(5));
    const res = await bothPaths(p);
    expect({ status: res.status, error_description: res.json.error_description }).toEqual({
      status: 401,
      error_description: 'the client certificate chain needs 5 intermediate certificates; at most 4 are accepted (attestation.x509.max_intermediates)',
    });
    // The limit is the broker's own: OpenSSL would have verified this chain.
    expect(await opensslVerdict(p)).toEqual({ authorized: true });
  });

  it('leaf + 8 intermediates (9 certificates) is refused on both paths before any path is built', async () => {
    const p = present(await deepLeaf(8));
    expect(p.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(9);
    const res = await bothPaths(p);
    expect({ status: res.status, error_description: res.json.error_description }).toEqual({
      status: 401,
      error_description: 'the client certificate chain is longer than 8 certificates',
    });
  });
});

describe('a platform token in the body beside a client certificate', () => {
  const token = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'p', audience: AUDIENCE, ttlSeconds: 600 });

  it('the body wins: the token attests, and the access token is not bound to the certificate', async () => {
    const res = await bothPaths(present(await leaf()), { attestation: { kind: 'oidc', token: await token() }, intent });
    expect({ status: res.status, workload: res.json.workload, rule: res.json.rule }).toEqual({ status: 201, workload: 'k8s://test/ns/payments/sa/api', rule: 'payments-k8s' });
    const claims = decodeJwt(res.json.access_token as string);
    expect(claims.sub).toBe('k8s://test/ns/payments/sa/api');
    expect(claims.cnf).toBeUndefined();
  });

  it('the certificate is not even judged: an expired one beside a good token does not matter', async () => {
    const expired = await leaf({ notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) });
    const res = await bothPaths(present(expired), { attestation: { kind: 'oidc', token: await token() }, intent });
    expect({ status: res.status, workload: res.json.workload }).toEqual({ status: 201, workload: 'k8s://test/ns/payments/sa/api' });
    expect(decodeJwt(res.json.access_token as string).cnf).toBeUndefined();
  });

  it('nor does a good certificate rescue a bad token', async () => {
    const res = await bothPaths(present(await leaf()), { attestation: { kind: 'oidc', token: 'not-a-jwt' }, intent });
    expect({ status: res.status, error: res.json.error }).toEqual({ status: 401, error: 'invalid_client' });
  });
});

describe('HTTPS without a client certificate', () => {
  it('platform-token callers need no certificate, and their tokens carry no cnf', async () => {
    const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'p', audience: AUDIENCE, ttlSeconds: 600 });
    const res = await httpsJson(`${tlsBroker.url}/v1/tasks`, { ca: pki.example.certPem, body: { attestation: { kind: 'oidc', token }, intent } });
    expect(res.status).toBe(201);
    expect(decodeJwt(res.json.access_token as string).cnf).toBeUndefined();
  });

  it('no evidence at all is a clear 401', async () => {
    const res = await httpsJson(`${tlsBroker.url}/v1/tasks`, { ca: pki.example.certPem, body: { intent } });
    expect(res.status).toBe(401);
    expect(res.json.error_description).toMatch(/present a client certificate/);
  });

  it('metadata advertises certificate-bound tokens', async () => {
    const res = await httpsJson(`${tlsBroker.url}/.well-known/oauth-authorization-server`, { ca: pki.example.certPem });
    expect(res.json.tls_client_certificate_bound_access_tokens).toBe(true);
  });
});

describe('TLS connection', () => {
  it('refuses TLS 1.2 renegotiation, so the certificate read for a connection cannot change under it', async () => {
    const cred = await leaf();
    const url = new URL(tlsBroker.url);
    const socket = tlsConnect({ host: url.hostname, port: Number(url.port), ca: pki.example.certPem, cert: cred.chainPem, key: cred.keyPem, maxVersion: 'TLSv1.2', servername: 'localhost' });
    await new Promise<void>((ok, fail) => socket.once('secureConnect', ok).once('error', fail));
    expect(socket.authorized).toBe(true);
    // Closed by the server, or still open after 3 s (renegotiation allowed).
    const outcome = new Promise<string>((ok) => {
      socket.once('close', () => ok('closed'));
      setTimeout(() => ok('still open'), 3000).unref();
    });
    socket.on('error', () => undefined);
    let renegotiated = false;
    socket.renegotiate({ rejectUnauthorized: true }, (err) => (renegotiated = !err));
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect(await outcome).toBe('closed');
    expect(renegotiated).toBe(false);
    socket.destroy();
  });
});

describe('forwarded header', () => {
  it('accepts the nginx form (URL-encoded PEM) and refuses a header with several XFCC elements', async () => {
    const cred = await leaf();
    const nginx = await startTestBroker(issuer, {
      tls: { client_ca_bundles: { 'example.org': files.write('nginx-example.pem', pki.example.certPem) } },
      attestation: { x509: { forwarded: { header: 'ssl-client-cert', format: 'pem', trusted_proxies: ['127.0.0.0/8'] } } },
      policies,
    });
    try {
      const ok = await postJson(`${nginx.url}/v1/tasks`, { intent }, { 'ssl-client-cert': encodeURIComponent(cred.certPem) });
      expect(ok.status).toBe(201);
      expect(ok.json.workload).toBe(ID);
    } finally {
      await nginx.close();
    }
    const two = await postJson(`${proxyBroker.url}/v1/tasks`, { intent }, { 'x-forwarded-client-cert': `${xfcc(cred)},${xfcc(cred)}` });
    expect(two.status).toBe(401);
    expect(two.json.error_description).toMatch(/holds 2 elements; exactly one is accepted/);
    const garbage = await postJson(`${proxyBroker.url}/v1/tasks`, { intent }, { 'x-forwarded-client-cert': 'Cert="%E0%A4%A"' });
    expect(garbage.status).toBe(401);
    expect(garbage.json.error_description).toMatch(/not valid URL-encoded PEM/);
  });

  it('a header from an untrusted address is ignored and logged', async () => {
    let lines = '';
    const sink = new Writable({ write: (c, _e, cb) => ((lines += String(c)), cb()) });
    const cred = await leaf();
    const other = await leaf({ uris: ['spiffe://example.org/ns/payments/sa/intruder'] });
    const broker = await startTestBroker(issuer, {
      tls: {
        cert: files.write('s2.pem', pki.server.chainPem),
        key: files.write('s2-key.pem', pki.server.keyPem),
        client_ca_bundles: { 'example.org': files.write('untrusted-example.pem', pki.example.certPem) },
      },
      attestation: { x509: { forwarded: { trusted_proxies: ['10.0.0.0/8'] } } },
      policies,
      log: { level: 'warn' },
    }, { destination: sink });
    try {
      // Only the header: ignored, so there is no evidence.
      const bare = await httpsJson(`${broker.url}/v1/tasks`, { ca: pki.example.certPem, body: { intent }, headers: { 'x-forwarded-client-cert': xfcc(cred) } });
      expect(bare.status).toBe(401);
      expect(bare.json.error_description).toMatch(/no evidence/);
      // With a handshake certificate: that one attests, not the header's.
      const mixed = await httpsJson(`${broker.url}/v1/tasks`, {
        ca: pki.example.certPem,
        cert: cred.chainPem,
        key: cred.keyPem,
        body: { intent },
        headers: { 'x-forwarded-client-cert': xfcc(other) },
      });
      expect(mixed.status).toBe(201);
      expect(mixed.json.workload).toBe(ID);
    } finally {
      await broker.close();
    }
    expect(lines).toMatch(/forwarded client certificate header from an untrusted address ignored/);
    expect(lines).toMatch(/"remote":"(::ffff:)?127\.0\.0\.1"/);
    expect(lines).not.toContain(encodeURIComponent(cred.certPem).slice(0, 80));
  });
});

describe('a bundle that holds an intermediate, not a root', () => {
  it('is a trust anchor on both paths (Node 20 cannot tell OpenSSL so; its "no issuer" verdict is not held against such a path)', async () => {
    const inter = await issueCertificate(pki.example, { ca: true, subject: 'CN=bundle intermediate', uris: ['spiffe://example.org'] });
    const bundle = { 'example.org': files.write('intermediate-only.pem', inter.certPem) };
    const viaTls = await startTestBroker(issuer, {
      tls: { cert: files.write('s4.pem', pki.server.chainPem), key: files.write('s4-key.pem', pki.server.keyPem), client_ca_bundles: bundle },
      policies,
    });
    const viaHeader = await startTestBroker(issuer, { tls: { client_ca_bundles: bundle }, attestation: { x509: { forwarded: { trusted_proxies: ['127.0.0.1/32', '::1'] } } }, policies });
    try {
      for (const cred of [await leaf({}, inter), await leaf({ uris: ['spiffe://example.org/ns/payments/sa/batch'] }, inter)]) {
        const a = await httpsJson(`${viaTls.url}/v1/tasks`, { ca: pki.example.certPem, cert: cred.chainPem, key: cred.keyPem, body: { intent } });
        const b = await postJson(`${viaHeader.url}/v1/tasks`, { intent }, { 'x-forwarded-client-cert': xfcc(cred) });
        expect([a.status, b.status]).toEqual([201, 201]);
      }
      // Still only what that intermediate issued: a sibling under the same root is unknown.
      const sibling = await leaf({}, await issueCertificate(pki.example, { ca: true, subject: 'CN=sibling intermediate' }));
      const refused = await httpsJson(`${viaTls.url}/v1/tasks`, { ca: pki.example.certPem, cert: sibling.chainPem, key: sibling.keyPem, body: { intent } });
      expect(refused.status).toBe(401);
      expect(refused.json.error_description).toMatch(/not issued by a CA in any trusted bundle/);
    } finally {
      await viaTls.close();
      await viaHeader.close();
    }
  });
});

describe('bundle reload', () => {
  it('a CA added to a bundle file is trusted on the next connection, a removed one no longer', async () => {
    const newCa = await createCA({ trustDomain: 'example.org', commonName: 'rotated CA' });
    const bundle = files.write('reload-example.pem', pki.example.certPem);
    const broker = await startTestBroker(issuer, {
      tls: {
        cert: files.write('s3.pem', pki.server.chainPem),
        key: files.write('s3-key.pem', pki.server.keyPem),
        client_ca_bundles: { 'example.org': bundle },
        reload_interval: '100ms',
      },
      policies,
    });
    const cred = await leaf({}, newCa);
    const attempt = () => httpsJson(`${broker.url}/v1/tasks`, { ca: pki.example.certPem, cert: cred.chainPem, key: cred.keyPem, body: { intent } });
    const until = async (status: number) => {
      const deadline = Date.now() + 10_000;
      let res = await attempt();
      while (res.status !== status && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        res = await attempt();
      }
      return res;
    };
    try {
      const before = await attempt();
      expect(before.status).toBe(401);
      expect(before.json.error_description).toMatch(/not issued by a CA in any trusted bundle/);
      files.write('reload-example.pem', pki.example.certPem + newCa.certPem);
      expect((await until(201)).status).toBe(201);
      expect(broker.tls!.current.generation).toBeGreaterThan(1);
      // A file that does not parse keeps the last good bundles.
      files.write('reload-example.pem', 'not a certificate');
      await new Promise((r) => setTimeout(r, 400));
      expect((await attempt()).status).toBe(201);
      files.write('reload-example.pem', pki.example.certPem);
      const after = await until(401);
      expect(after.status).toBe(401);
    } finally {
      await broker.close();
    }
  }, 30_000);
});
