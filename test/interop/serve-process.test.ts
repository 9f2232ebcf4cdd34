/**
 * openid-client 6 against a real `jit-broker serve` process (the CLI from source, its own
 * config file, real Redis from the harness): discovery from an issuer with a path, then
 * introspection and revocation with the client-secret and private_key_jwt methods, and a wrong
 * secret refused at revocation. Plain HTTP on loopback (openid-client's allowInsecureRequests):
 * the TLS paths are covered in openid-client.test.ts.
 */
import { createHash } from 'node:crypto';
import { exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, issuerEntry, postJson } from '../helpers/broker.js';
import { configDir, spawnCli, stopChildren, type CliChild } from '../helpers/cli.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const RS = 'rs-db';
const RS_SECRET = 'rs-serve-secret-0123456789abcdefghijklmnop';
const intent = { audience: 'db.payments', actions: ['read'], purpose: 'interop with a serve process', task: 'serve-1' };

let oidc: OidcIssuer;
let broker: CliChild;
let rsKey: CryptoKey;
let ISSUER: string;
const files = configDir('jit-interop-serve-');

beforeAll(async () => {
  oidc = await startOidcIssuer({ alg: 'ES256' });
  const pair = await generateKeyPair('ES256');
  rsKey = pair.privateKey;
  const jwksFile = files.write('rs-db.jwks.json', JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'rs-db-1' }] }));
  const port = await freePort();
  ISSUER = `http://127.0.0.1:${port}/tenant`;
  const config = files.write('serve.yaml', {
    issuer: ISSUER,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'redis', url: redisUrl(), key_prefix: uniquePrefix('serve-interop') },
    tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
    attestation: { oidc: { issuers: [issuerEntry(oidc)] } },
    policies: [{ name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'] }],
    resource_servers: [{ name: RS, audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_SECRET).digest('hex'), jwks_file: jwksFile }],
  });
  broker = await spawnCli(['serve', '--config', config], {
    label: 'interop-serve',
    env: { LOG_LEVEL: 'info' },
    ready: () => fetch(`${ISSUER}/readyz`).then((r) => r.status === 200, () => false),
  });
}, 60_000);

afterAll(async () => {
  await broker?.stop();
  stopChildren();
  await oidc?.close();
  files.cleanup();
});

const discover = (auth: client.ClientAuth) => client.discovery(new URL(ISSUER), RS, undefined, auth, { algorithm: 'oauth2', execute: [client.allowInsecureRequests] });

async function startTask(): Promise<string> {
  const evidence = await oidc.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
  const res = await postJson(`${ISSUER}/v1/tasks`, { attestation: { kind: 'oidc', token: evidence }, intent });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.access_token as string;
}

describe('openid-client against a jit-broker serve process', () => {
  it('discovers, introspects with client_secret_post and private_key_jwt, and revokes with client_secret_basic', async () => {
    const token = await startTask();
    const post = await discover(client.ClientSecretPost(RS_SECRET));
    expect(post.serverMetadata().introspection_endpoint).toBe(`${ISSUER}/oauth2/introspect`);
    expect(await client.tokenIntrospection(post, token)).toMatchObject({ active: true, aud: 'db.payments' });
    const jwt = await discover(client.PrivateKeyJwt({ key: rsKey, kid: 'rs-db-1' }));
    expect(await client.tokenIntrospection(jwt, token)).toMatchObject({ active: true });

    // A wrong secret is refused with a Basic challenge and revokes nothing.
    const wrong = await discover(client.ClientSecretBasic('not-the-secret'));
    const refused = await client.tokenRevocation(wrong, token).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(client.WWWAuthenticateChallengeError);
    expect((refused as client.WWWAuthenticateChallengeError).cause[0]?.scheme).toBe('basic');
    expect((await client.tokenIntrospection(post, token)).active).toBe(true);

    await client.tokenRevocation(await discover(client.ClientSecretBasic(RS_SECRET)), token);
    expect((await client.tokenIntrospection(post, token)).active).toBe(false);
  });
});
