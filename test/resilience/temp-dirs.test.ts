/**
 * The suite's temp-dir check (test/helpers/temp-check.ts) fails a run whose tests leave a
 * temporary directory behind, and removes it anyway: shown with a nested vitest run that uses
 * the suite's own global setup, once with a test that leaks a directory (holding a key file) and
 * once with one that removes its own; and that a run interrupted by a signal leaves nothing in
 * /tmp either.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { redisUrl } from '../helpers/redis.js';
import { RUN_TMP_PREFIX } from '../helpers/temp-check.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);

describe('temporary directories', () => {
  it('this run has a private TMPDIR: every temp dir a test makes is inside it', () => {
    expect(tmpdir().split('/').pop()).toMatch(new RegExp(`^${RUN_TMP_PREFIX}`));
  });

  it('a test that leaves a temp dir fails the whole run (exit code 1, the entry named) and nothing is left in /tmp; a clean run passes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-nested-tmp-'));
    try {
      // The nested run's own TMPDIR parent: a fresh directory, so what is left in it is exactly its doing.
      const parent = join(dir, 'tmp');
      mkdirSync(parent);
      writeFileSync(
        join(dir, 'vitest.config.mjs'),
        `export default { test: { root: ${JSON.stringify(dir)}, include: ['*.test.mjs'], globalSetup: [${JSON.stringify(join(ROOT, 'test/helpers/redis-global-setup.ts'))}] } };\n`,
      );
      writeFileSync(
        join(dir, 'leak.test.mjs'),
        [
          `import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';`,
          `import { tmpdir } from 'node:os';`,
          `import { join } from 'node:path';`,
          `import { it } from 'vitest';`,
          `it('makes a temp dir', () => {`,
          `  const d = mkdtempSync(join(tmpdir(), 'jit-leaky-'));`,
          `  writeFileSync(join(d, 'server-key.pem'), 'not a real key');`,
          `  if (process.env.CLEAN) rmSync(d, { recursive: true, force: true });`,
          `});`,
        ].join('\n'),
      );
      symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VITEST') && !['NODE_OPTIONS', 'TEST', 'CLEAN'].includes(k)) env[k] = v;
      env.REDIS_URL = redisUrl(); // no second redis-server: the setup takes the given one
      env.TMPDIR = parent;
      const nested = (extra: NodeJS.ProcessEnv) =>
        run(process.execPath, [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', join(dir, 'vitest.config.mjs')], {
          cwd: ROOT,
          env: { ...env, ...extra },
          timeout: 60_000,
        }).then(
          (r) => ({ code: 0, out: r.stdout + r.stderr }),
          (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
        );

      const leaky = await nested({});
      expect(leaky.out).toMatch(/1 passed/); // the test itself passed: only the check fails the run
      expect(leaky.out).toMatch(/tests left 1 temporary entry behind[^\n]*\n\s+jit-leaky-\w+/);
      expect(leaky.code).toBe(1);
      expect(readdirSync(parent)).toEqual([]); // removed anyway, key file and all

      const clean = await nested({ CLEAN: '1' });
      expect(clean.out).toMatch(/1 passed/);
      expect(clean.out).not.toMatch(/temporary entr/);
      expect(clean.code).toBe(0);
      expect(readdirSync(parent)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(existsSync(dir)).toBe(false);
  }, 120_000);
  it('a run interrupted by SIGTERM (a timeout, a CI cancel) leaves nothing in /tmp: no TMPDIR, no log directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-nested-tmp-'));
    try {
      const parent = join(dir, 'tmp');
      mkdirSync(parent);
      writeFileSync(
        join(dir, 'vitest.config.mjs'),
        `export default { test: { root: ${JSON.stringify(dir)}, include: ['*.test.mjs'], globalSetup: [${JSON.stringify(join(ROOT, 'test/helpers/redis-global-setup.ts'))}] } };\n`,
      );
      writeFileSync(join(dir, 'slow.test.mjs'), `import { it } from 'vitest';\nit('waits', () => new Promise((r) => setTimeout(r, 60_000)), 70_000);\n`);
      symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VITEST') && !['NODE_OPTIONS', 'TEST'].includes(k)) env[k] = v;
      env.REDIS_URL = redisUrl();
      env.TMPDIR = parent;
      const child = spawn(process.execPath, [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', join(dir, 'vitest.config.mjs')], { cwd: ROOT, env, stdio: 'ignore' });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      // Both of the run's directories exist once its global setup is done.
      for (const end = Date.now() + 30_000; readdirSync(parent).length < 2 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
      expect(readdirSync(parent).map((n) => n.replace(/[A-Za-z0-9]{6}$/, '')).sort()).toEqual(['jit-broker-test-logs-', RUN_TMP_PREFIX]);
      child.kill('SIGTERM');
      expect(await exited).toBe(128 + 15);
      expect(readdirSync(parent)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
