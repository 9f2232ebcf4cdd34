/**
 * Static checks of what cannot run here (no Docker engine): the Dockerfile, docker-compose.yml and
 * the shipped config files must agree with the code, and the README's config example must load.
 */
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig, parseConfig } from '../../src/config/load.js';

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
});

describe('docker-compose.yml', () => {
  const compose = parseYaml(read('docker-compose.yml')) as {
    services: Record<string, { build?: { context: string; dockerfile: string }; volumes?: string[]; environment?: Record<string, string>; depends_on?: Record<string, unknown> }>;
  };

  it('builds the broker from deploy/Dockerfile, mounts files that exist, and waits for a healthy Redis', () => {
    const broker = compose.services.broker!;
    expect(existsSync(`${broker.build!.context}/${broker.build!.dockerfile}`)).toBe(true);
    for (const v of broker.volumes ?? []) expect(existsSync(v.split(':')[0]!), v).toBe(true);
    expect(broker.depends_on).toEqual({ redis: { condition: 'service_healthy' } });
    expect(broker.environment?.REDIS_URL).toBe('redis://redis:6379');
    expect(compose.services.redis).toBeDefined();
  });

  it('mounts a config that loads with the compose environment', () => {
    const broker = compose.services.broker!;
    const mount = broker.volumes!.find((v) => v.includes(broker.environment!.JIT_CONFIG!))!;
    const config = loadConfig(mount.split(':')[0]!, { ...broker.environment });
    expect(config.store).toMatchObject({ kind: 'redis', url: 'redis://redis:6379' });
  });
});

describe('README', () => {
  it("the configuration example loads as written", () => {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('### Configuration'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(yaml).toBeDefined();
    const config = parseConfig(parseYaml(yaml!));
    expect(config.policies.length).toBeGreaterThan(0);
    expect(config.attestation.oidc?.issuers.length).toBeGreaterThan(0);
  });
});
