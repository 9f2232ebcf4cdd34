/**
 * The connection factory against a real redis-server over TLS with an ACL user: the store's
 * config (rediss:// URL, CA file, user name, password file) reaches it, a CA that did not issue
 * the server's certificate and a wrong password are refused (fail closed), and what is reported
 * carries no password.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { probeConfig } from '../../src/config/probe.js';
import { createCA, issueCertificate } from '../../src/dev/dev-ca.js';
import { connectRedis, redisConnectionFromConfig } from '../../src/grants/redis-connection.js';
import { createRedisGrantStore } from '../../src/grants/redis-store.js';
import { silentLogger } from '../../src/log.js';
import { scratchDir } from '../helpers/pki.js';
import { freePort, startRedisServer, TEST_KEY_PUBLICATION_SECRETS, type RedisProcess } from '../helpers/redis.js';

const PASSWORD = 'tls-acl-password-0123456789';
const files = scratchDir('jit-redis-tls-');
let redis: RedisProcess;
let tlsPort: number;
let caFile: string;
let otherCaFile: string;

beforeAll(async () => {
  const ca = await createCA({ trustDomain: 'redis.test' });
  const other = await createCA({ trustDomain: 'redis.test', commonName: 'not the redis CA' });
  const server = await issueCertificate(ca, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
  caFile = files.write('ca.pem', ca.certPem);
  otherCaFile = files.write('other-ca.pem', other.certPem);
  tlsPort = await freePort();
  redis = await startRedisServer({
    args: [
      '--tls-port', String(tlsPort),
      '--tls-cert-file', files.write('server.pem', server.chainPem),
      '--tls-key-file', files.write('server-key.pem', server.keyPem),
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
