/**
 * Tests clean up after themselves: the run gets a private temporary directory (TMPDIR, so
 * `os.tmpdir()` in every test worker and every process a test starts points into it), and the
 * teardown fails the run if anything is left in it, naming each entry. It then removes the
 * directory whatever it holds, so a failed or interrupted test leaves nothing in /tmp (a dev
 * CA's or server's private key included). Used by the suite's global setup
 * (test/helpers/redis-global-setup.ts); test/resilience/temp-dirs.test.ts proves it fails a run.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The prefix of a run's private temporary directory. */
export const RUN_TMP_PREFIX = 'jit-test-tmp-';

/**
 * What the project's code and tests name their temporary entries (dev mode's `jit-broker-dev-`,
 * the helpers' `jit-pki-`, `jit-cli-`, ...): left behind, they fail the run. Anything else there
 * is a tool's cache (tsx keeps `tsx-<uid>`), removed with the directory without complaint.
 */
export const PROJECT_TMP_NAME = /^jit-/;

export interface TempCheck {
  dir: string;
  /**
   * Lists what is left, removes the directory, restores TMPDIR. Anything left: printed,
   * `process.exitCode` 1 and thrown (vitest 4 exits 0 on an error thrown by a global teardown).
   */
  finish(): void;
}

export function startTempCheck(): TempCheck {
  const previous = process.env.TMPDIR;
  const dir = mkdtempSync(join(tmpdir(), RUN_TMP_PREFIX));
  // Set before any test worker is forked: workers and their children inherit it.
  process.env.TMPDIR = dir;
  return {
    dir,
    finish() {
      let left: string[] = [];
      try {
        left = readdirSync(dir)
          .filter((name) => PROJECT_TMP_NAME.test(name))
          .sort();
      } finally {
        rmSync(dir, { recursive: true, force: true });
        if (previous === undefined) delete process.env.TMPDIR;
        else process.env.TMPDIR = previous;
      }
      if (left.length === 0) return;
      const message = `tests left ${left.length} temporary entr${left.length === 1 ? 'y' : 'ies'} behind (removed now; each test must remove its own, whatever the outcome):\n${left.map((name) => `  ${name}`).join('\n')}`;
      console.error(`\n${message}\n`);
      process.exitCode = 1;
      throw new Error(message);
    },
  };
}
