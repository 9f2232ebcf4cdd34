/**
 * Identities are scoped to their attestation source (issue 11, item 7), through the real HTTP API
 * with real local OIDC issuers and the harness's Redis:
 * - `jit-broker check-config` (a real process) refuses issuers whose workload ids can collide,
 *   naming both; tenants on one host are told apart by `{iss_path}`;
 * - a renewal needs evidence from the grant's own issuer, even when another issuer maps to the
 *   same workload id, as two brokers on one Redis may during a config change.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';
import { uniquePrefix } from '../helpers/redis.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'jit-identity-'));
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'identity scope test' };

let clusterA: OidcIssuer;
let clusterB: OidcIssuer;
let tenantA: OidcIssuer;
const brokers: BrokerRuntime[] = [];

beforeAll(async () => {
  [clusterA, clusterB, tenantA] = await Promise.all([startOidcIssuer(), startOidcIssuer(), startOidcIssuer({ path: '/tenantA' })]);
});
afterAll(async () => {
  try {
    await Promise.all(brokers.map((b) => b.close()));
    await Promise.all([clusterA, clusterB, tenantA].map((i) => i?.close()));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs the CLI to completion; resolves with its exit code and output (never rejects on a non-zero exit). */
async function cli(args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const saToken = (issuer: OidcIssuer) =>
  issuer.mintServiceAccountToken({ namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });

describe('check-config: attestation sources that can produce the same workload id', () => {
  it('refuses two tenants of one host whose template differs only by {iss_host}, naming both issuers (exit 78)', async () => {
    const template = { template: 'ci://{iss_host}/{sub}' };
    const config = {
      issuer: 'https://broker.example.com',
      store: { kind: 'memory' },
      attestation: {
        oidc: {
          issuers: [
            { issuer: 'https://idp.example.com/tenantA', audiences: [AUDIENCE], mapping: template },
            { issuer: 'https://idp.example.com/tenantB', audiences: [AUDIENCE], mapping: template },
          ],
        },
      },
      policies: [{ name: 'ci', workloads: ['ci://idp.example.com/*'], audiences: ['db.payments'], actions: ['read'] }],
    };
    const path = join(dir, 'tenants.yaml');
    writeFileSync(path, stringify(config));
    const r = await cli(['check-config', '--config', path]);
    expect(r.code, r.stdout).toBe(78);
    expect(r.stderr).toMatch(/attestation\.oidc\.issuers\[1\]\.mapping: .*tenantB.*same workload id.*tenantA/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('workload ids of a tenant on a shared host', () => {
  it('{iss_path} puts the issuer path into the id: ci://HOST:PORT/tenantA/<sub>', async () => {
    const host = new URL(tenantA.issuer).host;
    const broker = await startTestBroker(tenantA, {
      attestation: { oidc: { issuers: [issuerEntry(tenantA, { mapping: { template: 'ci://{iss_host}{iss_path}/{sub}' } })] } },
      policies: [{ name: 'tenant-a', workloads: [`ci://${host}/tenantA/*`], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] }],
    });
    brokers.push(broker);
    const token = await tenantA.mint({ sub: 'alice', aud: AUDIENCE });
    const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
    expect(res.status, JSON.stringify(res.json)).toBe(201);
    expect(res.json).toMatchObject({ workload: `ci://${host}/tenantA/alice`, rule: 'tenant-a' });
  });
});

describe('renewal: evidence from the grant’s own issuer only', () => {
  it('refuses (401) a renewal attested by another issuer that maps to the same workload id', async () => {
    // Two brokers on one Redis during a config change: the old trusts cluster A, the new cluster
    // B, both named "test", so a service account maps to the same k8s:// id under either.
    const prefix = uniquePrefix('identity');
    const before = await startTestBroker(clusterA, { prefix });
    const after = await startTestBroker(clusterB, { prefix });
    brokers.push(before, after);
    const started = await postJson(`${before.url}/v1/tasks`, { attestation: { kind: 'oidc', token: await saToken(clusterA) }, intent });
    expect(started.status, JSON.stringify(started.json)).toBe(201);
    const { grant, access_token: token, workload } = started.json as { grant: string; access_token: string; workload: string };
    expect(workload).toBe('k8s://test/ns/payments/sa/api');
    const renew = async (url: string, issuer: OidcIssuer, bearer: string) =>
      postJson(`${url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken(issuer) } }, { authorization: `Bearer ${bearer}` });

    const foreign = await renew(after.url, clusterB, token);
    expect(foreign.status, JSON.stringify(foreign.json)).toBe(401);
    expect(foreign.json).toMatchObject({ error: 'invalid_client' });
    expect(foreign.json.error_description).toMatch(/issuer/);

    // The grant's own issuer still renews it, at either broker while both trust it.
    const own = await renew(before.url, clusterA, token);
    expect(own.status, JSON.stringify(own.json)).toBe(200);
    expect(own.json).toMatchObject({ grant, workload, generation: 2 });
  });
});
