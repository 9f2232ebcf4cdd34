/**
 * The dev CA on disk (`jit-broker dev-ca init|issue`): private keys are written fresh with mode
 * 0600, never through a file or symlink already there, and a workload certificate is only issued
 * inside the CA's own trust domain (the broker would refuse any other).
 */
import { existsSync, lstatSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CA_CERT_FILE, CA_KEY_FILE, initCaDir, issueToDir } from '../../src/dev/dev-ca.js';
import { scratchDir } from '../helpers/pki.js';

let files: ReturnType<typeof scratchDir>;
let caDir: string;

beforeAll(async () => {
  files = scratchDir('jit-dev-ca-');
  caDir = join(files.dir, 'ca');
  await initCaDir(caDir, 'example.org');
});

afterAll(() => files?.cleanup());

const mode = (path: string) => statSync(path).mode & 0o777;

describe('initCaDir', () => {
  it('writes the CA key with mode 0600 and refuses to replace a CA without force', async () => {
    expect(mode(join(caDir, CA_KEY_FILE))).toBe(0o600);
    expect(readFileSync(join(caDir, CA_KEY_FILE), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    await expect(initCaDir(caDir, 'example.org')).rejects.toThrow(`${join(caDir, CA_CERT_FILE)} already exists (use --force to replace the CA)`);
  });

  it('with force, replaces a world-readable key file by a fresh 0600 one', async () => {
    const dir = join(files.dir, 'force');
    await initCaDir(dir, 'example.org');
    const key = join(dir, CA_KEY_FILE);
    writeFileSync(key, 'old key', { mode: 0o644 });
    const before = readFileSync(join(dir, CA_CERT_FILE), 'utf8');
    await initCaDir(dir, 'example.org', { force: true });
    expect(mode(key)).toBe(0o600);
    expect(readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(readFileSync(join(dir, CA_CERT_FILE), 'utf8')).not.toBe(before);
  });

  it('with force, never writes the key through a symlink planted at its path', async () => {
    const dir = join(files.dir, 'planted');
    await initCaDir(dir, 'example.org');
    const target = files.write('planted-target.txt', 'not yours');
    const key = join(dir, CA_KEY_FILE);
    const targetMode = mode(target);
    rmSync(key);
    symlinkSync(target, key);
    await initCaDir(dir, 'example.org', { force: true });
    expect(readFileSync(target, 'utf8')).toBe('not yours');
    expect(mode(target)).toBe(targetMode);
    expect(lstatSync(key).isSymbolicLink()).toBe(false);
    expect(mode(key)).toBe(0o600);
  });
});

describe('issueToDir', () => {
  it('issues an X.509-SVID in the CA trust domain, its key 0600', async () => {
    const made = await issueToDir(caDir, { name: 'api', spiffeId: 'spiffe://example.org/ns/payments/sa/api' });
    expect(made).toEqual({ cert: join(caDir, 'api.pem'), key: join(caDir, 'api-key.pem'), id: 'spiffe://example.org/ns/payments/sa/api' });
    expect(mode(made.key)).toBe(0o600);
    expect(new X509Certificate(readFileSync(made.cert)).subjectAltName).toBe('URI:spiffe://example.org/ns/payments/sa/api');
  });

  it.each([
    'spiffe://other.org/ns/payments/sa/api',
    // Look-alikes of the trust domain are other trust domains.
    'spiffe://example.org.evil.com/ns/payments/sa/api',
    'spiffe://example.orgx/ns/payments/sa/api',
    'spiffe://sub.example.org/ns/payments/sa/api',
  ])('refuses %s (another trust domain) and writes nothing', async (spiffeId) => {
    const before = readdirSync(caDir).sort();
    await expect(issueToDir(caDir, { name: 'foreign', spiffeId })).rejects.toThrow(
      new Error("--spiffe-id must be in this CA's trust domain (spiffe://example.org/...): the broker refuses a SPIFFE ID from another trust domain"),
    );
    expect(readdirSync(caDir).sort()).toEqual(before);
    expect(existsSync(join(caDir, 'foreign.pem'))).toBe(false);
  });

  it('still validates the SPIFFE ID first', async () => {
    await expect(issueToDir(caDir, { name: 'bad', spiffeId: 'spiffe://example.org' })).rejects.toThrow(
      'invalid --spiffe-id: a workload SPIFFE ID must have a path (spiffe://trust-domain/path)',
    );
  });

  it('reissuing over a world-readable key file leaves a fresh 0600 key', async () => {
    const key = join(caDir, 'reissued-key.pem');
    writeFileSync(key, 'stale', { mode: 0o644 });
    expect(mode(key)).toBe(0o644);
    await issueToDir(caDir, { name: 'reissued', spiffeId: 'spiffe://example.org/ns/a/sa/b' });
    expect(mode(key)).toBe(0o600);
    expect(readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it('replaces a symlink at the key path instead of writing through it', async () => {
    const target = files.write('victim.txt', 'precious');
    const key = join(caDir, 'linked-key.pem');
    const targetMode = mode(target);
    symlinkSync(target, key);
    await issueToDir(caDir, { name: 'linked', server: true });
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(mode(target)).toBe(targetMode);
    expect(lstatSync(key).isSymbolicLink()).toBe(false);
    expect(mode(key)).toBe(0o600);
    expect(readFileSync(key, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });
});
