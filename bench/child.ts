/**
 * Every server under load (broker, HTTP floor, peer) runs as its own Node process, so its CPU can
 * be read from /proc apart from the load generator's (autocannon runs in the bench process).
 * Whatever happens, a child started here is stopped by its own PID before the caller goes on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';

/** Client TLS settings: the CA to trust the server with, and optionally a client certificate. */
export interface ClientTls {
  ca: string;
  cert?: string;
  key?: string;
}

/** A server under load: where it listens and which process does the work. */
export interface ServerProcess {
  url: string;
  pid: number;
}

/** utime + stime of a process in seconds (Linux /proc). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The response of `request`: status, raw text, and the text parsed as JSON (or `{raw}`). */
export interface Reply {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

/**
 * One request on its own connection; `tls` verifies the server's certificate (rejectUnauthorized
 * stays on). The body is JSON unless `headers` says otherwise.
 */
export function requestJson(
  url: string,
  opts: { method?: string; body?: string; headers?: Record<string, string>; tls?: ClientTls } = {},
): Promise<Reply> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      { method: opts.method ?? 'GET', headers: { 'content-type': 'application/json', ...opts.headers }, agent: false, timeout: 5000, ...opts.tls },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: Record<string, unknown>;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, text, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** SIGTERM and wait for the exit (a CPU profile is written then); SIGKILL if it hangs. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function waitReady(name: string, child: ChildProcess, url: string, tls: ClientTls | undefined): Promise<void> {
  for (let i = 0; i <= 150; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with code ${child.exitCode} before it was ready`);
    const ok = await requestJson(url, tls ? { tls } : {}).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not become ready`);
}

export interface NodeChild {
  /** For messages: "broker http", "floor", ... */
  name: string;
  /** Where it listens. */
  url: string;
  /** Path that answers 200 once it can serve. */
  readyPath: string;
  /** A TypeScript entry point and its arguments (run with tsx, as `npm run bench` runs this file). */
  args: string[];
  /** A built JavaScript entry point instead: run with plain node, from `cwd` (the bench's A/B of two builds). */
  compiled?: { cwd: string };
  env?: Record<string, string>;
  /** What the readiness probe trusts (HTTPS servers). */
  tls?: ClientTls;
}

/** BENCH_PROFILE=dir writes a V8 CPU profile of every child there (open it in Chrome DevTools). */
const profileDir = process.env.BENCH_PROFILE;
const profileFlags = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];

/** Runs `fn` against a Node server started as a child process, and stops it afterwards whatever happens. */
export async function withNodeChild<T>(opts: NodeChild, fn: (server: ServerProcess) => Promise<T>): Promise<T> {
  const loader = opts.compiled ? [] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...profileFlags, ...loader, ...opts.args], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...opts.env },
    ...(opts.compiled ? { cwd: opts.compiled.cwd } : {}),
  });
  const spawnFailed = new Promise<never>((_, reject) => child.once('error', reject));
  spawnFailed.catch(() => undefined); // observed below; never an unhandled rejection
  try {
    await Promise.race([waitReady(opts.name, child, `${opts.url}${opts.readyPath}`, opts.tls), spawnFailed]);
    if (profileDir) console.error(`${opts.name} is pid ${child.pid}: its profile is ${profileDir}/CPU.*.${child.pid}.*.cpuprofile`);
    return await fn({ url: opts.url, pid: child.pid! });
  } finally {
    await stop(child);
  }
}
