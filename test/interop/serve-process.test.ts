/**
 * openid-client 6 against a real `jit-broker serve` process (the CLI from source, its own
 * config file, real Redis from the harness): discovery from an issuer with a path, then
 * introspection and revocation with the client-secret and private_key_jwt methods, and a wrong
 * secret refused at revocation; and the RFC 8693 token exchange as a public client (plain, with
 * authorization_details, with an actor token, DPoP-bound by openid-client's own DPoP), each
 * token checked by introspection. Plain HTTP on loopback (openid-client's allowInsecureRequests):
 * the TLS paths are covered in openid-client.test.ts.
 */
import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, issuerEntry, postJson } from '../helpers/broker.js';
import { configDir, spawnCli, stopChildren, type CliChild } from '../helpers/cli.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const RS = 'rs-db';
const RS_SECRET = 'rs-serve-secret-0123456789abcdefghijklmnop';
const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const AGENT = 'k8s://test/ns/agents/sa/api';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
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
    policies: [
      { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], actors: [AGENT] },
      { name: 'agents', workloads: [AGENT], audiences: ['db.payments'], actions: ['read'] },
    ],
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

const saToken = (namespace = 'payments') => oidc.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });

async function startTask(): Promise<string> {
  const evidence = await saToken();
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

describe('openid-client token exchange against a jit-broker serve process', () => {
  /** The workload as a public client (`none`), configured by discovery: the token endpoint is the metadata's. */
  const workload = () => discover(client.None()).then((c) => new client.Configuration(c.serverMetadata(), WORKLOAD, undefined, client.None()));
  const insecure = (config: client.Configuration) => {
    client.allowInsecureRequests(config);
    return config;
  };
  const introspect = async (token: string) => client.tokenIntrospection(await discover(client.ClientSecretPost(RS_SECRET)), token);

  it('discovers the token endpoint and its capabilities', async () => {
    const md = (await discover(client.None())).serverMetadata();
    expect(md.token_endpoint).toBe(`${ISSUER}/oauth2/token`);
    expect(md.grant_types_supported).toContain(EXCHANGE);
    expect(md.token_endpoint_auth_methods_supported).toContain('none');
    expect(md.authorization_details_types_supported).toEqual(['jit_task']);
    expect(md.dpop_signing_alg_values_supported).toContain('ES256');
  });

  it('exchanges a platform token for a task token (plain)', async () => {
    const config = insecure(await workload());
    const res = await client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', scope: 'read' });
    expect(res).toMatchObject({ token_type: 'bearer', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
    expect(res.refresh_token).toBeUndefined();
    expect(await introspect(res.access_token)).toMatchObject({ active: true, sub: WORKLOAD, aud: 'db.payments', scope: 'read' });
  });

  it('exchanges with authorization_details (RFC 9396) naming the whole intent', async () => {
    const config = insecure(await workload());
    const detail = { type: 'jit_task', locations: ['db.payments'], actions: ['read', 'write'], purpose: 'reconcile orders', identifier: 'serve-recon-1' };
    const res = await client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken(), subject_token_type: JWT_TYPE, authorization_details: JSON.stringify([detail]) });
    expect(res.scope).toBe('read write');
    expect(await introspect(res.access_token)).toMatchObject({
      active: true,
      txn: 'serve-recon-1',
      authorization_details: [{ type: 'jit_task', actions: ['read', 'write'], purpose: 'reconcile orders', identifier: 'serve-recon-1' }],
    });
  });

  it('exchanges with an actor token: the agent acts for the workload, within both rules', async () => {
    const config = insecure(await workload());
    const res = await client.genericGrantRequest(config, EXCHANGE, {
      subject_token: await saToken(),
      subject_token_type: JWT_TYPE,
      actor_token: await saToken('agents'),
      actor_token_type: JWT_TYPE,
      audience: 'db.payments',
      scope: 'read write',
    });
    // The agent's own rule allows read only: the grant is what both allow, and says so.
    expect(res.scope).toBe('read');
    expect(decodeJwt(res.access_token)).toMatchObject({ sub: WORKLOAD, act: { sub: AGENT } });
    expect(await introspect(res.access_token)).toMatchObject({ active: true, sub: WORKLOAD, act: { sub: AGENT }, scope: 'read' });
  });

  it("exchanges DPoP-bound with openid-client's own DPoP: the token names the key, and introspection says DPoP", async () => {
    const config = insecure(await workload());
    const keyPair = await client.randomDPoPKeyPair('ES256');
    const res = await client.genericGrantRequest(
      config,
      EXCHANGE,
      { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.payments', scope: 'read' },
      { DPoP: client.getDPoPHandle(config, keyPair) },
    );
    expect(res.token_type).toBe('dpop');
    const jkt = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey), 'sha256');
    expect(decodeJwt(res.access_token).cnf).toEqual({ jkt });
    expect(await introspect(res.access_token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt } });
  });

  it('answers a refused exchange in RFC 8693 terms, as openid-client reads it', async () => {
    const config = insecure(await workload());
    await expect(
      client.genericGrantRequest(config, EXCHANGE, { subject_token: await saToken(), subject_token_type: JWT_TYPE, audience: 'db.elsewhere', scope: 'read' }),
    ).rejects.toMatchObject({ error: 'invalid_target', status: 400 });
    await expect(client.genericGrantRequest(config, EXCHANGE, { subject_token: 'not-a-jwt', subject_token_type: JWT_TYPE, audience: 'db.payments', scope: 'read' })).rejects.toMatchObject({
      error: 'invalid_request',
    });
  });
});
