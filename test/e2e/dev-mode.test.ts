import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { httpsJson } from '../helpers/pki.js';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
let child: ChildProcess | undefined;

afterAll(async () => {
  // npm → node: end the whole process group we started, by its PID, and wait for npm's exit
  // (after the broker's: it removes its temp dir on the way out).
  if (child?.pid && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child!.once('exit', resolve));
    process.kill(-child.pid, 'SIGTERM');
    await exited;
  }
});

/** Starts `npm run dev -- --port 0` exactly as the README says and waits for its three printed curls. */
async function startDev(): Promise<{ curls: string[]; output: () => string }> {
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
    const lines = out.split('\n').filter((l) => l.trim().startsWith('curl '));
    if (lines.length === 3 && out.includes('Ctrl-C')) return { curls: lines.map((l) => l.trim()), output: () => out };
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`dev mode printed no curl:\n${out}`);
}

describe('npm run dev', () => {
  it('starts without Redis or config and its printed curls obtain verifiable task tokens (platform token, then mTLS) and query as the demo operator', async () => {
    const { curls, output } = await startDev();
    const base = /listening on (https:\/\/\S+)/.exec(output())![1]!;
    const dir = /dev CA in (\S+)\)/.exec(output())![1]!;
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
    const jwks = (await httpsJson(`${base}/.well-known/jwks.json`, { ca })).json as unknown as JSONWebKeySet;
    const verify = (token: string) => jwtVerify(token, createLocalJWKSet(jwks), { issuer: base, audience: 'reports-api', typ: 'at+jwt' });

    const platform = JSON.parse((await run('bash', ['-c', curls[0]!], { timeout: 10_000 })).stdout) as Record<string, any>;
    expect(platform.workload).toBe('k8s://dev/ns/demo/sa/report-builder');
    expect(platform.expires_in).toBe(300);
    const { payload } = await verify(platform.access_token);
    expect(payload).toMatchObject({ sub: 'k8s://dev/ns/demo/sa/report-builder', scope: 'read', grant: platform.grant });
    expect(payload.cnf).toBeUndefined();

    const mtls = JSON.parse((await run('bash', ['-c', curls[1]!], { timeout: 10_000 })).stdout) as Record<string, any>;
    expect(mtls.workload).toBe('spiffe://example.org/ns/demo/sa/report-builder');
    const bound = (await verify(mtls.access_token)).payload;
    const der = new X509Certificate(readFileSync(join(dir, 'workload.pem'))).raw;
    expect(bound.cnf).toEqual({ 'x5t#S256': createHash('sha256').update(der).digest('base64url') });

    // the demo operator (admin) is authenticated by its printed credential, and only by it
    const operator = JSON.parse((await run('bash', ['-c', curls[2]!], { timeout: 10_000 })).stdout) as Record<string, any>;
    expect(operator.error).toBeUndefined();
    // the two grants just issued, newest first: the mTLS one, then the platform-token one
    expect((operator.grants as { grant: string }[]).map((g) => g.grant)).toEqual([mtls.grant, platform.grant]);
    const anonymous = JSON.parse((await run('bash', ['-c', curls[2]!.replace(/-H 'Authorization: Bearer [^']+' /, '')], { timeout: 10_000 })).stdout) as Record<string, any>;
    expect(anonymous.error).toBe('invalid_client');
    // the printed CLI line works as the demo operator too (jit-broker from source here)
    const exportLine = output().split('\n').find((l) => l.trim().startsWith('export JIT_URL='))!.trim();
    const cli = `${process.execPath} --import tsx src/cli/main.ts`;
    const keys = await run('bash', ['-c', `${exportLine}; ${cli} keys ls`], { timeout: 20_000 });
    expect(keys.stdout).toMatch(/^KID +ALG +CREATED/m);
    // and the README's operator curl, with that environment
    const readmeCurl = 'curl -s --cacert "$JIT_CA" -H "Authorization: Bearer $JIT_OPERATOR_CREDENTIAL" "$JIT_URL/v1/grants?status=active"';
    const listed = JSON.parse((await run('bash', ['-c', `${exportLine}; ${readmeCurl}`], { timeout: 10_000 })).stdout) as { grants: { grant: string }[] };
    expect(listed.grants.map((g) => g.grant)).toEqual([mtls.grant, platform.grant]);

    // the export line carries the demo resource server's credential (audience reports-api): the
    // introspection and revocation curls of the README's tour and docs/http-api.md run with it as
    // printed there (test/e2e/docs-shell-blocks.test.ts runs every such block in its page's order)
    expect(exportLine).toMatch(/ JIT_RS_CREDENTIAL=[A-Za-z0-9_-]{43}$/);
    const introspectCurl = 'curl -s --cacert "$JIT_CA" -H "Authorization: Bearer $JIT_RS_CREDENTIAL" "$JIT_URL/oauth2/introspect" --data-urlencode "token=$TASK_TOKEN"';
    const revokeCurl = 'curl -s --cacert "$JIT_CA" -H "Authorization: Bearer $JIT_RS_CREDENTIAL" "$JIT_URL/oauth2/revoke" --data-urlencode "token=$TASK_TOKEN"';
    for (const doc of ['README.md', 'docs/http-api.md']) {
      expect(readFileSync(doc, 'utf8'), doc).toContain(introspectCurl);
      expect(readFileSync(doc, 'utf8'), doc).toContain(revokeCurl);
    }
    // the token goes through the environment, never the command line
    const asRs = (cmd: string) => run('bash', ['-c', `${exportLine}; ${cmd}`], { timeout: 10_000, env: { ...process.env, TASK_TOKEN: platform.access_token } });
    const active = JSON.parse((await asRs(introspectCurl)).stdout) as Record<string, any>;
    expect(active).toMatchObject({ active: true, grant: platform.grant, aud: 'reports-api', sub: 'k8s://dev/ns/demo/sa/report-builder' });
    expect(JSON.parse((await asRs(revokeCurl)).stdout)).toEqual({});
    expect(JSON.parse((await asRs(introspectCurl)).stdout)).toEqual({ active: false });
    // the resource server's credential is not an operator's
    const rsAsOperator = await run('bash', ['-c', `${exportLine}; curl -s --cacert "$JIT_CA" -H "Authorization: Bearer $JIT_RS_CREDENTIAL" "$JIT_URL/v1/grants"`], { timeout: 10_000 });
    expect((JSON.parse(rsAsOperator.stdout) as { error?: string }).error).toBe('invalid_client');

    // dev mode never prints a token
    expect(output()).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
    // and removes its throwaway CA when stopped
    process.kill(-child!.pid!, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (existsSync(dir) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(dir)).toBe(false);
  }, 40_000);
});
