/**
 * The CLI as an operator runs it, as real processes (issue 11, findings 7 and 8): `check-config`
 * warns about a proxy trusted for forwarded certificates and not for X-Forwarded-For (or the other
 * way round), and `credential new` prints a random resource-server credential and the hash that
 * goes into the config, which a real broker process then accepts.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCA } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';

const run = promisify(execFile);
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const dir = mkdtempSync(join(tmpdir(), 'jit-cli-edges-'));
let issuer: OidcIssuer;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  await issuer?.close();
});

function writeFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs the CLI to completion; resolves with its exit code and output (never rejects on a non-zero exit). */
async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [...CLI, ...args], { env: { ...process.env, ...env }, timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const baseConfig = () => ({
  issuer: 'https://broker.test',
  listen: { host: '127.0.0.1', port: 8080 },
  store: { kind: 'memory' },
  attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'ops' } }] } },
  policies: [{ name: 'ops', workloads: ['k8s://ops/ns/ops/sa/*'], audiences: ['api.ops'], actions: ['read'] }],
});

describe('check-config: proxies trusted for one purpose and not the other', () => {
  let bundle: string;
  beforeAll(async () => {
    bundle = writeFile('bundle.pem', (await createCA({ trustDomain: 'example.org' })).certPem);
  });
  const withProxies = (http: string[], forwarded: string[]) => ({
    ...baseConfig(),
    http: { trusted_proxies: http },
    tls: { client_ca_bundles: { 'example.org': bundle } },
    attestation: { ...baseConfig().attestation, x509: { forwarded: { trusted_proxies: forwarded } } },
  });

  it('warns (exit 0) about a certificate proxy missing from http.trusted_proxies, and an X-Forwarded-For proxy missing from the certificate list', async () => {
    const path = writeFile('one-sided.yaml', stringify(withProxies(['10.0.0.10/32', '192.0.2.1', '172.16.0.1'], ['10.0.0.0/24', '192.0.2.1'])));
    const r = await cli(['check-config', '--config', path]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${path}: ok`);
    expect(r.stderr).toContain(
      'warning: attestation.x509.forwarded.trusted_proxies[0] (10.0.0.0/24) is trusted for forwarded client certificates but not listed in http.trusted_proxies',
    );
    expect(r.stderr).toContain('warning: http.trusted_proxies[2] (172.16.0.1) is trusted for X-Forwarded-For but not for forwarded client certificates');
    // Listed in both, or inside a block of the other list: no warning.
    expect(r.stderr).not.toContain('192.0.2.1');
    expect(r.stderr).not.toContain('10.0.0.10/32');
  });

  it('a block covers the addresses inside it; nothing at all when both lists agree', async () => {
    const path = writeFile('both.yaml', stringify(withProxies(['10.0.0.0/8'], ['10.0.0.0/24', '10.1.2.3'])));
    // 10.0.0.0/8 for X-Forwarded-For is wider than the certificate list: named once.
    const r = await cli(['check-config', '--config', path]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain('warning: attestation.x509');
    expect(r.stderr).toContain('warning: http.trusted_proxies[0] (10.0.0.0/8)');
    const exact = writeFile('exact.yaml', stringify(withProxies(['10.0.0.0/24', '::1'], ['10.0.0.0/24', '::1'])));
    const quiet = await cli(['check-config', '--config', exact]);
    expect(quiet).toMatchObject({ code: 0, stderr: '' });
  });
});
