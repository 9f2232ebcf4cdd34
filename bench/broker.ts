/**
 * The broker under load runs as its own process, through the real CLI (`serve --config`), so its
 * CPU can be read from /proc apart from the load generator's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';

/** Client TLS settings: the CA to trust the broker with, and optionally a client certificate. */
export interface ClientTls {
  ca: string;
  cert?: string;
  key?: string;
}

export interface BrokerProcess {
  url: string;
  pid: number;
}

/** utime + stime of a process in seconds (Linux /proc). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * One request on its own connection; `tls` verifies the broker's certificate (rejectUnauthorized
 * stays on). The body is JSON unless `headers` says otherwise.
 */
export function requestJson(
  url: string,
  opts: { method?: string; body?: string; headers?: Record<string, string>; tls?: ClientTls } = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
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
          resolve({ status: res.statusCode ?? 0, json });
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

async function waitReady(child: ChildProcess, url: string, tls: ClientTls | undefined): Promise<void> {
  for (let i = 0; i <= 100; i++) {
    if (child.exitCode !== null) throw new Error(`broker exited with code ${child.exitCode} before it was ready`);
    const ok = await requestJson(`${url}/readyz`, tls ? { tls } : {}).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('broker did not become ready');
}

/**
 * Runs `fn` against a broker started with `config` (written to DIR/NAME.yaml), and stops the
 * broker afterwards whatever happens. `tls` is what the readiness probe trusts (HTTPS brokers).
 */
export async function withBroker<T>(
  opts: { name: string; dir: string; url: string; config: Record<string, unknown>; tls?: ClientTls },
  fn: (broker: BrokerProcess) => Promise<T>,
): Promise<T> {
  const configPath = join(opts.dir, `${opts.name}.yaml`);
  writeFileSync(configPath, stringify(opts.config));
  // BENCH_PROFILE=dir writes a V8 CPU profile of each broker there (open it in Chrome DevTools).
  const profileDir = process.env.BENCH_PROFILE;
  const profile = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', configPath], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (profileDir) console.error(`broker "${opts.name}" is pid ${child.pid}: its profile is ${profileDir}/CPU.*.${child.pid}.*.cpuprofile`);
  try {
    await waitReady(child, opts.url, opts.tls);
    return await fn({ url: opts.url, pid: child.pid! });
  } finally {
    await stop(child);
  }
}
