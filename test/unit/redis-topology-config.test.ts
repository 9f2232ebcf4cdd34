/**
 * The store's Redis topology settings (config schema) and what the connection factory makes of
 * them (grants/redis-connection.ts): exactly one of url / sentinel / cluster, passwords from a
 * file or the environment (never both, never in what is logged), the CA read at start.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { applyEnv, parseConfig } from '../../src/config/load.js';
import { describeRedis, redisConnectionFromConfig, type RedisConnectionSpec } from '../../src/grants/redis-connection.js';
import { configProblems as problems } from '../helpers/config.js';

const SECRET = 'a-publication-secret-of-32-chars-or-more';
const base = {
  issuer: 'https://broker.example.com',
  tokens: { key_publication_secret: SECRET },
  policies: [{ name: 'r', workloads: ['spiffe://td/*'], audiences: ['a'], actions: ['read'] }],
};
const dir = mkdtempSync(join(tmpdir(), 'jit-redis-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const redisStore = (cfg: Record<string, unknown>) => {
  const store = parseConfig({ ...base, store: { kind: 'redis', ...cfg } }).store;
  if (store.kind !== 'redis') throw new Error('not a redis store');
  return store;
};

describe('store topology settings', () => {
  it('takes one server, a sentinel group or a cluster', () => {
    expect(redisStore({ url: 'rediss://jit-broker@redis.internal:6380', tls: { ca_file: '/etc/jit/redis-ca.pem' } })).toMatchObject({ url: 'rediss://jit-broker@redis.internal:6380' });
    expect(redisStore({ sentinel: { nodes: ['s1:26379', '[::1]:26379'], master_name: 'jit' }, username: 'jit-broker' }).sentinel).toEqual({
      nodes: ['s1:26379', '[::1]:26379'],
      master_name: 'jit',
      tls: false,
    });
    expect(redisStore({ cluster: { nodes: ['10.0.0.1:6379'], nat_map: { '10.0.0.1:6379': 'redis-0.example:6379' } } }).cluster).toEqual({
      nodes: ['10.0.0.1:6379'],
      nat_map: { '10.0.0.1:6379': 'redis-0.example:6379' },
    });
  });

  it('refuses none, several, bad addresses and settings that contradict the URL, each by its path', () => {
    const p = (store: Record<string, unknown>) => problems({ ...base, store: { kind: 'redis', ...store } });
    expect(p({})).toEqual(['store: needs exactly one of url (one server), sentinel (nodes and master_name) or cluster (nodes)']);
    expect(p({ url: 'redis://a:1', cluster: { nodes: ['a:1'] } })).toEqual(['store.cluster: give exactly one of url, sentinel and cluster (found url and cluster)']);
    expect(p({ cluster: { nodes: [] } })).toEqual(['store.cluster.nodes: must name at least one node']);
    expect(p({ cluster: { nodes: ['a:99999', 'no-port', 'a b:1'] } })).toEqual([
      'store.cluster.nodes[0]: must have a port from 1 to 65535',
      'store.cluster.nodes[1]: must be host:port (an IPv6 address in brackets)',
      'store.cluster.nodes[2]: must be host:port (an IPv6 address in brackets)',
    ]);
    expect(p({ sentinel: { nodes: ['s:26379'] } })[0]).toMatch(/^store\.sentinel\.master_name: /);
    expect(p({ url: 'redis://u:pw@a:1', username: 'v', password_file: '/x', tls: {} })).toEqual([
      'store.username: is given in store.url too: give it once',
      'store.password_file: store.url carries a password too: give it once',
      'store.tls: needs a rediss:// url (TLS)',
    ]);
  });

  it('REDIS_URL replaces the topology of the file with one server', () => {
    const raw = applyEnv({ ...base, store: { kind: 'redis', cluster: { nodes: ['a:1'] }, key_prefix: 'x:' } }, { REDIS_URL: 'redis://127.0.0.1:6390' });
    expect(parseConfig(raw).store).toEqual({ kind: 'redis', url: 'redis://127.0.0.1:6390', key_prefix: 'x:', command_timeout: 1000, global_index: true });
  });
});

describe('redisConnectionFromConfig', () => {
  const pwFile = join(dir, 'password');
  writeFileSync(pwFile, 's3cret-from-file\n');
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');

  it('reads the password file (without its newline), the sentinel password from the environment and the CA', () => {
    const spec = redisConnectionFromConfig(
      redisStore({ sentinel: { nodes: ['s1:26379', '[::1]:26380'], master_name: 'jit', username: 'watcher', tls: true }, username: 'jit-broker', password_file: pwFile, tls: { ca_file: caFile, server_name: 'redis.internal' } }),
      { JIT_REDIS_SENTINEL_PASSWORD: 'sentinel-pw' },
    );
    expect(spec).toEqual({
      target: { kind: 'sentinel', sentinels: [{ host: 's1', port: 26379 }, { host: '::1', port: 26380 }], masterName: 'jit', sentinelUsername: 'watcher', sentinelPassword: 'sentinel-pw', sentinelTls: true },
      username: 'jit-broker',
      password: 's3cret-from-file',
      tls: { ca: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----', servername: 'redis.internal' },
    } satisfies RedisConnectionSpec);
    expect(describeRedis(spec)).toBe('sentinel master jit via s1:26379,[::1]:26380 (tls)');
  });

  it('takes the password from JIT_REDIS_PASSWORD, and maps NAT addresses of a cluster', () => {
    const spec = redisConnectionFromConfig(redisStore({ cluster: { nodes: ['10.0.0.1:6379'], nat_map: { '10.0.0.1:6379': 'r0.example:16379' } } }), { JIT_REDIS_PASSWORD: 'env-pw' });
    expect(spec).toEqual({ target: { kind: 'cluster', nodes: [{ host: '10.0.0.1', port: 6379 }], natMap: { '10.0.0.1:6379': { host: 'r0.example', port: 16379 } } }, password: 'env-pw' });
    expect(describeRedis(spec)).toBe('cluster 10.0.0.1:6379');
  });

  it('refuses a password given twice, and a file it cannot read, naming the setting and never the secret', () => {
    expect(() => redisConnectionFromConfig(redisStore({ cluster: { nodes: ['a:1'] }, password_file: pwFile }), { JIT_REDIS_PASSWORD: 'x' })).toThrow(
      'store.password_file and JIT_REDIS_PASSWORD are both set: give the password once',
    );
    expect(() => redisConnectionFromConfig(redisStore({ url: 'redis://:inline@a:1' }), { JIT_REDIS_PASSWORD: 'x' })).toThrow(/store\.url carries a password and so does/);
    expect(() => redisConnectionFromConfig(redisStore({ cluster: { nodes: ['a:1'] }, password_file: join(dir, 'missing') }), {})).toThrow(
      `store.password_file: cannot read ${join(dir, 'missing')} (ENOENT)`,
    );
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n');
    expect(() => redisConnectionFromConfig(redisStore({ cluster: { nodes: ['a:1'] }, password_file: empty }), {})).toThrow(`store.password_file: ${empty} is empty`);
  });

  it('describes a URL without its password', () => {
    expect(describeRedis(redisConnectionFromConfig(redisStore({ url: 'redis://jit-broker:hunter2@redis:6379/0' }), {}))).toBe('redis://jit-broker:***@redis:6379/0');
  });
});

describe('docs/production.md', () => {
  it('is linked from the README, and each of its store examples loads', () => {
    expect(readFileSync('README.md', 'utf8')).toContain('](docs/production.md)');
    const blocks = [...readFileSync('docs/production.md', 'utf8').matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((b) => b.startsWith('store:'));
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    for (const block of blocks) expect(problems({ ...base, ...(parseYaml(block) as object) }), block).toEqual([]);
  });
});
