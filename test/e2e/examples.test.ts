/**
 * The README's examples as a user runs them: `npm run dev`, its printed export line pasted into
 * two more shells, `npm run example:resource-server` in one and `npm run example:workload` in the
 * other. The workload gets the resource server's answer, ends its task and exits by itself; the
 * grant is then ended and its token refused by the resource server (introspection: inactive).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { httpsJson } from '../helpers/pki.js';
import { readFileSync } from 'node:fs';

const children: ChildProcess[] = [];

afterAll(() => {
  // each command runs as npm → tsx → node: end the process groups we started, by their PIDs
  for (const child of children) if (child.pid && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGTERM');
});

interface Running {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

/** Runs a shell command line in its own process group, collecting stdout and stderr. */
function shell(command: string, env: Record<string, string> = {}): Running {
  const child = spawn('bash', ['-c', command], { cwd: process.cwd(), env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function waitFor<T>(what: string, running: Running, find: (out: string) => T | undefined, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const found = find(running.output());
    if (found !== undefined) return found;
    if (running.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not show:\n${running.output()}`);
}

describe('examples/ against dev mode', () => {
  it('the workload starts a task, gets the resource server\'s answer with task.fetch, ends the task; the ended grant\'s token is refused', async () => {
    const dev = shell('npm run --silent dev -- --port 0');
    const exportLine = await waitFor('the export line', dev, (out) => (out.includes('Ctrl-C') ? out.split('\n').find((l) => l.trim().startsWith('export JIT_URL='))?.trim() : undefined));
    expect(exportLine).toContain('JIT_RS_CREDENTIAL=');

    // shell 2: the export line pasted, then the README's command (PORT=0: a free port, printed)
    const rs = shell(`${exportLine}; PORT=0 npm run --silent example:resource-server`);
    const reportsUrl = await waitFor('reports-api listening', rs, (out) => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1]);

    // shell 3: the workload, which must exit by itself (no timer or socket left behind)
    const workload = shell(`${exportLine}; npm run --silent example:workload`, { REPORTS_URL: reportsUrl });
    const code = await workload.exited;
    const out = workload.output();
    expect(code, out).toBe(0);

    const grant = /task started: grant (g_\S+),/.exec(out)?.[1];
    expect(grant, out).toBeDefined();
    const answer = /reports-api answered 200: (.*)/.exec(out)?.[1];
    expect(answer, out).toBeDefined();
    expect(JSON.parse(answer!)).toMatchObject({ report: '2026-q4', status: 'ready', for: 'k8s://dev/ns/demo/sa/report-builder', purpose: 'build the quarterly report' });
    expect(out).toContain(`task ended: grant ${grant}`);
    // the same token after the end: the resource server's introspection finds the grant inactive
    const after = /after the end, reports-api answered (\d+): (.*)/.exec(out);
    expect(after?.[1], out).toBe('401');
    expect(JSON.parse(after![2]!)).toMatchObject({ error: 'invalid_token' });
    expect(rs.output()).toContain(`read report 2026-q4 (task `);
    expect(rs.output()).toContain(`grant ${grant})`);

    // and the broker's record says so: the grant was ended by its holder
    const env = Object.fromEntries([...exportLine.matchAll(/(\w+)='?([^' ]+)'?/g)].map((m) => [m[1]!, m[2]!]));
    const record = await httpsJson(`${env.JIT_URL}/v1/grants/${grant}`, { ca: readFileSync(env.JIT_CA!, 'utf8'), headers: { authorization: `Bearer ${env.JIT_OPERATOR_CREDENTIAL}` } });
    expect(record.status).toBe(200);
    expect(JSON.stringify(record.json)).toContain('"status":"ended"');

    // no process printed a token
    for (const text of [dev.output(), rs.output(), out]) expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
  }, 90_000);
});
