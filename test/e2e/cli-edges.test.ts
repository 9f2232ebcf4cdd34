/**
 * The CLI as an operator runs it, as real processes (issue 11, findings 7 and 8): `check-config`
 * warns about a proxy trusted for forwarded certificates and not for X-Forwarded-For (or the other
 * way round), and `credential new` prints a random resource-server credential and the hash that
 * goes into the config, which a real broker process then accepts.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCA } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { postJson } from '../helpers/broker.js';
import { cli, configDir, spawnCli, stopChildren } from '../helpers/cli.js';

const files = configDir('jit-cli-edges-');
const writeFile = (name: string, text: string): string => files.write(name, text);
let issuer: OidcIssuer;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  stopChildren();
  await issuer?.close();
  files.cleanup();
});

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

describe('credential new', () => {
  it('prints a random 256-bit base64url secret and its SHA-256 for the config; a broker process accepts the secret and nothing else', async () => {
    const first = await cli(['credential', 'new']);
    const second = await cli(['credential', 'new']);
    expect(first.code, first.stderr).toBe(0);
    const parse = (stdout: string) => ({
      secret: /^credential: ([A-Za-z0-9_-]+)$/m.exec(stdout)?.[1] ?? '',
      hash: /^credential_sha256: ([0-9a-f]{64})$/m.exec(stdout)?.[1] ?? '',
    });
    const { secret, hash } = parse(first.stdout);
    expect(Buffer.from(secret, 'base64url').length).toBeGreaterThanOrEqual(32);
    expect(Buffer.from(secret, 'base64url').toString('base64url')).toBe(secret); // canonical base64url
    expect(hash).toBe(createHash('sha256').update(secret).digest('hex'));
    expect(parse(second.stdout).secret).not.toBe(secret);
    expect(first.stderr).toContain('resource_servers[].credential_sha256');

    // The hash goes into a config; `serve` (its own process) lets the secret introspect, nothing else.
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const path = writeFile(
      'rs.yaml',
      stringify({ ...baseConfig(), issuer: url, listen: { host: '127.0.0.1', port }, resource_servers: [{ name: 'api', audiences: ['api.ops'], credential_sha256: hash }] }),
    );
    const broker = await spawnCli(['serve', '--config', path], { label: 'credential-serve', env: { LOG_LEVEL: 'info' }, readyUrl: `${url}/healthz` });
    const token = await issuer.mintServiceAccountToken({ cluster: 'ops', namespace: 'ops', serviceAccount: 'runner', audience: 'jit-broker', ttlSeconds: 600 });
    const started = await postJson(`${url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent: { audience: 'api.ops', actions: ['read'], purpose: 'credential test' } });
    expect(started.status).toBe(201);
    const introspect = (credential: string) =>
      fetch(`${url}/oauth2/introspect`, {
        method: 'POST',
        headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: `token=${started.json.access_token as string}`,
      }).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, unknown> }));
    expect((await introspect(secret)).json).toMatchObject({ active: true, aud: 'api.ops' });
    for (const wrong of [parse(second.stdout).secret, hash, `${secret}x`, secret.slice(1)]) {
      const r = await introspect(wrong);
      expect(r.status).toBe(401);
      expect(r.json.error).toBe('invalid_client');
    }
    await broker.stop();
    expect(broker.output()).not.toContain(secret);
  }, 40_000);
});
