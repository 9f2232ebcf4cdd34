/** Both attestors run the shared contract: OIDC against a real local issuer, x509 with dev-CA certificates. */
import { afterAll, beforeAll } from 'vitest';
import { createOidcAttestor, oidcAttestor, oidcConfigSchema } from '../../src/attestation/oidc/index.js';
import { createX509Attestor, x509Attestor, x509ConfigSchema, type X509Evidence } from '../../src/attestation/x509.js';
import { createCA, issueCertificate, tamperSignature, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { silentLogger } from '../../src/log.js';
import { TlsMaterialWatcher } from '../../src/tls/material.js';
import { attestorContract } from '../helpers/attestor-contract.js';
import { scratchDir } from '../helpers/pki.js';

let issuer: OidcIssuer;
let ca: Credential;
let stranger: Credential;
let tls: TlsMaterialWatcher;
const files = scratchDir();

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  ca = await createCA({ trustDomain: 'example.org' });
  stranger = await createCA({ trustDomain: 'example.org', commonName: 'stranger' });
  tls = new TlsMaterialWatcher({ bundles: { 'example.org': files.write('ca.pem', ca.certPem) } }, silentLogger);
});

afterAll(async () => {
  await issuer?.close();
  files.cleanup();
});

attestorContract('oidc', () => {
  const attestor = createOidcAttestor(
    oidcConfigSchema.parse({ issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'c' } }] }),
    { clock: Date.now, log: silentLogger },
  );
  const token = (audience = 'jit-broker', ttlSeconds = 600) =>
    issuer.mintServiceAccountToken({ cluster: 'c', namespace: 'ns', serviceAccount: 'sa', pod: 'p', audience, ttlSeconds });
  return {
    module: oidcAttestor,
    attestor,
    ready: () => attestor.warm(),
    valid: async () => ({ evidence: { kind: 'oidc', token: await token() }, id: 'k8s://c/ns/ns/sa/sa' }),
    invalid: async () => {
      const wrongAud = await token('someone-else');
      const good = await token();
      const forged = `${good.slice(0, good.lastIndexOf('.') + 1)}${'A'.repeat(86)}`;
      return [
        { label: 'not a JWT', evidence: { kind: 'oidc', token: 'not-a-jwt' }, secret: 'not-a-jwt' },
        { label: 'wrong audience', evidence: { kind: 'oidc', token: wrongAud }, secret: wrongAud },
        { label: 'forged signature', evidence: { kind: 'oidc', token: forged }, secret: forged },
      ];
    },
  };
});

attestorContract('x509', () => {
  const chain = (c: Credential): X509Evidence => ({ kind: 'x509', chain: [c.der, ...c.intermediates.map((i) => i.der)], source: 'forwarded' });
  return {
    module: x509Attestor,
    attestor: createX509Attestor(x509ConfigSchema.parse({}), { clock: Date.now, log: silentLogger, tls }),
    valid: async () => ({ evidence: chain(await issueCertificate(ca, { uris: ['spiffe://example.org/ns/a/sa/b'] })), id: 'spiffe://example.org/ns/a/sa/b' }),
    invalid: async () => {
      const good = await issueCertificate(ca, { uris: ['spiffe://example.org/ns/a/sa/b'] });
      return [
        { label: 'no certificate', evidence: { kind: 'x509', chain: [], source: 'handshake' } },
        { label: 'not DER', evidence: { kind: 'x509', chain: [Buffer.from('not a certificate')], source: 'forwarded' } },
        { label: 'unknown CA', evidence: chain(await issueCertificate(stranger, { uris: ['spiffe://example.org/ns/a/sa/b'] })) },
        { label: 'tampered', evidence: { kind: 'x509', chain: [tamperSignature(good.der)], source: 'forwarded' } },
        // OpenSSL's handshake verdict is informational (issue 12: one validator decides on every
        // path); what refuses a chain is the validator, here a signature that does not verify.
        { label: 'handshake chain with a bad signature', evidence: { kind: 'x509', chain: [tamperSignature(good.der)], source: 'handshake', handshakeError: 'CERT_SIGNATURE_FAILURE' } },
        { label: 'unreadable header', evidence: { kind: 'x509', chain: [], source: 'forwarded', problem: 'the forwarded client certificate header holds no PEM certificate' } },
      ];
    },
  };
});
