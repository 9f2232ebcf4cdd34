/**
 * The package as a user gets it: `npm pack`, the tarball installed into a fresh project outside
 * the repository, a typed usage file of every entry point (jit-broker/sdk, /verify, /hono)
 * compiled with tsc (`module`/`moduleResolution: nodenext`), then run against a dev-mode broker.
 * Network: the temporary project's dependencies come from the npm cache where it has them
 * (`--prefer-offline`), else from the registry.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevMode, type DevMode } from '../../src/dev/dev-mode.js';
import { createLogger } from '../../src/log.js';
import { httpsJson } from '../helpers/pki.js';

const run = promisify(execFile);
const repo = process.cwd();
const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
  name: string;
  version: string;
  bin: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
  dependencies: Record<string, string>;
  peerDependencies?: Record<string, string>;
};
const ENTRIES = ['sdk', 'verify', 'hono'] as const;
/** What each entry may import from the package itself (protocol/ and the SDK's own modules, no server code). */
const ALLOWED_DIRS: Record<(typeof ENTRIES)[number], string[]> = {
  sdk: ['sdk', 'protocol'],
  verify: ['verify', 'protocol'],
  hono: ['hono', 'verify', 'protocol'],
};
const versionOf = (name: string) => (JSON.parse(readFileSync(join(repo, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

let work: string;
let project: string;
let tarballFiles: string[];
let tarball: string;
let dev: DevMode | undefined;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'jit-broker-pack-'));
  // `npm pack` runs `prepare`, i.e. a clean build of dist/ (declarations and Lua scripts included).
  const packed = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: repo, timeout: 120_000, maxBuffer: 16 * 2 ** 20 });
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  tarballFiles = info!.files.map((f) => f.path);
  tarball = join(work, info!.filename);
  project = join(work, 'app');
  mkdirSync(project);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({
      name: 'jit-broker-pack-test',
      private: true,
      type: 'module',
      // What a user adds: the package (hono comes as its peer dependency) and @types/node.
      dependencies: { [pkg.name]: `file:../${info!.filename}`, '@types/node': versionOf('@types/node') },
    }),
  );
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], { cwd: project, timeout: 150_000 });
}, 300_000);

afterAll(async () => {
  await dev?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The relative and bare imports of a compiled ESM file (static and dynamic). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = new Set<string>();
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/g)) specs.add(m[1]!);
  for (const m of text.matchAll(/(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) specs.add(m[1]!);
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) specs.add(m[1]!);
  return [...specs];
}

describe('npm pack', () => {
  it('installs globally as the README says (npm install -g ./jit-broker-*.tgz: no build step, no devDependencies) and its bin runs', async () => {
    // A prefix of its own stands in for the global one; install scripts run as for a user.
    const prefix = join(work, 'global');
    await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: work, timeout: 150_000 });
    const { stdout } = await run(join(prefix, 'bin', 'jit-broker'), ['--version'], { timeout: 20_000 });
    expect(stdout.trim()).toBe(`jit-broker ${pkg.version}`);
    // Only production dependencies came with it: the compiler is not among them.
    expect(() => readFileSync(join(prefix, 'lib', 'node_modules', pkg.name, 'node_modules', 'typescript', 'package.json'))).toThrow();
  }, 200_000);

  it('ships dist/ (JavaScript, declarations, Lua scripts) and package.json, not src/, test/ or bench/', () => {
    for (const f of tarballFiles) expect(f, f).toMatch(/^(dist\/|package\.json$|README\.md$|LICENSE)/);
    const bin = pkg.bin['jit-broker']!.replace(/^\.\//, '');
    expect(tarballFiles).toContain(bin);
    expect(tarballFiles).toContain('dist/grants/lua/create-grant.lua');
    expect(tarballFiles).toContain('dist/grants/lua/renew-grant.lua');
    for (const entry of ENTRIES) {
      const target = pkg.exports[`./${entry}`] as Record<string, string>;
      // types first (TypeScript picks the first matching condition), then the code
      expect(Object.keys(target).filter((k) => k !== 'jit-broker-source')).toEqual(['types', 'default']);
      expect(tarballFiles, entry).toContain(target.types!.replace(/^\.\//, ''));
      expect(tarballFiles, entry).toContain(target.default!.replace(/^\.\//, ''));
    }
  });

  it('installs into a fresh project: the CLI runs, each entry imports only protocol/ and its own modules, and only runtime dependencies', async () => {
    const installed = join(project, 'node_modules', pkg.name);
    const cli = await run(join(project, 'node_modules', '.bin', 'jit-broker'), ['--version'], { cwd: project, timeout: 20_000 });
    expect(cli.stdout.trim()).toBe(`jit-broker ${pkg.version}`);
    const runtime = new Set([...Object.keys(pkg.dependencies), ...Object.keys(pkg.peerDependencies ?? {})]);
    for (const entry of ENTRIES) {
      const start = join(installed, 'dist', entry, 'index.js');
      const seen = new Set<string>();
      const queue = [start];
      while (queue.length) {
        const file = queue.pop()!;
        if (seen.has(file)) continue;
        seen.add(file);
        const dir = relative(join(installed, 'dist'), file).split('/')[0]!;
        expect(ALLOWED_DIRS[entry], `${entry} imports ${relative(installed, file)}`).toContain(dir);
        for (const spec of importsOf(file)) {
          if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
          else if (!spec.startsWith('node:')) {
            const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
            expect(runtime, `${relative(installed, file)} imports ${spec}`).toContain(name);
          }
        }
      }
      expect(seen.size, entry).toBeGreaterThan(2); // the walk followed the entry's imports
      // and Node resolves the entry through `exports` to its compiled code
      const resolved = await run(process.execPath, ['--input-type=module', '-e', `console.log(import.meta.resolve('${pkg.name}/${entry}'))`], { cwd: project, timeout: 20_000 });
      expect(resolved.stdout.trim()).toBe(`file://${start}`);
    }
    // nothing but the entries in `exports` is reachable
    const deep = await run(process.execPath, ['--input-type=module', '-e', `import('${pkg.name}/dist/broker.js').then(() => console.log('open'), (e) => console.log(e.code))`], { cwd: project, timeout: 20_000 });
    expect(deep.stdout.trim()).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  }, 60_000);
});

/** A typed usage file of every entry point, as an application would write it. */
const USAGE = String.raw`
import { readFileSync } from 'node:fs';
import { Hono } from 'hono';
import { requireTask, type TaskVariables } from 'jit-broker/hono';
import { BrokerClient, platformToken, TaskEndedError, type Task } from 'jit-broker/sdk';
import { createVerifier, IntentNotGranted, TaskTokenError, type VerifiedTask, type Verifier } from 'jit-broker/verify';

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined) throw new Error(name + ' is not set');
  return value;
}
const url = env('JIT_URL');
const ca = readFileSync(env('JIT_CA'), 'utf8');
const code = (e: unknown) => (e instanceof TaskTokenError ? e.code : e instanceof Error ? e.name : String(e));

// jit-broker/sdk: a workload starts a task with a platform token read from a file
const client = new BrokerClient({ url, ca, attestation: platformToken({ file: env('PLATFORM_TOKEN_FILE') }) });
const task: Task = await client.startTask(
  { audience: 'reports-api', actions: ['read'], resources: ['reports://demo/2026-q4'], purpose: 'pack test' },
  { ttl: '1m' },
);
const token = await task.token();

// jit-broker/verify: the resource server checks it (cacheTtl 0: every call asks the broker)
const verifier: Verifier = createVerifier({
  issuer: url,
  audience: 'reports-api',
  tls: { ca },
  introspection: { url: url + '/oauth2/introspect', credential: env('JIT_RS_CREDENTIAL'), cacheTtl: 0 },
});
// the declarations are real types, not any: a missing audience does not compile
// @ts-expect-error audience is required
const _untyped = () => createVerifier({ issuer: url });
const verified: VerifiedTask = await verifier.verify(token, { action: 'read', resource: 'reports://demo/2026-q4' });
const denied = await verifier.verify(token, { action: 'delete' }).then(
  () => 'accepted',
  (e: unknown) => (e instanceof IntentNotGranted ? e.code : String(e)),
);

// jit-broker/hono: the same behind the middleware
const app = new Hono<{ Variables: TaskVariables }>();
app.get('/reports/:id', requireTask({ verifier, action: 'read', resource: (c) => 'reports://demo/' + c.req.param('id') }), (c) =>
  c.json({ workload: c.get('task').workload, grant: c.get('task').grant }),
);
const ok = await app.request('/reports/2026-q4', { headers: { authorization: 'Bearer ' + token } });
const outside = await app.request('/reports/other-team', { headers: { authorization: 'Bearer ' + token } });
const missing = await app.request('/reports/2026-q4');

// the task ends: its token is dead at the resource server, and the task hands out no more
await task.end();
const afterEnd = await verifier.verify(token).then(() => 'accepted', code);
const tokenAfterEnd = await task.token().then(
  () => 'token',
  (e: unknown) => (e instanceof TaskEndedError ? 'TaskEndedError' : code(e)),
);
verifier.close();

console.log(
  JSON.stringify({
    sdk: { grant: task.grant, expiresInFuture: task.expiresAt.getTime() > Date.now(), tokenAfterEnd },
    verify: { workload: verified.workload, grant: verified.grant, actions: verified.intent.actions, introspected: verified.introspected, denied, afterEnd },
    hono: { status: ok.status, body: await ok.json(), outside: outside.status, missing: missing.status },
  }),
);
`;

describe('the installed package, typed and run', () => {
  beforeAll(async () => {
    dev = await startDevMode({ port: 0, log: createLogger({ level: 'silent' }) });
  });

  it('a usage file of every entry compiles with tsc (nodenext, strict, library declarations checked) and runs against dev mode', async () => {
    writeFileSync(join(project, 'usage.ts'), USAGE);
    writeFileSync(
      join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, types: ['node'], skipLibCheck: false, outDir: 'out' },
        files: ['usage.ts'],
      }),
    );
    const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
    await run(process.execPath, [tsc, '-p', '.'], { cwd: project, timeout: 60_000 }).catch((e: { stdout?: string }) => {
      throw new Error(`tsc failed:\n${e.stdout ?? String(e)}`);
    });

    // the platform token a pod would find in its projected service-account token file
    const ca = readFileSync(dev!.certificates.ca, 'utf8');
    const platform = (await httpsJson(`${dev!.broker.url}/dev/platform-token`, { ca })).json.raw as string;
    writeFileSync(join(project, 'platform-token'), platform, { mode: 0o600 });
    const env = {
      ...process.env,
      JIT_URL: dev!.broker.url,
      JIT_CA: dev!.certificates.ca,
      JIT_RS_CREDENTIAL: dev!.resourceServer.credential,
      PLATFORM_TOKEN_FILE: join(project, 'platform-token'),
    };
    // it must also exit by itself once the task has ended (no timer or socket left behind)
    const out = await run(process.execPath, ['out/usage.js'], { cwd: project, env, timeout: 30_000 });
    const result = JSON.parse(out.stdout) as Record<string, any>;
    const workload = 'k8s://dev/ns/demo/sa/report-builder';
    const grant = result.sdk.grant as string;
    expect(grant).toMatch(/^g_/);
    expect(result.sdk).toEqual({ grant, expiresInFuture: true, tokenAfterEnd: 'TaskEndedError' });
    expect(result.verify).toEqual({ workload, grant, actions: ['read'], introspected: true, denied: 'action_not_granted', afterEnd: 'grant_inactive' });
    expect(result.hono).toEqual({ status: 200, body: { workload, grant }, outside: 403, missing: 401 });
  }, 90_000);
});
