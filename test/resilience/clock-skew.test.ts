/**
 * Clocks that disagree, through the HTTP API: the broker's clock is injected (startTestBroker's
 * `clock`), the local OIDC issuer mints with a clock of its own, and both are frozen so every
 * boundary is exact (jose compares whole seconds).
 *
 * Platform tokens (attestation.oidc.issuers[].leeway, default 30 s, at most 60 s): a broker behind
 * the issuer accepts tokens issued "in its future" by less than the leeway and refuses them beyond
 * it; a broker ahead accepts a token past its exp or its max_token_age by less than the leeway and
 * refuses it beyond. Checked for the default leeway and for a configured 10 s and 60 s.
 *
 * Task tokens (tokens.leeway, default 30 s) are judged by the clock of the broker they come back
 * to: two brokers share one Redis prefix, one issues, the other (its clock skewed) renews and
 * introspects. Renewal applies the leeway; introspection judges exp without any (README:
 * "has expired (by the broker's clock, no leeway)").
 */
import { createHash } from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';
import { uniquePrefix } from '../helpers/redis.js';

/** The issuer's frozen "now": a whole second near real time (Redis TTLs are relative anyway). */
const T = Math.floor(Date.now() / 1000) * 1000;
const Ts = T / 1000;
const S = 1000;
const DEFAULT_LEEWAY_S = 30;
const MAX_TOKEN_AGE_S = 600;
const RS_CREDENTIAL = 'clock-skew-rs-credential';
const resourceServers = [{ name: 'rs', audiences: ['db.payments'], credential_sha256: createHash('sha256').update(RS_CREDENTIAL).digest('hex') }];

/** A clock at T plus a skew the test sets. */
function skewedClock() {
  const c = { skewMs: 0, fn: () => T + c.skewMs };
  return c;
}

let issuer: OidcIssuer;
const brokers: BrokerRuntime[] = [];

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256', clock: () => T });
});
afterAll(async () => {
  for (const b of brokers) await b.close();
  await issuer?.close();
});

async function broker(clock: ReturnType<typeof skewedClock>, overrides: Parameters<typeof startTestBroker>[1] = {}): Promise<BrokerRuntime> {
  const b = await startTestBroker(issuer, { resource_servers: resourceServers, ...overrides }, { clock: clock.fn });
  brokers.push(b);
  return b;
}

/** A service-account token issued at the issuer's now (iat = nbf = T), unless told otherwise. */
const saToken = (o: { ttlSeconds?: number; iat?: number } = {}) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: o.ttlSeconds ?? 3600, ...(o.iat !== undefined ? { iat: o.iat } : {}) });

const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'clock skew' };
const start = (b: BrokerRuntime, token: string) => postJson(`${b.url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
const renew = async (b: BrokerRuntime, grant: string, taskToken: string, platformToken: string) =>
  postJson(`${b.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: platformToken } }, { authorization: `Bearer ${taskToken}` });
async function introspect(b: BrokerRuntime, token: string) {
  const res = await fetch(`${b.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token }).toString(),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

type Answer = Awaited<ReturnType<typeof postJson>>;
function expectStatus(res: Answer, status: number): void {
  expect({ status: res.status, body: res.status === status ? undefined : res.json }).toEqual({ status, body: undefined });
}
function expectRefused(res: Answer, description: string): void {
  expect(res.status).toBe(401);
  expect(res.json).toEqual({ error: 'invalid_client', error_description: description });
}

describe.each([
  { name: 'default leeway (30 s)', leewayS: DEFAULT_LEEWAY_S, leeway: undefined },
  { name: 'leeway 10s', leewayS: 10, leeway: '10s' },
  { name: 'leeway 60s (the per-issuer maximum)', leewayS: 60, leeway: '60s' },
])('platform tokens, broker clock skewed against the issuer: $name', ({ leewayS, leeway }) => {
  const clock = skewedClock();
  let b: BrokerRuntime;
  beforeAll(async () => {
    b = await broker(clock, {
      attestation: {
        oidc: {
          issuers: [issuerEntry(issuer, { max_token_age: `${MAX_TOKEN_AGE_S}s`, ...(leeway !== undefined ? { leeway } : {}) })],
        },
      },
    });
  });

  it('broker behind: iat/nbf in its future by leeway−5 s is accepted, by leeway+5 s refused as not yet valid', async () => {
    clock.skewMs = -(leewayS - 5) * S;
    const accepted = await start(b, await saToken());
    expectStatus(accepted, 201);
    expect(decodeJwt(accepted.json.access_token as string).iat).toBe(Ts - (leewayS - 5)); // minted on the broker's own clock

    clock.skewMs = -(leewayS + 5) * S;
    expectRefused(await start(b, await saToken()), 'platform token is not yet valid');
  });

  it('broker ahead: a token near its exp gives a task token ending with it; past exp within the leeway it still attests, beyond it is refused as expired', async () => {
    const ttl = 120; // exp = T + 120 s
    // 40 s before exp by the broker's clock: issued, and the task token ends with the evidence.
    clock.skewMs = (ttl - 40) * S;
    const near = await start(b, await saToken({ ttlSeconds: ttl }));
    expectStatus(near, 201);
    expect(near.json.expires_at).toBe(new Date((Ts + ttl) * 1000).toISOString());
    expect(near.json.expires_in).toBe(40);

    // leeway−5 s past exp: the token itself is accepted (no "expired"), but a task token may not
    // outlive its evidence and needs 30 s of it, so the answer names the evidence's remaining life.
    clock.skewMs = (ttl + leewayS - 5) * S;
    expectRefused(await start(b, await saToken({ ttlSeconds: ttl })), 'the presented evidence expires in 0s; present evidence valid for at least 30s');

    // leeway+5 s past exp: expired.
    clock.skewMs = (ttl + leewayS + 5) * S;
    expectRefused(await start(b, await saToken({ ttlSeconds: ttl })), 'platform token has expired');
  });

  it('broker ahead: max_token_age exceeded by leeway−5 s is accepted, by leeway+5 s refused as too old', async () => {
    clock.skewMs = (MAX_TOKEN_AGE_S + leewayS - 5) * S;
    expectStatus(await start(b, await saToken()), 201);
    clock.skewMs = (MAX_TOKEN_AGE_S + leewayS + 5) * S;
    expectRefused(await start(b, await saToken()), 'platform token is too old');
  });
});

describe('task tokens are judged by the clock of the broker they come back to', () => {
  const issuing = skewedClock(); // at T, as the issuer
  const judging = skewedClock();
  let a: BrokerRuntime;
  let b: BrokerRuntime;
  beforeAll(async () => {
    const prefix = uniquePrefix('clock-skew');
    a = await broker(issuing, { prefix });
    b = await broker(judging, { prefix }); // same Redis prefix: same grants, A's keys published to B
  });

  /** A fresh grant and task token from A (iat = nbf = T, exp = T + 5 min, the default ttl). */
  async function issued() {
    const res = await start(a, await saToken());
    expectStatus(res, 201);
    const token = res.json.access_token as string;
    const claims = decodeJwt(token);
    expect({ iat: claims.iat, nbf: claims.nbf, exp: claims.exp }).toEqual({ iat: Ts, nbf: Ts, exp: Ts + 300 });
    return { grant: res.json.grant as string, token, exp: claims.exp as number };
  }

  it('introspection: active until exp by the judging broker\'s clock, inactive from exp on (no leeway)', async () => {
    const { token, exp } = await issued();
    judging.skewMs = (exp - Ts - 5) * S; // 5 s before exp
    expect(await introspect(b, token)).toMatchObject({ active: true, exp, expires_in: 5 });
    judging.skewMs = (exp - Ts + 5) * S; // 5 s past exp: within tokens.leeway, yet inactive
    expect(await introspect(b, token)).toEqual({ active: false });
    judging.skewMs = 0;
    expect(await introspect(b, token)).toMatchObject({ active: true }); // the token itself is fine
  });

  it('introspection: a token from a broker ahead is active within the leeway of its nbf/iat, inactive beyond', async () => {
    const { token } = await issued();
    judging.skewMs = -(DEFAULT_LEEWAY_S - 5) * S;
    expect(await introspect(b, token)).toMatchObject({ active: true });
    judging.skewMs = -(DEFAULT_LEEWAY_S + 5) * S;
    expect(await introspect(b, token)).toEqual({ active: false });
  });

  it('renewal: past exp by leeway−5 s renews (leeway applies), by leeway+5 s is 401 invalid_token "expired"', async () => {
    const within = await issued();
    judging.skewMs = (within.exp - Ts + DEFAULT_LEEWAY_S - 5) * S;
    const renewed = await renew(b, within.grant, within.token, await saToken());
    expectStatus(renewed, 200);
    expect(decodeJwt(renewed.json.access_token as string).iat).toBe(within.exp + DEFAULT_LEEWAY_S - 5); // B's clock
    expect(await introspect(b, renewed.json.access_token as string)).toMatchObject({ active: true });

    const beyond = await issued();
    judging.skewMs = (beyond.exp - Ts + DEFAULT_LEEWAY_S + 5) * S;
    const refused = await renew(b, beyond.grant, beyond.token, await saToken());
    expect(refused.status).toBe(401);
    expect(refused.json).toEqual({ error: 'invalid_token', error_description: 'the token has expired' });
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="jit-broker", error="invalid_token"');
    // A refused renewal changes nothing: the grant is as A left it.
    expect(await b.store.getGrant(beyond.grant)).toMatchObject({ status: 'active', generation: 1 });
  });

  it('renewal: a token from a broker ahead by leeway−5 s renews, by leeway+5 s is 401 invalid_token "not valid yet"', async () => {
    // The platform token must suit the judging broker's clock too: issued a minute earlier.
    const platform = () => saToken({ iat: Ts - 60 });
    const within = await issued();
    judging.skewMs = -(DEFAULT_LEEWAY_S - 5) * S;
    expectStatus(await renew(b, within.grant, within.token, await platform()), 200);

    const beyond = await issued();
    judging.skewMs = -(DEFAULT_LEEWAY_S + 5) * S;
    const refused = await renew(b, beyond.grant, beyond.token, await platform());
    expect(refused.status).toBe(401);
    expect(refused.json).toEqual({ error: 'invalid_token', error_description: 'the token is not valid yet' });
  });
});
