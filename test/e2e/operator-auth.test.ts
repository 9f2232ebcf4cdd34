/**
 * Operator authentication and roles (issue 13 item 1), against a real HTTPS broker with real
 * client certificates from the dev CA: bearer credentials (hash in config, constant-time match)
 * and mTLS identities (SPIFFE ID, or subject + trust domain), two roles, and nobody else —
 * not a workload's task token, not a workload's certificate, not a resource server's credential.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';

let issuer: OidcIssuer;
let pki: TestPki;
let files: ReturnType<typeof scratchDir>;
let broker: BrokerRuntime & { prefix: string };
let ca: string;

const admin = newCredential();
const auditor = newCredential();
const rs = newCredential();
let adminCert: Credential;
let auditorCert: Credential;
let workloadCert: Credential;
let strangerSubjectCert: Credential;
let untrustedAdminCert: Credential;
let taskToken: string;

const operators = () => [
  { name: 'root', role: 'admin' as const, credential_sha256: admin.sha256 },
  { name: 'viewer', role: 'auditor' as const, credential_sha256: auditor.sha256 },
  { name: 'alice', role: 'admin' as const, spiffe_id: 'spiffe://example.org/ops/alice' },
  { name: 'bob', role: 'auditor' as const, subject: 'CN=bob-ops, O=Acme', trust_domain: 'example.org' },
];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  files = scratchDir();
  ca = pki.example.certPem;
  broker = await startTestBroker(issuer, {
    tls: {
      cert: files.write('server.pem', pki.server.chainPem),
      key: files.write('server-key.pem', pki.server.keyPem),
      client_ca_bundles: { 'example.org': files.write('example.org.pem', pki.example.certPem) },
    },
    resource_servers: [{ name: 'orders-db', audiences: ['db.payments'], credential_sha256: rs.sha256 }],
    operators: operators(),
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*', 'spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    ],
  });
  adminCert = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ops/alice'] });
  auditorCert = await issueCertificate(pki.example, { subject: 'CN=bob-ops, O=Acme', dns: ['bob.internal'] });
  workloadCert = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ns/payments/sa/api'] });
  strangerSubjectCert = await issueCertificate(pki.example, { subject: 'CN=mallory, O=Acme', dns: ['mallory.internal'] });
  untrustedAdminCert = await issueCertificate(pki.unknown, { uris: ['spiffe://example.org/ops/alice'] });
  const platform = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'p', audience: AUDIENCE, ttlSeconds: 600 });
  const started = await httpsJson(`${broker.url}/v1/tasks`, {
    ca,
    body: { attestation: { kind: 'oidc', token: platform }, intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'p' } },
  });
  expect(started.status).toBe(201);
  taskToken = started.json.access_token as string;
});

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  files?.cleanup();
});

type Caller = { bearer?: string; cert?: Credential };
/** The operator routes, each with the role it needs (a body for the POSTs). */
const ROUTES: { path: string; body?: unknown; role: 'auditor' | 'admin' }[] = [
  { path: '/v1/grants', role: 'auditor' },
  { path: '/v1/grants/g_AAAAAAAAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAA', role: 'auditor' },
  { path: '/v1/workloads', role: 'auditor' },
  { path: '/v1/keys', role: 'auditor' },
  { path: '/v1/grants/revoke', body: { selector: { task: 'nothing-matches' }, reason: 'auth matrix', dry_run: true }, role: 'admin' },
  { path: '/v1/keys/rotate', role: 'admin' },
];

const call = (path: string, who: Caller, body?: unknown) =>
  httpsJson(`${broker.url}${path}`, {
    ca,
    ...(body !== undefined ? { body } : path.endsWith('rotate') ? { method: 'POST' } : {}),
    ...(who.bearer ? { headers: { authorization: `Bearer ${who.bearer}` } } : {}),
    ...(who.cert ? { cert: who.cert.chainPem, key: who.cert.keyPem } : {}),
  });

describe('operator authentication matrix', () => {
  const refused: [string, () => Caller][] = [
    ['anonymous', () => ({})],
    ['a wrong bearer credential', () => ({ bearer: newCredential().credential })],
    ["a workload's task token", () => ({ bearer: taskToken })],
    ["a resource server's credential", () => ({ bearer: rs.credential })],
    ["a workload's X.509-SVID (not an operator's SPIFFE ID)", () => ({ cert: workloadCert })],
    ['a certificate whose subject no operator has', () => ({ cert: strangerSubjectCert })],
    ["an operator's SPIFFE ID from a CA no bundle holds", () => ({ cert: untrustedAdminCert })],
  ];
  for (const [who, caller] of refused) {
    it(`refuses ${who} with 401 invalid_client on every operator route`, async () => {
      for (const { path, body } of ROUTES) {
        const res = await call(path, caller(), body);
        expect(res.status, `${path}: ${JSON.stringify(res.json)}`).toBe(401);
        expect(res.json.error).toBe('invalid_client');
        expect(res.json.error_description).toMatch(/\w/);
      }
    });
  }

  it('lets every operator read, and refuses an auditor every admin route with 403 (bearer and mTLS subject)', async () => {
    for (const who of [{ bearer: auditor.credential }, { cert: auditorCert }, { bearer: admin.credential }, { cert: adminCert }]) {
      for (const { path, body, role } of ROUTES) {
        if (path.endsWith('rotate')) continue; // rotation has its own test below
        const res = await call(path, who, body);
        const isAuditor = who.bearer === auditor.credential || who.cert === auditorCert;
        const expected = role === 'admin' && isAuditor ? 403 : path.startsWith('/v1/grants/g_') ? 404 : 200;
        expect(res.status, `${path}: ${JSON.stringify(res.json)}`).toBe(expected);
      }
    }
    for (const who of [{ bearer: auditor.credential }, { cert: auditorCert }]) {
      const read = await call('/v1/keys', who);
      expect(read.status).toBe(200);
      expect(read.json.keys.length).toBeGreaterThan(0);
      const write = await call('/v1/keys/rotate', who);
      expect(write.status).toBe(403);
      expect(write.json).toMatchObject({ error: 'access_denied' });
      expect(write.json.error_description).toMatch(/role auditor.*needs role admin/);
    }
  });

  it('lets an admin read and rotate (bearer and mTLS SPIFFE ID); each action is audited naming the operator', async () => {
    for (const [who, name] of [
      [{ bearer: admin.credential }, 'root'],
      [{ cert: adminCert }, 'alice'],
    ] as const) {
      const keys = await call('/v1/keys', who);
      expect(keys.status).toBe(200);
      const current = (keys.json.keys as { kid: string; state?: string }[]).find((k) => k.state === 'current')!.kid;
      const rotated = await call('/v1/keys/rotate', who);
      expect(rotated.status).toBe(200);
      expect(rotated.json).toMatchObject({ rotated: true, previous_kid: current });
      expect(rotated.json.note).toMatch(/instance that answered/);
      const events = await broker.store.readOperatorAudit();
      expect(events.filter((e) => e.action === 'keys.rotate' && e.operator === name && e.role === 'admin')).toHaveLength(1);
      // wait for the successor key to be published before the next rotation
      for (let i = 0; i < 100 && !(await call('/v1/keys', who)).json.keys.some((k: { state?: string }) => k.state === 'next'); i++) await new Promise((r) => setTimeout(r, 20));
    }
    const reads = (await broker.store.readOperatorAudit()).filter((e) => e.action === 'keys.list');
    expect(new Set(reads.map((e) => e.operator))).toEqual(new Set(['viewer', 'bob', 'root', 'alice']));
  });
});

describe('operator failures count against the per-address failure limit', () => {
  it('answers 429 once an address has spent its failed-attempt budget on bad operator credentials', async () => {
    const limited = await startTestBroker(issuer, {
      operators: [{ name: 'root', role: 'admin', credential_sha256: admin.sha256 }],
      limits: { failed_attestations: { rate: 1, per: '1h', burst: 3 } },
    });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${limited.url}/v1/keys`, { headers: { authorization: `Bearer ${newCredential().credential}` } });
        statuses.push(res.status);
      }
      expect(statuses.slice(0, 3)).toEqual([401, 401, 401]);
      expect(statuses.slice(3)).toEqual([429, 429]);
      // the limit holds for the right credential too, from that address
      expect((await fetch(`${limited.url}/v1/keys`, { headers: { authorization: `Bearer ${admin.credential}` } })).status).toBe(429);
    } finally {
      await limited.close();
    }
  });
});
