import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
let child: ChildProcess | undefined;

afterAll(() => {
  // npm → tsx → node: end the whole process group we started, by its PID.
  if (child?.pid && child.exitCode === null) process.kill(-child.pid, 'SIGTERM');
});

/** Starts `npm run dev -- --port 0` exactly as the README says and waits for its printed curl. */
async function startDev(): Promise<{ curl: string; output: () => string }> {
  child = spawn('npm', ['run', '--silent', 'dev', '--', '--port', '0'], {
    cwd: process.cwd(),
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 25_000;
  while (Date.now() < deadline) {
    const line = out.split('\n').find((l) => l.trim().startsWith('curl '));
    if (line) return { curl: line.trim(), output: () => out };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`dev mode printed no curl:\n${out}`);
}

describe('npm run dev', () => {
  it('starts without Redis or config and its printed curl obtains a verifiable task token', async () => {
    const { curl, output } = await startDev();
    const { stdout } = await run('bash', ['-c', curl], { timeout: 10_000 });
    const body = JSON.parse(stdout) as Record<string, any>;
    expect(body.workload).toBe('k8s://dev/ns/demo/sa/report-builder');
    expect(body.expires_in).toBe(300);
    const base = /listening on (http:\/\/\S+)/.exec(output())![1]!;
    const { payload } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${base}/.well-known/jwks.json`)), {
      issuer: base,
      audience: 'reports-api',
      typ: 'at+jwt',
    });
    expect(payload).toMatchObject({ sub: 'k8s://dev/ns/demo/sa/report-builder', scope: 'read', grant: body.grant });
    // dev mode never prints a token
    expect(output()).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
  }, 40_000);
});
