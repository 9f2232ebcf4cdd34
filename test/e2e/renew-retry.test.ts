/**
 * Renewal is safe to retry (issue 14): a renewal whose answer was lost (the connection dropped
 * after the broker wrote) is retried with the token it superseded, within RENEW_RETRY_WINDOW_MS and
 * with the same evidence and binding, and gets the grant's current token again: same jti, same
 * exp, no new generation, no rate token. Anything older, or later, is still a replay that revokes
 * the grant, and its error says so in a machine-readable field. Real HTTPS, real Redis.
 */
import { connect } from 'node:tls';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { RENEW_RETRY_WINDOW_MS } from '../../src/protocol/tasks.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';

const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'renew retry test' };

let issuer: OidcIssuer;
let pki: TestPki;
let broker: BrokerRuntime & { prefix: string };
/** The broker's clock runs this far ahead of the wall clock (moved by the window test). */
let skew = 0;
const files = scratchDir('jit-renew-retry-');

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  broker = await startTestBroker(
    issuer,
    {
      tls: { cert: files.write('server.pem', pki.server.chainPem), key: files.write('server-key.pem', pki.server.keyPem) },
      // Three tokens an hour per workload: a retry must take none.
      limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1, per: '1h', burst: 3 } },
    },
    { clock: () => Date.now() + skew },
  );
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  files.cleanup();
});

const saToken = (serviceAccount = 'api') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount, audience: AUDIENCE, ttlSeconds: 600 });
const tls = () => ({ ca: pki.example.certPem });

async function startTask(serviceAccount = 'api') {
  const res = await httpsJson(`${broker.url}/v1/tasks`, { ...tls(), body: { attestation: { kind: 'oidc', token: await saToken(serviceAccount) }, intent } });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return { grant: res.json.grant as string, token: res.json.access_token as string };
}
async function renew(grant: string, token: string, serviceAccount = 'api') {
  return httpsJson(`${broker.url}/v1/tasks/${grant}/renew`, {
    ...tls(),
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
    body: { attestation: { kind: 'oidc', token: await saToken(serviceAccount) } },
  });
}

/**
 * Sends a renewal and drops the connection as soon as the request is written, so its answer is
 * lost; then waits until the broker has recorded the renewal (the grant's generation moved).
 */
async function renewAndLoseAnswer(grant: string, token: string, serviceAccount = 'api'): Promise<void> {
  const before = (await broker.store.getGrant(grant))!.generation;
  const body = JSON.stringify({ attestation: { kind: 'oidc', token: await saToken(serviceAccount) } });
  const url = new URL(`${broker.url}/v1/tasks/${grant}/renew`);
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host: url.hostname, port: Number(url.port), ca: pki.example.certPem, servername: 'localhost' }, () => {
      const head = [
        `POST ${url.pathname} HTTP/1.1`,
        `host: ${url.host}`,
        `authorization: Bearer ${token}`,
        'content-type: application/json',
        `content-length: ${Buffer.byteLength(body)}`,
        '',
        '',
      ].join('\r\n');
      socket.write(head + body, () => {
        socket.destroy();
        resolve();
      });
    });
    socket.on('error', reject);
  });
  for (let i = 0; i < 500; i++) {
    if ((await broker.store.getGrant(grant))!.generation > before) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the broker never recorded the renewal whose answer was dropped');
}

describe('renewal retry', () => {
  it('a renewal whose answer was lost, retried with the superseded token, gets the current token again', async () => {
    const { grant, token } = await startTask();
    await renewAndLoseAnswer(grant, token);
    const recorded = (await broker.store.getGrant(grant))!;
    expect(recorded).toMatchObject({ status: 'active', generation: 2 });

    const retry = await renew(grant, token);
    expect(retry.status, JSON.stringify(retry.json)).toBe(200);
    const claims = decodeJwt(retry.json.access_token as string);
    expect(claims.jti).toBe(recorded.token_jti);
    expect((claims.exp ?? 0) * 1000).toBe(recorded.token_exp);
    expect(retry.json).toMatchObject({ grant, generation: 2 });
    // No new generation, the grant live, and a second retry answers the same.
    expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'active', generation: 2, token_jti: recorded.token_jti });
    const again = await renew(grant, token);
    expect(again.status, JSON.stringify(again.json)).toBe(200);
    expect(decodeJwt(again.json.access_token as string)).toMatchObject({ jti: recorded.token_jti, exp: claims.exp, iat: claims.iat });

    // The retried token is the grant's latest: it renews as usual, with the one rate token the
    // retries left (the bucket held three: the start and the lost renewal took two).
    const next = await renew(grant, retry.json.access_token as string);
    expect(next.status, JSON.stringify(next.json)).toBe(200);
    expect(next.json.generation).toBe(3);
    expect((await renew(grant, next.json.access_token as string)).status).toBe(429);
  });

  it('ending with the token a lost renewal superseded, within the window, ends the grant (no replay verdict)', async () => {
    const { grant, token } = await startTask('api6');
    await renewAndLoseAnswer(grant, token, 'api6');
    const res = await httpsJson(`${broker.url}/v1/tasks/${grant}/end`, { ...tls(), method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status, JSON.stringify(res.json)).toBe(200);
    expect(res.json).toMatchObject({ grant, status: 'ended' });
    expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'ended', closed_by: 'holder' });
  });

  it('a retry with other evidence (another workload) is refused and revokes nothing', async () => {
    const { grant, token } = await startTask('api2');
    await renewAndLoseAnswer(grant, token, 'api2');
    const other = await renew(grant, token, 'api3');
    expect(other.status).toBe(401);
    expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'active', generation: 2 });
  });

  it('a token older than the one just superseded is a replay, within the window too: revoked, and the error says why', async () => {
    const { grant, token: first } = await startTask('api4');
    const second = (await renew(grant, first, 'api4')).json.access_token as string;
    expect((await renew(grant, second, 'api4')).status).toBe(200);
    const replay = await renew(grant, first, 'api4');
    expect(replay.status).toBe(400);
    expect(replay.json).toEqual({ error: 'invalid_grant', error_reason: 'replay_detected', error_description: expect.stringContaining('two holders') });
    expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'revoked', closed_by: 'replay_detected', generation: 3 });
  });

  it('the superseded token presented after the window is a replay: revoked', async () => {
    const { grant, token } = await startTask('api5');
    expect((await renew(grant, token, 'api5')).status).toBe(200);
    skew += RENEW_RETRY_WINDOW_MS + 1000; // the broker's clock moves past the window
    try {
      const replay = await renew(grant, token, 'api5');
      expect(replay.status).toBe(400);
      expect(replay.json).toEqual({ error: 'invalid_grant', error_reason: 'replay_detected', error_description: expect.stringContaining('two holders') });
      expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'revoked', closed_by: 'replay_detected', generation: 2 });
    } finally {
      skew -= RENEW_RETRY_WINDOW_MS + 1000;
    }
  });
});
