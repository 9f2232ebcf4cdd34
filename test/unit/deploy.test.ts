/**
 * Static checks of what cannot run here (no Docker engine): the Dockerfile, docker-compose.yml and
 * the shipped config files must agree with the code, and the README's config example must load.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { applyEnv, loadConfig, parseConfig } from '../../src/config/load.js';
import { configWarnings } from '../../src/config/warnings.js';
import { COMPOSE_FILE, dockerfileInstructions, healthcheckCommand, mount, readCompose, serviceEnv } from '../helpers/compose.js';
import { envReads, isRead } from '../helpers/env-reads.js';

const read = (path: string) => readFileSync(path, 'utf8');
const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; engines: { node: string } };
/** A key publication secret for loading the shipped configs. */
const SECRET = { JIT_KEY_PUBLICATION_SECRET: 'b'.repeat(64) };

describe('deploy/Dockerfile', () => {
  const lines = dockerfileInstructions();
  const stages = lines.filter((l) => l.startsWith('FROM '));
  const stageNames = stages.map((f) => / AS (\w+)$/.exec(f)?.[1]);
  /** The runtime stage's instructions: from its FROM to the end (it is the last stage, the default target). */
  const runtime = lines.slice(lines.indexOf(stages[stages.length - 1]!));

  it('builds from Node 24 LTS images (the LTS line CI tests), within package.json engines; each stage from an image or an earlier stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    stages.forEach((f, i) => {
      const from = /^FROM (\S+) AS \w+$/.exec(f)?.[1];
      expect(from, f).toBeDefined();
      if (!stageNames.slice(0, i).includes(from)) expect(f).toMatch(/^FROM node:24[-.\w]* AS \w+$/);
    });
    expect(pkg.engines.node).toMatch(/^>=20/);
  });

  it('copies only paths that exist, and runs the built CLI named in package.json bin as a non-root user', () => {
    for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
      const parts = l.split(/\s+/).slice(1, -1);
      for (const src of parts) expect(existsSync(src), `${l}: ${src}`).toBe(true);
    }
    const entry = runtime.find((l) => l.startsWith('ENTRYPOINT '))!;
    const argv = JSON.parse(entry.slice('ENTRYPOINT '.length)) as string[];
    expect(argv).toEqual(['node', pkg.bin['jit-broker']!.replace(/^\.\//, '')]);
    expect(runtime).toContain('USER node');
    expect(runtime.find((l) => l.startsWith('CMD '))).toBe('CMD ["serve"]');
    expect(healthcheckCommand()[0]).toBe('node'); // exec form; test/e2e/compose-stack.test.ts runs it
  });

  it('the runtime stage holds production dependencies and the compiled output only', () => {
    expect(stageNames[stageNames.length - 1]).toBe('runtime');
    expect(runtime.filter((l) => /^RUN .*npm (ci|install)\b/.test(l))).toEqual([expect.stringContaining('npm ci --omit=dev --ignore-scripts')]);
    const copies = runtime.filter((l) => l.startsWith('COPY '));
    expect(copies).toEqual(['COPY package.json package-lock.json ./', 'COPY --from=build /app/dist ./dist']);
  });

  it('keeps every runtime dependency in the runtime stage (npm ci --omit=dev): hono is a peer dependency, not a dev-only one', () => {
    const full = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; peerDependencies?: Record<string, string> };
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { dev?: boolean; peer?: boolean }> };
    const runtime = [...Object.keys(full.dependencies), ...Object.keys(full.peerDependencies ?? {})];
    expect(runtime).toContain('hono');
    for (const name of runtime) {
      const entry = lock.packages[`node_modules/${name}`];
      expect(entry, name).toBeDefined();
      expect(entry!.dev, `${name} is dev-only in package-lock.json: npm ci --omit=dev would drop it`).not.toBe(true);
    }
  });
});

describe('docker-compose.yml', () => {
  const compose = readCompose();
  const services = Object.entries(compose.services);
  const svc = (name: string) => compose.services[name]!;
  const brokerReads = envReads('src');
  const exampleReads = envReads('examples');

  it('passes `docker-compose config -q` (the default services and the examples profile), with no variable set', () => {
    const found = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
    expect(found.error, 'docker-compose is missing: apt-get install -y docker-compose (.ci/run installs it)').toBeUndefined();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('JIT_')));
    for (const args of [['config', '-q'], ['--profile', 'examples', 'config', '-q']]) {
      const r = spawnSync('docker-compose', ['-f', COMPOSE_FILE, ...args], { encoding: 'utf8', env, timeout: 60_000 });
      expect(r.status, `docker-compose ${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).not.toMatch(/WARN/i);
    }
  });

  it('builds from build contexts, Dockerfiles and stages that exist', () => {
    const built = services.filter(([, s]) => s.build);
    expect(built.map(([n]) => n).sort()).toEqual(['broker', 'demo-issuer', 'report-builder', 'reports-api']);
    for (const [name, s] of built) {
      const { context, dockerfile, target } = s.build!;
      expect(existsSync(join(context, dockerfile)), `${name}: ${dockerfile}`).toBe(true);
      const stagesOf = dockerfileInstructions(join(context, dockerfile)).filter((l) => l.startsWith('FROM ')).map((l) => / AS (\w+)$/.exec(l)?.[1]);
      expect(stagesOf, `${name}: target ${target}`).toContain(target);
    }
    expect(svc('broker').build!.target).toBe('runtime');
    expect(svc('demo-issuer').build).toEqual(svc('broker').build);
  });

  it('mounts files that exist and volumes that are declared; a named volume a service writes is a directory the image gives its user', () => {
    const nodeDirs = dockerfileInstructions().flatMap((l) => (/^RUN install -d -o node -g node (.+)$/.exec(l)?.[1] ?? '').split(/\s+/).filter(Boolean));
    for (const [name, s] of services) {
      for (const v of s.volumes ?? []) {
        const m = mount(v);
        if (!m.named) expect(existsSync(m.source), `${name}: ${v}`).toBe(true);
        else {
          expect(Object.keys(compose.volumes ?? {}), `${name}: ${v}`).toContain(m.source);
          if (s.build && !m.readOnly) expect(nodeDirs, `${name}: ${v}`).toContain(m.target);
        }
      }
    }
  });

  it("sets only environment variables its programs read: the broker's (src/) for the broker and the demo issuer, the examples' for the examples", () => {
    for (const [name, s] of services) {
      const reads = s.profiles?.includes('examples') ? exampleReads : brokerReads;
      for (const key of Object.keys(s.environment ?? {})) {
        if (name === 'redis') expect(svc('redis').command!.join(' '), key).toContain(`$$${key}`);
        else expect(isRead(key, reads), `${name}: ${key} is read by nothing`).toBe(true);
      }
    }
  });

  it('works with no variable set (demo defaults) and takes the Redis password and the key publication secret from the environment when set', () => {
    const broker = svc('broker');
    expect(serviceEnv(broker).REDIS_URL).toBe('redis://jit-broker:jit-demo-redis-password@redis:6379');
    expect(serviceEnv(broker).JIT_KEY_PUBLICATION_SECRET!.length).toBeGreaterThanOrEqual(32);
    const env = { JIT_REDIS_PASSWORD: 'a'.repeat(64), JIT_KEY_PUBLICATION_SECRET: 'b'.repeat(64) };
    expect(serviceEnv(broker, env)).toMatchObject({ REDIS_URL: `redis://jit-broker:${env.JIT_REDIS_PASSWORD}@redis:6379`, JIT_KEY_PUBLICATION_SECRET: env.JIT_KEY_PUBLICATION_SECRET });
    expect(serviceEnv(svc('redis'), env).JIT_REDIS_PASSWORD).toBe(env.JIT_REDIS_PASSWORD);
    expect(serviceEnv(svc('redis')).JIT_REDIS_PASSWORD).toBe('jit-demo-redis-password');
  });

  it('runs Redis with the shipped ACL file (default user off, the broker as its own user) and append-only persistence in a volume', () => {
    const redis = svc('redis');
    const acl = mount(redis.volumes!.find((v) => v.startsWith('./deploy/redis/users.acl:'))!);
    expect(existsSync(acl.source)).toBe(true);
    const script = redis.command!.join(' ');
    expect(script).toContain(acl.target);
    expect(script).toContain('@JIT_BROKER_PASSWORD_SHA256@');
    expect(script).toMatch(/exec docker-entrypoint\.sh redis-server --aclfile \/tmp\/users\.acl /);
    const flags = script.slice(script.indexOf('redis-server '));
    expect(flags).toMatch(/ --appendonly yes\b/);
    expect(flags).toMatch(/ --appendfsync everysec\b/);
    const dir = / --dir (\S+)/.exec(flags)?.[1];
    expect(redis.volumes!.map(mount)).toContainEqual({ source: 'redis-data', target: dir, readOnly: false, named: true });
    expect(redis.healthcheck!.test.join(' ')).toContain('--user jit-broker');
    expect(redis.ports).toBeUndefined();
  });

  it('starts the broker after a healthy Redis and demo issuer, and publishes ports on loopback only', () => {
    expect(svc('broker').depends_on).toEqual({ redis: { condition: 'service_healthy' }, 'demo-issuer': { condition: 'service_healthy' } });
    for (const [name, s] of services) for (const p of s.ports ?? []) expect(p, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('mounts a config that loads with the compose environment, warns of nothing, and trusts the demo issuer as the compose file runs it', () => {
    const broker = svc('broker');
    const env = serviceEnv(broker);
    const configMount = mount(broker.volumes!.find((v) => v.includes(`:${env.JIT_CONFIG}:`))!);
    expect(configMount.source).toBe('./deploy/compose/broker.yaml');
    const config = loadConfig(configMount.source, env);
    expect(config.store).toMatchObject({ kind: 'redis', url: 'redis://jit-broker:jit-demo-redis-password@redis:6379', key_prefix: 'jit:' });
    expect(config.tokens.key_publication_secret).toBe(env.JIT_KEY_PUBLICATION_SECRET);
    expect(configWarnings(config)).toEqual([]);
    // Without the secret the shipped config does not load (the Redis store needs it).
    expect(() => loadConfig(configMount.source, { ...env, JIT_KEY_PUBLICATION_SECRET: '' })).toThrow(/tokens\.key_publication_secret/);

    // The demo issuer: the issuer, audience and key set file the config names are the ones its command gives.
    const command = svc('demo-issuer').command!;
    const flag = (name: string) => command[command.indexOf(name) + 1];
    expect(command[0]).toBe('demo-issuer');
    const [issuer] = config.attestation.oidc!.issuers;
    expect(issuer).toMatchObject({ issuer: flag('--issuer'), audiences: [flag('--audience')], keys: { source: 'jwks_file', path: flag('--jwks-file') } });
    // ... in a volume the demo issuer writes and the broker reads
    const jwksDir = dirname(flag('--jwks-file')!);
    const writer = svc('demo-issuer').volumes!.map(mount).find((m) => m.target === jwksDir);
    const reader = broker.volumes!.map(mount).find((m) => m.target === jwksDir);
    expect(writer).toMatchObject({ named: true, readOnly: false });
    expect(reader).toMatchObject({ source: writer!.source, readOnly: true });
    // the key file in a volume of the demo issuer's own
    const keyDir = dirname(flag('--key-file')!);
    const keyVolume = svc('demo-issuer').volumes!.map(mount).find((m) => m.target === keyDir)!;
    expect(keyVolume.named).toBe(true);
    for (const [name, s] of services) if (name !== 'demo-issuer') expect((s.volumes ?? []).map(mount).map((m) => m.source), name).not.toContain(keyVolume.source);
  });

  it('documents its demo credentials in the config next to their hashes', () => {
    const text = read('deploy/compose/broker.yaml');
    const config = loadConfig('deploy/compose/broker.yaml', serviceEnv(svc('broker')));
    const documented = (label: string) => new RegExp(`^#\\s+${label}[^:]*:\\s+(\\S+)$`, 'm').exec(text)?.[1];
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    expect(sha(documented('demo operator')!)).toBe(config.operators[0]!.credential_sha256);
    expect(sha(documented('demo resource server')!)).toBe(config.resource_servers[0]!.credential_sha256);
    expect(read('docs/compose.md')).toContain(documented('demo operator')!);
    expect(read('docs/compose.md')).toContain(documented('demo resource server')!);
  });

  it('docs/compose.md names the published ports and the demo fallbacks the compose file has', () => {
    const page = read('docs/compose.md');
    for (const name of ['broker', 'demo-issuer']) {
      const [, hostPort] = /^127\.0\.0\.1:(\d+):\d+$/.exec(svc(name).ports![0]!)!;
      expect(page, name).toContain(`http://localhost:${hostPort}`);
    }
    const text = read(COMPOSE_FILE);
    for (const name of ['JIT_REDIS_PASSWORD', 'JIT_KEY_PUBLICATION_SECRET']) {
      const fallbacks = new Set([...text.matchAll(new RegExp(`\\$\\{${name}:-([^}]+)\\}`, 'g'))].map((m) => m[1]));
      expect(fallbacks.size, name).toBe(1);
      expect(page).toMatch(new RegExp(`\\| \`${name}\`[^|]*\\| \`${[...fallbacks][0]}\` \\|`));
    }
  });
});

describe('deploy/redis/users.acl', () => {
  const lines = read('deploy/redis/users.acl').split('\n').filter(Boolean);
  const user = (name: string) => lines.find((l) => l.startsWith(`user ${name} `))!.split(' ').slice(2);
  const broker = user('jit-broker');
  const allowed = new Set(broker.filter((r) => r.startsWith('+')).map((r) => r.slice(1)));

  it('holds user lines only (Redis refuses comments) and turns the default user off', () => {
    for (const l of lines) expect(l).toMatch(/^user [\w-]+ /);
    expect(user('default')).toEqual(['off', 'resetkeys', 'resetchannels', '-@all']);
  });

  it('gives the broker its prefix only, no channels, no category and no blanket grant', () => {
    const shipped = loadConfig('deploy/broker.yaml', SECRET);
    expect(shipped.store.kind === 'redis' && shipped.store.key_prefix).toBe('jit:');
    expect(broker.filter((r) => r.startsWith('~') || r.startsWith('%') || r.startsWith('&'))).toEqual(['~jit:*']);
    expect(broker).toEqual(expect.arrayContaining(['on', 'resetkeys', 'resetchannels', '-@all']));
    expect(broker.indexOf('-@all')).toBeLessThan(broker.findIndex((r) => r.startsWith('+')));
    for (const r of broker) expect(r).not.toMatch(/^(\+@|allcommands|allkeys|allchannels|nopass|>)/);
    expect(broker.filter((r) => r.startsWith('#'))).toEqual(['#@JIT_BROKER_PASSWORD_SHA256@']);
  });

  it('allows exactly the commands the broker sends: its scripts\' commands and the client calls of the Redis store', () => {
    const used = new Set<string>();
    for (const f of readdirSync('src/grants/lua')) {
      for (const m of read(`src/grants/lua/${f}`).matchAll(/redis\.p?call\(\s*'(\w+)'/g)) used.add(m[1]!.toLowerCase());
    }
    // The store's client calls, and those of the modules it hands its connection to.
    const store = ['src/grants/redis-store.ts', 'src/grants/audit-log.ts'].map(read).join('\n');
    const NOT_COMMANDS = new Set(['on', 'off', 'once', 'connect', 'disconnect', 'defineCommand', 'quit']);
    for (const m of store.matchAll(/\bredis\s*\.\s*(\w+)\(/g)) {
      const method = m[1]!;
      if (NOT_COMMANDS.has(method)) continue;
      if (method.startsWith('jit')) ['evalsha', 'eval'].forEach((c) => used.add(c));
      else used.add(method.toLowerCase());
    }
    // The commands queued on a MULTI.
    for (const chain of store.matchAll(/\.multi\(\)((?:\s*\.\w+\([^)]*\))+)/g)) for (const m of chain[1]!.matchAll(/\.(\w+)\(/g)) used.add(m[1]!.toLowerCase());
    used.add('info'); // the client's ready check (enableReadyCheck)
    // The WAIT a replicated grant write carries in its own pipeline (grants/replication.ts).
    if (read('src/grants/replication.ts').includes("['wait', ")) used.add('wait');
    // A Cluster client's own (grants/redis-connection.ts): its slot map, read on a connection it names.
    used.add('cluster|slots');
    used.add('client|setname');
    expect([...used].sort()).toEqual([...allowed].sort());
  });
});

/** The first ```yaml block after `heading` in a Markdown file, loaded as the broker loads a file (the secret from the environment). */
function yamlExample(file: string, heading: string) {
  const text = read(file);
  expect(text, `${file}: ${heading}`).toContain(heading);
  const yaml = /```yaml\n([\s\S]*?)```/.exec(text.slice(text.indexOf(heading)))?.[1];
  expect(yaml, `${file}: a yaml block after ${heading}`).toBeDefined();
  const raw = parseYaml(yaml!) as Record<string, unknown>;
  return { raw, config: parseConfig(applyEnv(raw, SECRET)) };
}

describe('README and docs/configuration.md', () => {
  it("the README's minimal config loads as written, warns of nothing, shows log.level, and points to the full reference", () => {
    const { raw, config } = yamlExample('README.md', '### Configuration');
    expect(config.policies.length).toBeGreaterThan(0);
    expect(config.attestation.oidc?.issuers.length).toBeGreaterThan(0);
    expect(configWarnings(config)).toEqual([]);
    expect(raw).toHaveProperty('log.level', 'info');
    expect(read('README.md')).toContain('](docs/configuration.md)');
  });

  it('the full reference in docs/configuration.md loads as written and warns of nothing', () => {
    const { raw, config } = yamlExample('docs/configuration.md', '## The config file');
    expect(config.attestation.oidc?.issuers.length).toBeGreaterThan(2);
    expect(configWarnings(config)).toEqual([]);
    expect(raw).toHaveProperty('log.level', 'info');
  });

  it('the compose quick start is linked from the README', () => {
    expect(read('README.md')).toContain('](docs/compose.md)');
    expect(read('docs/configuration.md')).toContain('](compose.md)');
  });
});

describe('docs/threat-model.md', () => {
  it('exists, is linked from the README, and covers Redis read, Redis write and config access', () => {
    expect(read('README.md')).toContain('](docs/threat-model.md)');
    const page = read('docs/threat-model.md');
    for (const heading of ['Redis read access', 'Redis write access', 'Config access']) expect(page).toMatch(new RegExp(`^##+ ${heading}`, 'm'));
  });
});
