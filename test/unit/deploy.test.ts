/**
 * Static checks of what cannot run here (no Docker engine): the Dockerfile, docker-compose.yml and
 * the shipped config files must agree with the code, and the README's config example must load.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { applyEnv, loadConfig, parseConfig } from '../../src/config/load.js';
import { configWarnings } from '../../src/config/warnings.js';

const read = (path: string) => readFileSync(path, 'utf8');
const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; engines: { node: string } };

describe('deploy/Dockerfile', () => {
  const lines = read('deploy/Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));

  it('builds from Node 24 LTS images (the LTS line CI tests), within package.json engines', () => {
    const froms = lines.filter((l) => l.startsWith('FROM '));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) expect(f).toMatch(/^FROM node:24[-.\w]* AS \w+$/);
    expect(pkg.engines.node).toMatch(/^>=20/);
  });

  it('copies only paths that exist, and runs the built CLI named in package.json bin as a non-root user', () => {
    for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
      const parts = l.split(/\s+/).slice(1, -1);
      for (const src of parts) expect(existsSync(src), `${l}: ${src}`).toBe(true);
    }
    const entry = lines.find((l) => l.startsWith('ENTRYPOINT '))!;
    const argv = JSON.parse(entry.slice('ENTRYPOINT '.length)) as string[];
    expect(argv).toEqual(['node', pkg.bin['jit-broker']!.replace(/^\.\//, '')]);
    expect(lines).toContain('USER node');
    expect(lines.find((l) => l.startsWith('CMD '))).toBe('CMD ["serve"]');
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

/** The secrets docker-compose.yml takes from its environment, and test values for them. */
const COMPOSE_ENV = { JIT_REDIS_PASSWORD: 'a'.repeat(64), JIT_KEY_PUBLICATION_SECRET: 'b'.repeat(64) };

/** Compose's interpolation of `${NAME}` and `${NAME:?message}` (refuses an unset required one). */
function interpolate(value: string, env: Record<string, string>): string {
  return value.replace(/\$\{(\w+)(?::\?([^}]*))?\}/g, (_m, name: string, required: string | undefined) => {
    if (env[name] !== undefined) return env[name];
    if (required !== undefined) throw new Error(`required variable ${name} is missing a value: ${required}`);
    return '';
  });
}

describe('docker-compose.yml', () => {
  type Service = {
    build?: { context: string; dockerfile: string };
    command?: string[];
    volumes?: string[];
    environment?: Record<string, string>;
    depends_on?: Record<string, unknown>;
    healthcheck?: { test: string[] };
  };
  const compose = parseYaml(read('docker-compose.yml')) as { services: Record<string, Service> };
  const envOf = (service: Service, env: Record<string, string> = COMPOSE_ENV) =>
    Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(v, env)]));

  it('builds the broker from deploy/Dockerfile, mounts files that exist, and waits for a healthy Redis', () => {
    const broker = compose.services.broker!;
    expect(existsSync(`${broker.build!.context}/${broker.build!.dockerfile}`)).toBe(true);
    for (const v of broker.volumes ?? []) expect(existsSync(v.split(':')[0]!), v).toBe(true);
    expect(broker.depends_on).toEqual({ redis: { condition: 'service_healthy' } });
    expect(envOf(broker).REDIS_URL).toBe(`redis://jit-broker:${COMPOSE_ENV.JIT_REDIS_PASSWORD}@redis:6379`);
    expect(compose.services.redis).toBeDefined();
  });

  it('will not start without the Redis password and the key publication secret', () => {
    const { broker, redis } = compose.services;
    for (const name of Object.keys(COMPOSE_ENV)) {
      const without: Record<string, string> = { ...COMPOSE_ENV };
      delete without[name];
      expect(() => envOf(broker!, without), name).toThrow(`required variable ${name}`);
    }
    expect(() => envOf(redis!, {})).toThrow('required variable JIT_REDIS_PASSWORD');
    expect(envOf(broker!).JIT_KEY_PUBLICATION_SECRET).toBe(COMPOSE_ENV.JIT_KEY_PUBLICATION_SECRET);
  });

  it('runs Redis with the shipped ACL file: default user off, the broker as its own user', () => {
    const redis = compose.services.redis!;
    const mount = redis.volumes!.find((v) => v.startsWith('./deploy/redis/users.acl:'))!;
    expect(existsSync(mount.split(':')[0]!)).toBe(true);
    const target = mount.split(':')[1]!;
    const script = redis.command!.join(' ');
    expect(script).toContain(target);
    expect(script).toContain('@JIT_BROKER_PASSWORD_SHA256@');
    expect(script).toMatch(/exec docker-entrypoint\.sh redis-server --aclfile \/tmp\/users\.acl/);
    expect(redis.healthcheck!.test.join(' ')).toContain('--user jit-broker');
  });

  it('mounts a config that loads with the compose environment', () => {
    const broker = compose.services.broker!;
    const mount = broker.volumes!.find((v) => v.includes(broker.environment!.JIT_CONFIG!))!;
    const config = loadConfig(mount.split(':')[0]!, envOf(broker));
    expect(config.store).toMatchObject({ kind: 'redis', url: `redis://jit-broker:${COMPOSE_ENV.JIT_REDIS_PASSWORD}@redis:6379`, key_prefix: 'jit:' });
    expect(config.tokens.key_publication_secret).toBe(COMPOSE_ENV.JIT_KEY_PUBLICATION_SECRET);
    // Without the secret the shipped config does not load (the Redis store needs it).
    expect(() => loadConfig(mount.split(':')[0]!, { ...envOf(broker), JIT_KEY_PUBLICATION_SECRET: '' })).toThrow(/tokens\.key_publication_secret/);
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
    const shipped = loadConfig('deploy/broker.yaml', { JIT_KEY_PUBLICATION_SECRET: COMPOSE_ENV.JIT_KEY_PUBLICATION_SECRET });
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
    // A Cluster client's own (grants/redis-connection.ts): its slot map, read on a connection it names.
    used.add('cluster|slots');
    used.add('client|setname');
    expect([...used].sort()).toEqual([...allowed].sort());
  });
});

describe('README', () => {
  it('the configuration example loads as written, with the key publication secret from the environment', () => {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('### Configuration'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(yaml).toBeDefined();
    const config = parseConfig(applyEnv(parseYaml(yaml!) as Record<string, unknown>, { JIT_KEY_PUBLICATION_SECRET: COMPOSE_ENV.JIT_KEY_PUBLICATION_SECRET }));
    expect(config.policies.length).toBeGreaterThan(0);
    expect(config.attestation.oidc?.issuers.length).toBeGreaterThan(0);
    // A sample that works: no config check warns about it, and it shows every section, log included.
    expect(configWarnings(config)).toEqual([]);
    expect(parseYaml(yaml!)).toHaveProperty('log.level', 'info');
  });
});

describe('docs/threat-model.md', () => {
  it('exists, is linked from the README, and covers Redis read, Redis write and config access', () => {
    expect(read('README.md')).toContain('](docs/threat-model.md)');
    const page = read('docs/threat-model.md');
    for (const heading of ['Redis read access', 'Redis write access', 'Config access']) expect(page).toMatch(new RegExp(`^##+ ${heading}`, 'm'));
  });
});
