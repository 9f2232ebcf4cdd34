/**
 * The production command, as an operator runs it: `jit-broker check-config` and `jit-broker serve`
 * as real processes, with a YAML file, the harness's redis-server and a real local OIDC issuer.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createCA, issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { postJson } from '../helpers/broker.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const run = promisify(execFile);
const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const dir = mkdtempSync(join(tmpdir(), 'jit-cli-'));
let issuer: OidcIssuer;
let child: ChildProcess | undefined;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
});
afterAll(async () => {
  if (child?.pid && child.exitCode === null) child.kill('SIGKILL');
  await issuer?.close();
});

function writeConfig(name: string, config: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof config === 'string' ? config : stringify(config));
  return path;
}

const baseConfig = (port: number) => ({
  issuer: `http://127.0.0.1:${port}`,
  listen: { host: '127.0.0.1', port },
  store: { kind: 'redis', url: redisUrl(), key_prefix: uniquePrefix('cli') },
  tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
  attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'ops' } }] } },
  policies: [{ name: 'ops', workloads: ['k8s://ops/ns/ops/sa/*'], audiences: ['api.ops'], actions: ['read'] }],
});

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
    child = spawn(process.execPath, [...CLI, 'serve'], {
      env: { ...process.env, JIT_CONFIG: path, PORT: String(port), JIT_ISSUER: `http://127.0.0.1:${port}`, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let logs = '';
    child.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ready = await fetch(`${url}/readyz`).then((r) => r.status === 200).catch(() => false);
      if (ready) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`broker did not become ready:\n${logs}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const token = await issuer.mintServiceAccountToken({ cluster: 'ops', namespace: 'ops', serviceAccount: 'runner', audience: 'jit-broker', ttlSeconds: 600 });
    const res = await postJson(`${url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent: { audience: 'api.ops', actions: ['read'], purpose: 'cli test' } });
    expect(res.status).toBe(201);
    expect(res.json.workload).toBe('k8s://ops/ns/ops/sa/runner');
    const metadata = (await (await fetch(`${url}/.well-known/oauth-authorization-server`)).json()) as { issuer: string };
    expect(metadata.issuer).toBe(url);

    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Logs are JSON lines and never carry a token.
    expect(logs).toContain('"msg":"task token issued"');
    expect(logs).not.toContain(token.split('.')[2]);
    expect(logs).not.toContain((res.json.access_token as string).split('.')[2]);
  }, 40_000);
});
