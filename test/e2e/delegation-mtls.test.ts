import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';

/**
 * Delegation with a certificate-bound actor token over real mTLS: an agent whose evidence is its
 * client certificate acts for a workload with its own task token (cnf.x5t#S256). The token acts
 * only over a connection with that certificate, the delegated token keeps the binding, and the
 * agent renews it over mTLS with the same certificate.
 */
const ISSUER = 'https://broker.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const SUBJECT = 'k8s://test/ns/payments/sa/api';
const AGENT = 'spiffe://example.org/ns/agents/sa/api';
const target = { audience: 'db.payments', resource: 'db://payments/orders', scope: 'read' };

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let pki: TestPki;
let files: ReturnType<typeof scratchDir>;

const saToken = () => issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

type Cred = { chainPem: string; keyPem: string };
const post = (path: string, body: string, contentType: string, cred?: Cred, headers: Record<string, string> = {}) =>
  httpsJson(`${broker.url}${path}`, { ca: pki.example.certPem, ...(cred ? { cert: cred.chainPem, key: cred.keyPem } : {}), headers: { 'content-type': contentType, ...headers }, body });
const token = (params: Record<string, string>, cred?: Cred) => post('/oauth2/token', new URLSearchParams(params).toString(), 'application/x-www-form-urlencoded', cred);

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  files = scratchDir();
  broker = await startTestBroker(issuer, {
    issuer: ISSUER,
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'], actors: ['spiffe://example.org/ns/agents/sa/*'] },
      { name: 'agents', workloads: ['spiffe://example.org/ns/agents/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    ],
    tls: { cert: files.write('server.pem', pki.server.chainPem), key: files.write('server-key.pem', pki.server.keyPem), client_ca_bundles: { 'example.org': files.write('example.org.pem', pki.example.certPem) } },
    attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] }, x509: {} },
  });
}, 30_000);

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  files?.cleanup();
});

describe('delegation with a certificate-bound actor token (RFC 8705)', () => {
  it('acts only with the certificate, keeps the binding, and is renewed by the agent over mTLS', async () => {
    const agent = await issueCertificate(pki.example, { uris: [AGENT] });
    const own = await token({ grant_type: 'client_credentials', ...target }, agent);
    expect(own.status).toBe(200);
    const x5t = createHash('sha256').update(agent.der).digest('base64url');
    const params = async () => ({ grant_type: EXCHANGE, subject_token: await saToken(), subject_token_type: JWT_TYPE, actor_token: own.json.access_token as string, actor_token_type: ACCESS_TOKEN_TYPE, ...target });

    const stolen = await token(await params());
    expect(stolen.status).toBe(400);
    expect(stolen.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('bound to a client certificate') });
    const otherCert = await token(await params(), await issueCertificate(pki.example, { uris: [AGENT] }));
    expect(otherCert.status).toBe(400);

    const res = await token(await params(), agent);
    expect(res.status).toBe(200);
    const delegated = res.json.access_token as string;
    const claims = decodeJwt(delegated);
    expect(claims).toMatchObject({ sub: SUBJECT, act: { sub: AGENT }, cnf: { 'x5t#S256': x5t } });

    const renewed = await post(`/v1/tasks/${claims.grant as string}/renew`, '{}', 'application/json', agent, { authorization: `Bearer ${delegated}` });
    expect(renewed.status).toBe(200);
    expect(decodeJwt(renewed.json.access_token as string)).toMatchObject({ sub: SUBJECT, act: { sub: AGENT }, cnf: { 'x5t#S256': x5t } });
  });
});
