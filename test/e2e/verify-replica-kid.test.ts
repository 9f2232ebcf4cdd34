/**
 * A resource server's verifier and a broker replica that starts after the verifier fetched the
 * JWKS: two real brokers on one Redis (one key prefix), the verifier reading A's JWKS (which
 * serves the union both publish). B's first token carries a kid the verifier has not seen; it must
 * be accepted after one refetch, not refused for the rest of a 30 s cool-down. Junk kids still
 * cost at most one fetch per short interval. Time moves only by the verifier's clock.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { createVerifier, TaskTokenError, type Verifier } from '../../src/verify/index.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';
import { uniquePrefix } from '../helpers/redis.js';

const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders/1'], purpose: 'replica kid refresh', task: 'kid-1' };

let issuer: OidcIssuer;
const brokers: BrokerRuntime[] = [];
const verifiers: Verifier[] = [];
const prefix = uniquePrefix('replica-kid');

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
}, 30_000);

afterAll(async () => {
  for (const v of verifiers) v.close();
  for (const b of brokers) await b.close();
  await issuer?.close();
});

async function startReplica(): Promise<BrokerRuntime> {
  const b = await startTestBroker(issuer, { prefix });
  brokers.push(b);
  return b;
}

async function taskToken(broker: BrokerRuntime): Promise<string> {
  const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
  const res = await postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.access_token as string;
}

const kidOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof TaskTokenError ? e.code : String(e)));

describe('verifier and a replica that has just started', () => {
  it("accepts the new replica's token within a second of its last JWKS fetch, with the default cool-down", async () => {
    const a = await startReplica();
    let now = Date.now();
    const v = createVerifier({ issuer: 'https://broker.test', audience: 'db.payments', jwksUri: `${a.url}/.well-known/jwks.json`, clock: () => now });
    verifiers.push(v);
    await expect(v.verify(await taskToken(a))).resolves.toMatchObject({ task: 'kid-1' });
    expect(v.stats.jwksFetches).toBe(1);

    const b = await startReplica();
    const byB = await taskToken(b);
    expect(kidOf(byB)).not.toBe(kidOf(await taskToken(a)));
    now += 1_000; // B started a second after the verifier's fetch
    await expect(v.verify(byB)).resolves.toMatchObject({ task: 'kid-1' });
    expect(v.stats.jwksFetches).toBe(2);

    // A flood of unknown kids: one fetch per second at most, single-flight.
    const junk = `${Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: 'junk' })).toString('base64url')}.${byB.split('.')[1]}.${byB.split('.')[2]}`;
    now += 1_000;
    const codes = await Promise.all(Array.from({ length: 50 }, () => code(v.verify(junk))));
    expect(new Set(codes)).toEqual(new Set(['unknown_key']));
    expect(v.stats.jwksFetches).toBe(3);
    now += 999;
    for (let i = 0; i < 20; i++) expect(await code(v.verify(junk))).toBe('unknown_key');
    expect(v.stats.jwksFetches).toBe(3);
    now += 1;
    expect(await code(v.verify(junk))).toBe('unknown_key');
    expect(v.stats.jwksFetches).toBe(4);
  });
});
