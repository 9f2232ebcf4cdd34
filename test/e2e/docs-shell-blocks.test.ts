/**
 * Every shell block of README.md and docs/*.md, as a user meets it.
 *
 * The rule the documents follow (README.md "A short tour" states it for users):
 * - A shell block is a fenced block whose language is sh, bash, shell, console or zsh. Its fence
 *   carries a tag after the language: `dev` (it runs as printed against dev mode, in a shell where
 *   the `export JIT_URL=… JIT_CA=… JIT_OPERATOR_CREDENTIAL=… JIT_RS_CREDENTIAL=…` line that
 *   `npm run dev` prints has been pasted), or `needs: <what>` (a cluster, a real issuer, Docker,
 *   a fresh clone, ...). An untagged block fails this test, naming its file and line.
 * - The `dev` blocks of one file run in document order in ONE bash session (`set -euo pipefail`),
 *   so a block may use what an earlier block of the same file set (`$TASK_TOKEN`, `$GRANT`); a
 *   file never depends on another file. All files share one dev-mode process, started as
 *   `npm run dev` starts it (the CLI's `dev` command) on a free port.
 * - `npx jit-broker …` runs this checkout's CLI from source (what it is after `npm ci`).
 * - A comment line `# → TEXT` in a block is the output it shows: the block's output must contain
 *   TEXT (`…` stands for anything). Without such a line, a block's output must hold no JSON
 *   `"error"` member: a 4xx answer printed by `curl -s` is a failure too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = resolve(import.meta.dirname, '../..');
const SHELL_LANGUAGES = new Set(['sh', 'bash', 'shell', 'console', 'zsh']);

interface ShellBlock {
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  tag: string;
  body: string;
}

/** The shell blocks of one markdown file (fences of ``` or ~~~, possibly indented in a list). */
function shellBlocks(file: string, text: string): ShellBlock[] {
  const blocks: ShellBlock[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)\s*(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang, info] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = lines[j]!.trim();
      if (close.startsWith(fence!) && close.replaceAll(fence![0]!, '') === '') break;
      body.push(lines[j]!.startsWith(indent!) ? lines[j]!.slice(indent!.length) : lines[j]!);
    }
    if (SHELL_LANGUAGES.has(lang!.toLowerCase())) blocks.push({ file, line: i + 1, tag: info!.trim(), body: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** README.md, then every docs/*.md in name order (files other helpers add included). */
function documents(): { file: string; blocks: ShellBlock[] }[] {
  const files = ['README.md', ...readdirSync(join(repo, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`)];
  return files.map((file) => ({ file, blocks: shellBlocks(file, readFileSync(join(repo, file), 'utf8')) }));
}

const isTagged = (tag: string) => tag === 'dev' || /^needs:\s*\S/.test(tag);

/** The `# → TEXT` lines of a block, as patterns (`…` matches anything). */
function expectations(body: string): RegExp[] {
  return [...body.matchAll(/#\s*→\s*(.+)$/gm)].map((m) => new RegExp(m[1]!.trim().split('…').map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[\\s\\S]*?')));
}

describe('shell block extraction', () => {
  it('finds fences with their tags and lines, indented ones and ~~~ included, and skips other languages', () => {
    const md = ['# t', '```sh dev', 'echo a', '```', '```json', '{}', '```', '- item', '  ~~~bash needs: a cluster', '  kubectl get pods', '  ~~~', '```console', '$ x', '```'].join('\n');
    expect(shellBlocks('x.md', md)).toEqual([
      { file: 'x.md', line: 2, tag: 'dev', body: 'echo a' },
      { file: 'x.md', line: 9, tag: 'needs: a cluster', body: 'kubectl get pods' },
      { file: 'x.md', line: 12, tag: '', body: '$ x' },
    ]);
    expect(isTagged('dev')).toBe(true);
    expect(isTagged('needs: Docker')).toBe(true);
    expect(isTagged('needs:')).toBe(false);
    expect(isTagged('')).toBe(false);
    expect(expectations('curl x   # → {"active":false}\n# → a … b').map(String)).toEqual(['/\\{"active":false\\}/', '/a [\\s\\S]*? b/']);
  });
});

describe('README.md and docs/*.md shell blocks', () => {
  it('every shell block is tagged `dev` or `needs: …`', () => {
    const untagged = documents()
      .flatMap((d) => d.blocks)
      .filter((b) => !isTagged(b.tag))
      .map((b) => `${b.file}:${b.line}: shell block without a tag (\`\`\`sh dev, or \`\`\`sh needs: <what it needs>)${b.tag ? `: "${b.tag}"` : ''}`);
    expect(untagged).toEqual([]);
  });

  describe('the dev blocks run as printed against one dev-mode process', () => {
    let dev: ChildProcess | undefined;
    let devOut = '';
    let exportLine = '';

    beforeAll(async () => {
      dev = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'dev', '--port', '0'], {
        cwd: repo,
        env: { ...process.env, LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      dev.stdout!.on('data', (d: Buffer) => (devOut += d.toString()));
      dev.stderr!.on('data', (d: Buffer) => (devOut += d.toString()));
      const deadline = Date.now() + 25_000;
      while (Date.now() < deadline && dev.exitCode === null && !devOut.includes('Ctrl-C')) await new Promise((r) => setTimeout(r, 100));
      exportLine = devOut.split('\n').find((l) => l.trim().startsWith('export JIT_URL='))?.trim() ?? '';
      if (!devOut.includes('Ctrl-C') || !exportLine) throw new Error(`dev mode did not start:\n${devOut}`);
    }, 30_000);

    afterAll(async () => {
      // The dev process (and anything it started) by its PID; it removes its dev CA dir on exit,
      // and if it could not, the dir is removed here.
      if (dev?.pid && dev.exitCode === null && dev.signalCode === null) {
        const exited = new Promise((r) => dev!.once('exit', r));
        process.kill(-dev.pid, 'SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (dev.exitCode === null && dev.signalCode === null) process.kill(-dev.pid, 'SIGKILL');
      }
      const caDir = /dev CA in (\S+)\)/.exec(devOut)?.[1];
      if (caDir && existsSync(caDir)) rmSync(caDir, { recursive: true, force: true });
    });

    const withDev = documents().filter((d) => d.blocks.some((b) => b.tag === 'dev'));
    it('some document has dev blocks', () => expect(withDev.map((d) => d.file)).toContain('README.md'));

    for (const { file, blocks } of withDev) {
      it(`${file}: every dev block exits 0 and shows what its comments say`, async () => {
        const runnable = blocks.filter((b) => b.tag === 'dev');
        const marker = (n: number) => `@@jit-docs-block-done ${n}@@`;
        const script = [
          'set -euo pipefail',
          exportLine,
          `npx() { if [ "$1" = jit-broker ]; then shift; "${process.execPath}" --import tsx "${repo}/src/cli/main.ts" "$@"; else command npx "$@"; fi; }`,
          ...runnable.flatMap((b, n) => [b.body, `echo; echo '${marker(n)}'`]),
        ].join('\n');
        const shell = spawn('bash', ['-c', script], { cwd: repo, env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
        let out = '';
        let err = '';
        shell.stdout.on('data', (d: Buffer) => (out += d.toString()));
        shell.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const timer = setTimeout(() => shell.pid && process.kill(-shell.pid, 'SIGKILL'), 40_000);
        const code = await new Promise<number | null>((done) => shell.on('close', done)).finally(() => clearTimeout(timer));

        // Split the output at the markers: one part per block that finished.
        const parts = out.split(/@@jit-docs-block-done \d+@@\n?/);
        const done = parts.length - 1;
        const failing = runnable[done];
        expect(code, failing ? `${file}:${failing.line}: block exited non-zero\n${failing.body}\n--- output:\n${parts[done]}\n--- stderr:\n${err}` : err).toBe(0);
        expect(done).toBe(runnable.length);
        runnable.forEach((b, n) => {
          const shown = expectations(b.body);
          const where = `${file}:${b.line}\n${b.body}\n--- output:\n${parts[n]}`;
          for (const pattern of shown) expect(parts[n], where).toMatch(pattern);
          if (!shown.some((p) => p.source.includes('"error"'))) expect(parts[n], where).not.toMatch(/"error"\s*:/);
        });
      }, 45_000);
    }
  });
});
