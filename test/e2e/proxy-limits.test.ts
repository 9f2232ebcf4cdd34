/**
 * Limiter and proxies (issue 11, finding 7). A proxy trusted for forwarded client certificates
 * (attestation.x509.forwarded.trusted_proxies) but not listed in http.trusted_proxies used to have
 * every failure of every client behind it counted against its own address: 20 junk tokens from one
 * client locked out every workload behind the same proxy (429). A proxy trusted with the client's
 * certificate is trusted for the X-Forwarded-For entry it appends too, so failures count against
 * the client's address. Over real HTTP (this test process is the proxy, on 127.0.0.1) and the
 * harness's Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';
import { createTestPki, scratchDir, xfcc, type TestPki } from '../helpers/pki.js';

const BURST = 5;
let issuer: OidcIssuer;
let pki: TestPki;
let files: ReturnType<typeof scratchDir>;
let broker: BrokerRuntime;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  files = scratchDir();
  broker = await startTestBroker(issuer, {
    // The proxy is trusted for client certificates only: http.trusted_proxies is left empty.
    tls: { client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) } },
    attestation: { oidc: { issuers: [issuerEntry(issuer)] }, x509: { forwarded: { trusted_proxies: ['127.0.0.1/32', '::1'] } } },
    limits: { failed_attestations: { rate: 1, per: '1h', burst: BURST }, issuance: { rate: 1_000_000, burst: 1_000_000 } },
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*', 'spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    ],
  });
}, 30_000);
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  files?.cleanup();
});

const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'behind a proxy' };
const saToken = (sa: string) => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: sa, audience: AUDIENCE, ttlSeconds: 600 });
const junk = (client: string | undefined) =>
  postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln' }, intent }, client ? { 'x-forwarded-for': client } : {});

describe('failed attempts behind a proxy trusted for forwarded certificates', () => {
  it('count against the client address the proxy appended: one client spending its budget locks out no other workload behind it', async () => {
    const attacker = '198.51.100.7';
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await junk(`10.9.9.9, ${attacker}`)).status);
    expect(statuses.slice(0, BURST)).toEqual(Array(BURST).fill(401));
    expect(statuses.slice(BURST)).toEqual(Array(20 - BURST).fill(429));

    // Another workload behind the same proxy, with a platform token ...
    const other = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken('api') }, intent }, { 'x-forwarded-for': '198.51.100.8' });
    expect(other.status, JSON.stringify(other.json)).toBe(201);
    // ... and one with a forwarded certificate.
    const svid = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ns/payments/sa/orders'] });
    const viaCert = await postJson(`${broker.url}/v1/tasks`, { intent }, { 'x-forwarded-client-cert': xfcc(svid), 'x-forwarded-for': '198.51.100.9' });
    expect(viaCert.status, JSON.stringify(viaCert.json)).toBe(201);
    expect(viaCert.json.workload).toBe('spiffe://example.org/ns/payments/sa/orders');

    // The attacker stays limited, whatever it adds in front of the entry the proxy appended.
    const again = await junk(`203.0.113.1, ${attacker}`);
    expect(again.status).toBe(429);
    expect(again.json.error).toBe('rate_limited');
  });

  it('without an X-Forwarded-For entry, failures count against the proxy itself (never no limit)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < BURST + 2; i++) statuses.push((await junk(undefined)).status);
    expect(statuses).toEqual([...Array(BURST).fill(401), 429, 429]);
    // Clients that the proxy names are still served.
    const named = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken('api') }, intent }, { 'x-forwarded-for': '198.51.100.10' });
    expect(named.status).toBe(201);
  });
});
