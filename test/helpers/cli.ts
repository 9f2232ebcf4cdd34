/**
 * The jit-broker command as a real process, for the e2e tests: run it to completion, or spawn a
 * long-running `serve` and wait until it answers; config files in a per-file scratch directory;
 * every child it started killed at the end (`stopChildren` in afterAll).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { captureChildOutput } from './log-capture.js';

const run = promisify(execFile);

/** `node --import tsx src/cli/main.ts`: the CLI from source (tests run from the repository root). */
export const CLI = ['--import', 'tsx', 'src/cli/main.ts'];

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI to completion; resolves with its exit code and output (never rejects on a
 * non-zero exit). `env` adds to (or, with `undefined` values, removes from) the test's environment.
 */
export async function cli(args: string[], env: Record<string, string | undefined> = {}, opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const childEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  try {
    const p = run(process.execPath, [...CLI, ...args], { env: childEnv, timeout: opts.timeoutMs ?? 20_000 });
    if (opts.input !== undefined) p.child.stdin!.end(opts.input);
    const { stdout, stderr } = await p;
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number | string; stdout: string; stderr: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout, stderr: err.stderr };
  }
}

/** A scratch directory for config files (YAML from objects), removed by `cleanup`. */
export function configDir(prefix = 'jit-cli-'): { dir: string; write(name: string, content: unknown): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    write(name, content) {
      const path = join(dir, name);
      writeFileSync(path, typeof content === 'string' ? content : stringify(content));
      return path;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface CliChild {
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** SIGTERM, then its exit code. */
  stop(): Promise<number | null>;
}

const children = new Set<ChildProcess>();

/**
 * Spawns the CLI (`serve --config …`, usually), its output captured for the secrets scan under
 * `label`, and waits until `readyUrl` answers 2xx (fetch; for HTTPS pass `ready` instead).
 */
export async function spawnCli(
  args: string[],
  opts: { label: string; env?: Record<string, string>; readyUrl?: string; ready?: () => Promise<boolean>; timeoutMs?: number },
): Promise<CliChild> {
  const child = spawn(process.execPath, [...CLI, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  captureChildOutput(child, opts.label);
  let logs = '';
  child.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
  const ready = opts.ready ?? (opts.readyUrl ? () => fetch(opts.readyUrl!).then((r) => r.ok, () => false) : undefined);
  if (ready) {
    const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
    while (!(await ready())) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`jit-broker ${args[0]} did not become ready:\n${logs}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    child,
    output: () => logs,
    stop() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Kills every child spawnCli started that is still running (afterAll). */
export function stopChildren(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.clear();
}
