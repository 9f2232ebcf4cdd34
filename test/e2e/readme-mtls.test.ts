/**
 * The README's mTLS walk-through, run line for line: dev CA, server and workload certificates from
 * the CLI, `serve` with the config it writes, and the curl with --cert/--key/--cacert. Only the
 * port is changed (to a free one) and `npx jit-broker` runs this checkout's source.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/util/net.js';
import { scratchDir } from '../helpers/pki.js';

const repo = resolve(import.meta.dirname, '../..');
const work = scratchDir('jit-readme-');
let pgid: number | undefined;

/** Ends the previous run's process group (the shell and the broker it left in the background) and waits until it is gone. */
async function stopRun(): Promise<void> {
  if (!pgid) return;
  try {
    process.kill(-pgid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(-pgid, 0);
    } catch {
      break; // no process left in the group
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  pgid = undefined;
}

afterAll(async () => {
  try {
    await stopRun();
  } finally {
    work.cleanup();
  }
});

function readmeBlock(name: string): string {
  const readme = readFileSync(join(repo, 'README.md'), 'utf8');
  const block = new RegExp(`<!-- ${name} -->\\n\`\`\`sh[^\\n]*\\n([\\s\\S]*?)\`\`\`\\n<!-- /${name} -->`).exec(readme);
  if (!block) throw new Error(`README has no ${name} block`);
  return block[1]!;
}

describe('README mTLS flow', () => {
  it('gets a certificate-bound token for the SPIFFE ID, renews, introspects and ends it with the copy-paste commands; twice in the same directory, writing only where git ignores', async () => {
    // The second run is a user pasting the walk-through again (after stopping the first broker):
    // `dev-ca init --force` replaces the CA, everything else is rewritten.
    await walkThrough();
    await stopRun();
    await walkThrough();
    // Everything it wrote is under .jit-dev/, which the repository's .gitignore ignores.
    expect(readdirSync(work.dir)).toEqual(['.jit-dev']);
    const ignored = execFileSync('git', ['check-ignore', '--no-index', '.jit-dev/ca/ca-key.pem', '.jit-dev/mtls.yaml'], { cwd: repo, encoding: 'utf8' });
    expect(ignored.trim().split('\n')).toEqual(['.jit-dev/ca/ca-key.pem', '.jit-dev/mtls.yaml']);
  }, 120_000);
});

/** Runs the two README blocks once in the scratch directory (a broker left running in its process group) and checks their answers. */
async function walkThrough(): Promise<void> {
  const port = await freePort();
  const script = `${readmeBlock('mtls-flow')}\n${readmeBlock('lifecycle-flow')}`.replaceAll('8443', String(port));
  expect(script).toContain('npx jit-broker dev-ca init');
  const shell = [
    'set -e',
    `npx() { if [ "$1" = jit-broker ]; then shift; "${repo}/node_modules/.bin/tsx" "${repo}/src/cli/main.ts" "$@"; else command npx "$@"; fi; }`,
    script,
  ].join('\n');
  const child = spawn('bash', ['-c', shell], { cwd: work.dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  pgid = child.pid;
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((done) => child.on('exit', done));
  expect(code, `stdout:\n${out}\nstderr:\n${err}`).toBe(0);

  // The last four lines: the JSON answers of steps 3, 5 and 6 (the dev-ca commands print before).
  const [started, introspected, ended, after] = out.trim().split('\n').slice(-4).map((line) => JSON.parse(line) as Record<string, any>);
  const body = started!;
  expect(body.workload).toBe('spiffe://example.org/ns/payments/sa/api');
  expect(body.rule).toBe('payments-api');
  const der = new X509Certificate(readFileSync(join(work.dir, '.jit-dev', 'ca', 'api.pem'))).raw;
  const cnf = { 'x5t#S256': createHash('sha256').update(der).digest('base64url') };
  expect(decodeJwt(body.access_token as string).cnf).toEqual(cnf);
  // The lifecycle block: a renewed token (generation 2 is its grant's latest) introspects as
  // active with its binding; after the end, inactive.
  expect(introspected).toMatchObject({ active: true, sub: 'spiffe://example.org/ns/payments/sa/api', aud: 'db.payments', cnf });
  expect(ended).toMatchObject({ status: 'ended', grant: introspected!.grant });
  expect(after).toEqual({ active: false });
  // The CA key is private to its owner.
  expect(readFileSync(join(work.dir, '.jit-dev', 'ca', 'ca-key.pem'), 'utf8')).toContain('PRIVATE KEY');
}
