/**
 * The production command, as an operator runs it: `jit-broker check-config` and `jit-broker serve`
 * as real processes, with a YAML file, the harness's redis-server and a real local OIDC issuer.
 */
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { postJson } from '../helpers/broker.js';
import { cli, configDir, spawnCli, stopChildren } from '../helpers/cli.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const files = configDir('jit-cli-');
const dir = files.dir;
const writeConfig = files.write;
let issuer: OidcIssuer;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  stopChildren();
  await issuer?.close();
  files.cleanup();
});

const baseConfig = (port: number) => ({
  issuer: `http://127.0.0.1:${port}`,
  listen: { host: '127.0.0.1', port },
  store: { kind: 'redis', url: redisUrl(), key_prefix: uniquePrefix('cli') },
  tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
  attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'ops' } }] } },
  policies: [{ name: 'ops', workloads: ['k8s://ops/ns/ops/sa/*'], audiences: ['api.ops'], actions: ['read'] }],
});

describe('jit-broker check-config', () => {
  it('accepts a valid file', async () => {
    const path = writeConfig('ok.yaml', baseConfig(8080));
    const r = await cli(['check-config', '--config', path]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${path}: ok`);
  });

  it('lists every problem by its path and exits 78 (EX_CONFIG)', async () => {
    const cfg = baseConfig(8080);
    const bad = {
      ...cfg,
      tokens: { ...cfg.tokens, max_ttl: '20m', key_overlap: '5m' },
      policies: [...cfg.policies, { name: 'slow', workloads: ['a://b'], audiences: ['x'], actions: ['r'], max_ttl: '1h' }],
    };
    const r = await cli(['check-config', '--config', writeConfig('bad.yaml', bad)]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('tokens.max_ttl: must be <= 15m');
    expect(r.stderr).toMatch(/tokens\.key_overlap: must be >= tokens\.max_ttl \+ tokens\.leeway/);
    expect(r.stderr).toMatch(/policies\[1\]\.max_ttl: must be <= /);
  });

  it('reports YAML syntax errors and a missing file without a stack trace', async () => {
    const syntax = await cli(['check-config', '--config', writeConfig('syntax.yaml', 'issuer: [unclosed\n')]);
    expect(syntax.code).toBe(78);
    expect(syntax.stderr).not.toMatch(/\n\s+at /);
    const missing = await cli(['check-config'], { JIT_CONFIG: join(dir, 'nope.yaml') });
    expect(missing.code).toBe(78);
    expect(missing.stderr).toContain('nope.yaml');
  });
});

describe('jit-broker check-config: TLS files', () => {
  it('loads the certificate, key and bundles the file names, and lists each one that does not load', async () => {
    const ca = await createCA({ trustDomain: 'example.org' });
    const server = await issueCertificate(ca, { server: true });
    const other = await issueCertificate(ca, { server: true });
    const files = { cert: join(dir, 'srv.pem'), key: join(dir, 'srv-key.pem'), bundle: join(dir, 'bundle.pem') };
    writeFileSync(files.cert, server.chainPem);
    writeFileSync(files.key, server.keyPem);
    writeFileSync(files.bundle, ca.certPem);
    const tls = { cert: files.cert, key: files.key, client_ca_bundles: { 'example.org': files.bundle } };
    const ok = await cli(['check-config', '--config', writeConfig('tls-ok.yaml', { ...baseConfig(8080), tls })]);
    expect(ok.code, ok.stderr).toBe(0);

    writeFileSync(files.key, other.keyPem); // a key that is not the certificate's
    const bad = { ...tls, client_ca_bundles: { 'example.org': files.bundle, 'other.org': join(dir, 'missing.pem') } };
    const r = await cli(['check-config', '--config', writeConfig('tls-bad.yaml', { ...baseConfig(8080), tls: bad })]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(`tls.client_ca_bundles.other.org ${join(dir, 'missing.pem')}: cannot read (ENOENT)`);
    expect(r.stderr).toContain(`tls.key ${files.key}: does not match the certificate in ${files.cert}`);
    expect(r.stderr).not.toContain('PRIVATE KEY');
  });
});

describe('jit-broker serve', () => {
  it('exits with a clear message (no stack) when its port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const { port } = blocker.address() as AddressInfo;
    try {
      const r = await cli(['serve', '--config', writeConfig('taken.yaml', baseConfig(port))]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`jit-broker: cannot listen on 127.0.0.1:${port}: the address is already in use`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    } finally {
      blocker.close();
    }
  });

  it('serves task tokens from a config file (JIT_CONFIG, env overrides) and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const cfg = { ...baseConfig(1), listen: { host: '127.0.0.1', port: 1 } };
    const path = writeConfig('serve.yaml', cfg);
    // JIT_CONFIG names the file; PORT and JIT_ISSUER override what it says.
    const url = `http://127.0.0.1:${port}`;
    const broker = await spawnCli(['serve'], {
      label: 'cli-serve',
      env: { JIT_CONFIG: path, PORT: String(port), JIT_ISSUER: url, LOG_LEVEL: 'info' },
      ready: () => fetch(`${url}/readyz`).then((r) => r.status === 200, () => false),
    });
    const token = await issuer.mintServiceAccountToken({ cluster: 'ops', namespace: 'ops', serviceAccount: 'runner', audience: 'jit-broker', ttlSeconds: 600 });
    const res = await postJson(`${url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent: { audience: 'api.ops', actions: ['read'], purpose: 'cli test' } });
    expect(res.status).toBe(201);
    expect(res.json.workload).toBe('k8s://ops/ns/ops/sa/runner');
    const metadata = (await (await fetch(`${url}/.well-known/oauth-authorization-server`)).json()) as { issuer: string };
    expect(metadata.issuer).toBe(url);

    expect(await broker.stop()).toBe(0);
    const logs = broker.output();
    // Logs are JSON lines and never carry a token.
    expect(logs).toContain('"msg":"task token issued"');
    expect(logs).not.toContain(token.split('.')[2]);
    expect(logs).not.toContain((res.json.access_token as string).split('.')[2]);
  }, 40_000);

  it('--port and --host override listen.port/listen.host (and PORT); bad values are usage errors', async () => {
    const port = await freePort();
    // The file's address cannot be bound (TEST-NET-1) and PORT names another port: the flags win.
    const path = writeConfig('flags.yaml', { ...baseConfig(1), listen: { host: '192.0.2.1', port: 1 } });
    const url = `http://127.0.0.1:${port}`;
    const broker = await spawnCli(['serve', '--config', path, '--port', String(port), '--host', '127.0.0.1'], {
      label: 'cli-serve-flags',
      env: { PORT: '1', JIT_ISSUER: url, LOG_LEVEL: 'warn' },
      ready: () => fetch(`${url}/healthz`).then((r) => r.status === 200, () => false),
    });
    expect(await broker.stop()).toBe(0);

    for (const bad of [['--port', '65536'], ['--port=-1'], ['--port', '80x'], ['--port', ''], ['--host', 'http://127.0.0.1'], ['--host', '127.0.0.1:80'], ['--host', '']]) {
      const r = await cli(['serve', '--config', path, ...bad]);
      expect(r.code, bad.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/jit-broker serve: --(port|host) must be/);
    }
  }, 40_000);
});
