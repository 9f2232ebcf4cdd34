/**
 * The connection factory against a real redis-server over TLS with an ACL user: the store's
 * config (rediss:// URL, CA file, user name, password file) reaches it, a CA that did not issue
 * the server's certificate and a wrong password are refused (fail closed), and what is reported
 * carries no password. And a Redis Cluster over TLS (its bus and replication too).
 */
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { probeConfig } from '../../src/config/probe.js';
import { createCA, issueCertificate } from '../../src/dev/dev-ca.js';
import { connectRedis, redisConnectionFromConfig } from '../../src/grants/redis-connection.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { silentLogger } from '../../src/log.js';
import { makeGrant } from '../helpers/grant-store-contract.js';
import { scratchDir } from '../helpers/pki.js';
import { freePort, startRedisServer, TEST_KEY_PUBLICATION_SECRETS, type RedisProcess } from '../helpers/redis.js';
import { startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js';

const PASSWORD = 'tls-acl-password-0123456789';
const files = scratchDir('jit-redis-tls-');
let redis: RedisProcess;
let tlsPort: number;
let caFile: string;
let otherCaFile: string;
let serverCert: { certFile: string; keyFile: string };

beforeAll(async () => {
  const ca = await createCA({ trustDomain: 'redis.test' });
  const other = await createCA({ trustDomain: 'redis.test', commonName: 'not the redis CA' });
  const server = await issueCertificate(ca, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
  caFile = files.write('ca.pem', ca.certPem);
  otherCaFile = files.write('other-ca.pem', other.certPem);
  tlsPort = await freePort();
  serverCert = { certFile: files.write('server.pem', server.chainPem), keyFile: files.write('server-key.pem', server.keyPem) };
  redis = await startRedisServer({
    args: [
      '--tls-port', String(tlsPort),
      '--tls-cert-file', serverCert.certFile,
      '--tls-key-file', serverCert.keyFile,
      '--tls-ca-cert-file', caFile,
      '--tls-auth-clients', 'no',
      '--user', 'jit-broker', 'on', `>${PASSWORD}`, '~jit:*', '+@all',
    ],
  });
});

afterAll(async () => {
  await redis?.stop();
  files.cleanup();
});

const storeConfig = (o: { ca?: string; password?: string } = {}) => {
  const config = parseConfig({
    issuer: 'https://broker.example.com',
    store: { kind: 'redis', url: `rediss://127.0.0.1:${tlsPort}`, username: 'jit-broker', password_file: files.write('password', `${o.password ?? PASSWORD}\n`), tls: { ca_file: o.ca ?? caFile } },
    tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRETS[0] },
    policies: [],
  });
  return config;
};

describe('redis connection: TLS with a CA file, ACL user and password file', () => {
  it('connects as the ACL user over TLS, and the probe says so without the password', async () => {
    const config = storeConfig();
    const results = await probeConfig(config);
    expect(results).toEqual([{ target: `store rediss://127.0.0.1:${tlsPort}`, ok: true, detail: 'reachable (PONG)' }]);
    if (config.store.kind !== 'redis') throw new Error('redis store expected');
    const client = connectRedis(redisConnectionFromConfig(config.store, {}), { commandTimeoutMs: 1000, connectTimeoutMs: 2000, reconnect: false });
    try {
      await client.connect();
      expect(await client.call('ACL', 'WHOAMI')).toBe('jit-broker');
    } finally {
      client.disconnect();
    }
  });

  it('the grant store works through it', async () => {
    const config = storeConfig();
    if (config.store.kind !== 'redis') throw new Error('redis store expected');
    const store = createRedisGrantStore({ connection: redisConnectionFromConfig(config.store, {}), keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
    try {
      await expect(store.ping()).resolves.toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it('refuses a server whose certificate another CA issued, and a wrong password (fail closed)', async () => {
    const [badCa] = await probeConfig(storeConfig({ ca: otherCaFile }));
    expect(badCa).toMatchObject({ ok: false });
    expect(badCa!.detail).toMatch(/certificate/i);
    const [badPassword] = await probeConfig(storeConfig({ password: 'wrong-password-0123456789' }));
    expect(badPassword).toMatchObject({ ok: false });
    expect(badPassword!.detail).toMatch(/WRONGPASS/);
    expect(JSON.stringify([badCa, badPassword])).not.toContain('wrong-password');
  });
});

describe('redis connection: a Cluster over TLS', () => {
  let cluster: RedisCluster | undefined;
  afterAll(async () => {
    await cluster?.stop();
  });

  it('the store reaches every primary over TLS with the CA file, and refuses another CA', async () => {
    cluster = await startRedisCluster({ tls: { ...serverCert, caFile } });
    const nodes = cluster.tlsStartupNodes.map((n) => `${n.host}:${n.port}`);
    const config = (ca: string) =>
      parseConfig({
        issuer: 'https://broker.example.com',
        store: { kind: 'redis', cluster: { nodes }, tls: { ca_file: ca } },
        tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRETS[0] },
        policies: [],
      });
    const good = config(caFile);
    if (good.store.kind !== 'redis') throw new Error('redis store expected');
    const store = createRedisGrantStore({ connection: redisConnectionFromConfig(good.store, {}), keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger, keyPrefix: 'tls-cluster:' });
    try {
      const t0 = Date.now();
      const workloads = Array.from({ length: 12 }, (_, i) => `spiffe://test.example/tls/${i}`);
      for (const w of workloads) await store.createGrant(makeGrant(w, t0), { now: t0, maxActive: 10, retentionMs: 60_000 });
      // Every connection the client made went to a TLS port: it learned the TLS ports from CLUSTER SLOTS.
      const ports = new Set(store.redis instanceof Cluster ? store.redis.nodes('master').map((n) => n.options.port) : []);
      expect([...ports].sort()).toEqual(cluster.nodes.filter((n) => n.initialRole === 'primary').map((n) => n.tlsPort).sort());
    } finally {
      await store.close();
    }
    const [refused] = await probeConfig(config(otherCaFile));
    expect(refused).toMatchObject({ ok: false });
  });
});
