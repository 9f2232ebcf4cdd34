/**
 * `npm run dev` as a user stops it: SIGTERM or SIGINT to the npm process (a supervisor, `kill`),
 * or Ctrl-C (SIGINT to the whole foreground process group, so the broker gets it twice: from the
 * terminal and forwarded by npm). Each time the broker exits and its temp dir (dev CA and server
 * keys) is removed: no process of the group is left, no directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';

let child: ChildProcess | undefined;
let tempDir: string | undefined;

afterEach(() => {
  // Whatever the outcome: end what is left of the process group we started (by its PID), and
  // remove the temp dir a broker killed that way could not.
  if (child?.pid && groupMembers(child.pid).length > 0) process.kill(-child.pid, 'SIGKILL');
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  child = undefined;
  tempDir = undefined;
});

/** PIDs of the live (not zombie) processes in process group `pgid`, from /proc. */
function groupMembers(pgid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') pids.push(Number(name));
  }
  return pids;
}

/** Polls `done` (at most `polls` times, 100 ms apart: a bound on waiting, not an asserted duration). */
async function until(done: () => boolean, polls: number): Promise<void> {
  for (let i = 0; i < polls && !done(); i++) await new Promise((r) => setTimeout(r, 100));
}

/** `npm run dev -- --port 0` in a process group of its own; resolves once it has printed its curls. */
async function startDev(): Promise<{ npm: ChildProcess; dir: string; output: () => string }> {
  const npm = spawn('npm', ['run', 'dev', '--', '--port', '0'], {
    cwd: process.cwd(),
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child = npm;
  let out = '';
  npm.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  npm.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const output = () => out;
  await until(() => out.includes('Ctrl-C to stop') || npm.exitCode !== null, 400);
  const dir = /dev CA in (\S+)\)/.exec(out)?.[1];
  if (!dir || !out.includes('Ctrl-C to stop')) throw new Error(`dev mode did not start:\n${out}`);
  tempDir = dir;
  return { npm, dir, output };
}

describe('npm run dev stops cleanly', () => {
  for (const [how, signal, target] of [
    ['SIGTERM to the npm process', 'SIGTERM', 'npm'],
    ['SIGINT to the npm process', 'SIGINT', 'npm'],
    ['Ctrl-C (SIGINT to the process group)', 'SIGINT', 'group'],
  ] as const) {
    it(`${how}: the broker exits and its temp dir is removed`, async () => {
      const { npm, dir, output } = await startDev();
      const pgid = npm.pid!;
      expect(existsSync(`${dir}/server-key.pem`)).toBe(true);
      // npm and the broker under it (no shell or tsx wrapper that would swallow the signal).
      const members = groupMembers(pgid);
      expect(members.length, output()).toBeGreaterThanOrEqual(2);

      const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => npm.once('exit', (code, sig) => resolve([code, sig])));
      process.kill(target === 'npm' ? pgid : -pgid, signal);
      const [code, sig] = await exited;
      await until(() => groupMembers(pgid).length === 0, 200);
      expect(groupMembers(pgid), `left running:\n${output()}`).toEqual([]);
      expect(existsSync(dir), output()).toBe(false);
      // npm reports the child's end: a clean exit (0) or the signal it forwarded, never a leftover.
      expect([code === 0, sig === signal, code === 128 + (signal === 'SIGTERM' ? 15 : 2)].some(Boolean), `${code} ${sig}\n${output()}`).toBe(true);
    }, 60_000);
  }
});
