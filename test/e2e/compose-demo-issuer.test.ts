/**
 * `jit-broker demo-issuer`, the compose file's stand-in for a platform's OIDC issuer, as a real
 * process over real HTTP: discovery and JWKS name the --issuer it was given, the key set it writes
 * to --jwks-file is the one it serves, GET /token answers a service-account token those keys
 * verify, bad requests get a 4xx with an error_description, and a restart with the same
 * --key-file keeps the key (a broker that loaded the key set at start keeps accepting its tokens).
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, configDir, spawnCli, stopChildren, type CliChild } from '../helpers/cli.js';
import { freePort } from '../helpers/redis.js';

const files = configDir('jit-demo-issuer-');
const jwksFile = join(files.dir, 'jwks.json');
const keyFile = join(files.dir, 'key.json');
const ISSUER = 'http://demo-issuer:9000';

afterAll(() => {
  stopChildren();
  files.cleanup();
});

async function start(extra: string[] = []): Promise<{ child: CliChild; base: string }> {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const args = ['demo-issuer', '--port', String(port), '--issuer', ISSUER, '--jwks-file', jwksFile, '--key-file', keyFile, ...extra];
  const child = await spawnCli(args, { label: 'demo-issuer', readyUrl: `${base}/jwks.json`, timeoutMs: 30_000 });
  return { child, base };
}

describe('jit-broker demo-issuer', { timeout: 90_000 }, () => {
  let kid = '';

  it('serves discovery and JWKS under the --issuer it was given, writes the same key set to --jwks-file, and signs tokens those keys verify', async () => {
    const { child, base } = await start();
    try {
      expect(child.output()).toContain('DEMO ONLY');
      const discovery = (await (await fetch(`${base}/.well-known/openid-configuration`)).json()) as { issuer: string; jwks_uri: string };
      expect(discovery).toMatchObject({ issuer: ISSUER, jwks_uri: `${ISSUER}/jwks.json` });
      const served = (await (await fetch(`${base}/jwks.json`)).json()) as JSONWebKeySet;
      expect(JSON.parse(readFileSync(jwksFile, 'utf8'))).toEqual(served);
      expect(served.keys).toHaveLength(1);
      expect(served.keys[0]).not.toHaveProperty('d');
      kid = served.keys[0]!.kid!;
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(keyFile, 'utf8'))).toMatchObject({ kid, kty: 'EC', crv: 'P-256', alg: 'ES256' });

      const res = await fetch(`${base}/token?namespace=payments&service_account=api`);
      expect(res.status).toBe(200);
      expect(res.headers.get('cache-control')).toBe('no-store');
      const token = await res.text();
      const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(served), { issuer: ISSUER, audience: 'jit-broker' });
      expect(protectedHeader).toMatchObject({ alg: 'ES256', kid });
      expect(payload.sub).toBe('system:serviceaccount:payments:api');
      expect(payload.exp! - payload.iat!).toBe(600);
      // without a query: the demo workload's service account
      const demo = await jwtVerify(await (await fetch(`${base}/token`)).text(), createLocalJWKSet(served), { issuer: ISSUER, audience: 'jit-broker' });
      expect(demo.payload.sub).toBe('system:serviceaccount:demo:report-builder');
      // the log names the service account, never the token
      expect(child.output()).toContain('minted a token for system:serviceaccount:payments:api');
      expect(child.output()).not.toContain(token);
    } finally {
      expect(await child.stop()).toBe(0);
    }
  });

  it('refuses a bad query (400), another method (405) and an unknown path (404), each with a JSON error', async () => {
    const { child, base } = await start(['--audience', 'other-aud']);
    try {
      for (const [path, init, status, text] of [
        ['/token?namespace=Not_A_Label', undefined, 400, 'namespace: must be a DNS-1123 label'],
        ['/token?service_account=', undefined, 400, 'service_account: must be a DNS-1123 label'],
        ['/token?audience=evil', undefined, 400, 'audience'],
        ['/token', { method: 'POST' }, 405, 'GET /token only'],
        ['/nope', undefined, 404, 'not_found'],
      ] as const) {
        const res = await fetch(`${base}${path}`, init);
        expect(res.status, path).toBe(status);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(await res.text(), path).toContain(text);
      }
      const token = await (await fetch(`${base}/token`)).text();
      const served = (await (await fetch(`${base}/jwks.json`)).json()) as JSONWebKeySet;
      // the same key as the first start (--key-file), and the --audience given
      expect(served.keys[0]!.kid).toBe(kid);
      await expect(jwtVerify(token, createLocalJWKSet(served), { issuer: ISSUER, audience: 'other-aud' })).resolves.toBeDefined();
    } finally {
      await child.stop();
    }
  });

  it('refuses a key file that is not a private ES256 JWK, and bad flags, as usage errors (exit 2) before listening', async () => {
    const bad = join(files.dir, 'bad-key.json');
    writeFileSync(bad, '{"kty":"EC"}');
    const r = await cli(['demo-issuer', '--port', '0', '--key-file', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not a private ES256 JWK with a kid');
    for (const args of [['--issuer', 'ftp://x'], ['--issuer', 'http://x/?q=1'], ['--port', '70000'], ['--audience', '']]) {
      const u = await cli(['demo-issuer', ...args]);
      expect(u.code, args.join(' ')).toBe(2);
    }
  });
});
