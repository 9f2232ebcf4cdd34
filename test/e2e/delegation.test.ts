import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, CompactSign, decodeJwt, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

/**
 * Agent delegation (RFC 8693 §1.1, §4.1, §4.4) over real HTTP, a real Redis and the real local
 * OIDC issuer: an agent presents its own token as the actor token of a token exchange for a
 * workload, and gets a token for that workload carrying `act`, as far as both rules allow.
 */
const ISSUER = 'https://broker.test';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const RS_CREDENTIAL = 'rs-delegation-credential-0123456789abcdef';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const auditor = newCredential();
const id = (ns: string) => `k8s://test/ns/${ns}/sa/api`;
const ns = (name: string) => `k8s://test/ns/${name}/sa/*`;

/** A chain of rules d1…d6: each workload lets the one before it act for it (for the chain and the depth limit). */
const chainRules: NonNullable<ConfigInput['policies']> = [1, 2, 3, 4, 5, 6].map((k) => ({
  name: `chain-${k}`,
  workloads: [ns(`d${k}`)],
  audiences: ['db.chain'],
  actions: ['read'],
  ...(k > 1 ? { actors: [ns(`d${k - 1}`)] } : {}),
}));

const policies: ConfigInput['policies'] = [
  // The agents may act for payments; the agent's own rule allows reading only: delegated tokens read only.
  { name: 'payments', workloads: [ns('payments')], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'], actors: [ns('agents')] },
  { name: 'agents', workloads: [ns('agents')], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
  // A workload whose own rules allow the intent, but no rule lets it act for payments.
  { name: 'loner', workloads: [ns('loner')], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
  ...chainRules,
];

let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };

const saToken = (namespace: string) =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace, serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });

type Params = Record<string, string>;

async function token(params: Params, headers: Record<string, string> = {}) {
  const res = await fetch(`${broker.url}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params).toString(),
  });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

/** A token exchange for `subject`'s platform token, with an actor token when given. */
async function exchange(subject: string, extra: Params, headers: Record<string, string> = {}) {
  return token({ grant_type: EXCHANGE, subject_token: await saToken(subject), subject_token_type: JWT_TYPE, ...extra }, headers);
}

const payments = { audience: 'db.payments', resource: 'db://payments/orders' };
const chain = { audience: 'db.chain', scope: 'read' };

async function introspect(accessToken: string) {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS_CREDENTIAL}` },
    body: new URLSearchParams({ token: accessToken }).toString(),
  });
  return (await res.json()) as Record<string, any>;
}

async function operatorGet(path: string) {
  const res = await fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${auditor.credential}` } });
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

type Holder = { privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; jwk: Awaited<ReturnType<typeof exportJWK>> };

async function holder(): Promise<Holder> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { privateKey, jwk: await exportJWK(publicKey) };
}

function proof(h: Holder, path: string, accessToken?: string): Promise<string> {
  const claims = {
    jti: `p-${Math.random()}`,
    htm: 'POST',
    htu: `${ISSUER}${path}`,
    iat: Math.floor(Date.now() / 1000),
    ...(accessToken !== undefined ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
  };
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: h.jwk }).sign(h.privateKey);
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    issuer: ISSUER,
    policies,
    resource_servers: [{ name: 'rs', audiences: ['db.payments', 'db.chain'], credential_sha256: sha256(RS_CREDENTIAL) }],
    operators: [{ name: 'viewer', role: 'auditor', credential_sha256: auditor.sha256 }],
  });
}, 30_000);

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

describe('agent delegation (RFC 8693 actor tokens)', () => {
  it('issues a token for the subject with act naming the agent, narrowed to what both rules allow', async () => {
    const res = await exchange('payments', { ...payments, scope: 'read write', actor_token: await saToken('agents'), actor_token_type: JWT_TYPE });
    expect(res.status).toBe(200);
    // payments allows read and write, the agent's own rule read only: the token reads (RFC 8693 §2.2.1 names the narrowed scope).
    expect(res.json).toMatchObject({ issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', scope: 'read' });
    const claims = decodeJwt(res.json.access_token as string);
    expect(claims).toMatchObject({ sub: id('payments'), scope: 'read', act: { sub: id('agents') } });

    const shown = await introspect(res.json.access_token as string);
    expect(shown).toMatchObject({ active: true, sub: id('payments'), scope: 'read', rule: 'payments', act: { sub: id('agents') } });

    // The operator API shows the chain, in the grant and in the listing; the audit event names the actor.
    const grant = claims.grant as string;
    const row = await operatorGet(`/v1/grants/${grant}`);
    expect(row.status).toBe(200);
    expect(row.json).toMatchObject({ grant, workload: id('payments'), intent: { actions: ['read'] }, act: { sub: id('agents') } });
    const listed = await operatorGet(`/v1/grants?workload=${encodeURIComponent(id('payments'))}`);
    expect(listed.json.grants.find((g: { grant: string }) => g.grant === grant)).toMatchObject({ act: { sub: id('agents') } });
    const audit = await operatorGet(`/v1/audit?workload=${encodeURIComponent(id('payments'))}`);
    expect(audit.status).toBe(200);
    const events = (audit.json.events ?? audit.json.entries) as Record<string, unknown>[];
    expect(events.find((e) => e.type === 'grant.issued' && e.grant === grant)).toMatchObject({ actor: id('agents') });
  });

  it('refuses an actor no rule lets act for the subject, and actions neither rule pair allows', async () => {
    const stranger = await exchange('payments', { ...payments, scope: 'read', actor_token: await saToken('loner'), actor_token_type: JWT_TYPE });
    expect(stranger.status).toBe(400);
    expect(stranger.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining(`no policy rule lets workload ${id('loner')} act for workload ${id('payments')}`) });
    // The agent's own rules allow no write at all: nothing is left to grant.
    const write = await exchange('payments', { ...payments, scope: 'write', actor_token: await saToken('agents'), actor_token_type: JWT_TYPE });
    expect(write.status).toBe(400);
    expect(write.json).toMatchObject({ error: 'invalid_scope', error_description: expect.stringContaining("the actor's own rules refuse") });
    // The refusal's audit event names the actor.
    const audit = await operatorGet(`/v1/audit?workload=${encodeURIComponent(id('payments'))}`);
    const events = (audit.json.events ?? audit.json.entries) as Record<string, unknown>[];
    expect(events.find((e) => e.type === 'grant.denied' && e.actor === id('agents'))).toMatchObject({ reason: expect.stringContaining("the actor's own rules refuse") });
    // An actor token without its type, or of a type the broker does not take.
    const untyped = await exchange('payments', { ...payments, scope: 'read', actor_token: await saToken('agents') });
    expect(untyped.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('actor_token_type is required') });
    const saml = await exchange('payments', { ...payments, scope: 'read', actor_token: 'x', actor_token_type: 'urn:ietf:params:oauth:token-type:saml2' });
    expect(saml.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('actor_token_type must be') });
  });

  it('nests act for a chain (a delegated task token as the actor token) and bounds its depth', async () => {
    // d1's own token; d1 acts for d2; that token acts for d3: act {d2, act {d1}}; and so on.
    let previous = (await exchange('d1', chain)).json.access_token as string;
    const acts: unknown[] = [];
    for (const k of [2, 3, 4, 5]) {
      const res = await exchange(`d${k}`, { ...chain, actor_token: previous, actor_token_type: ACCESS_TOKEN_TYPE });
      expect(res.status).toBe(200);
      previous = res.json.access_token as string;
      acts.push(decodeJwt(previous).act);
    }
    expect(acts[1]).toEqual({ sub: id('d2'), act: { sub: id('d1') } });
    expect(await introspect(previous)).toMatchObject({ active: true, sub: id('d5'), act: { sub: id('d4'), act: { sub: id('d3'), act: { sub: id('d2'), act: { sub: id('d1') } } } } });
    // A fifth actor is one too many.
    const deeper = await exchange('d6', { ...chain, actor_token: previous, actor_token_type: ACCESS_TOKEN_TYPE });
    expect(deeper.status).toBe(400);
    expect(deeper.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('at most 4 actors') });
  });

  it('refuses a DPoP-bound actor task token without a proof by its key, and accepts it with one', async () => {
    const agent = await holder();
    const own = await exchange('agents', { ...payments, scope: 'read' }, { dpop: await proof(agent, '/oauth2/token') });
    expect(own.json.token_type).toBe('DPoP');
    const actorToken = own.json.access_token as string;
    const params = { ...payments, scope: 'read', actor_token: actorToken, actor_token_type: ACCESS_TOKEN_TYPE };

    const stolen = await exchange('payments', params);
    expect(stolen.status).toBe(400);
    expect(stolen.json).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('bound to a DPoP key') });
    const otherKey = await exchange('payments', params, { dpop: await proof(await holder(), '/oauth2/token') });
    expect(otherKey.status).toBe(400);

    const res = await exchange('payments', params, { dpop: await proof(agent, '/oauth2/token') });
    expect(res.status).toBe(200);
    expect(res.json.token_type).toBe('DPoP');
    const jkt = await calculateJwkThumbprint(agent.jwk, 'sha256');
    expect(decodeJwt(res.json.access_token as string)).toMatchObject({ sub: id('payments'), act: { sub: id('agents') }, cnf: { jkt } });
  });

  it('is renewed by the actor with its own evidence, never by the subject', async () => {
    const res = await exchange('payments', { ...payments, scope: 'read', actor_token: await saToken('agents'), actor_token_type: JWT_TYPE });
    const delegated = res.json.access_token as string;
    const grant = decodeJwt(delegated).grant as string;
    const renew = async (namespace: string, bearer: string) =>
      postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken(namespace) } }, { authorization: `Bearer ${bearer}` });

    const bySubject = await renew('payments', delegated);
    expect(bySubject.status).toBe(401);
    expect(bySubject.json.error_description).toMatch(/its actor renews it/);

    const renewed = await renew('agents', delegated);
    expect(renewed.status).toBe(200);
    const next = renewed.json.access_token as string;
    expect(decodeJwt(next)).toMatchObject({ sub: id('payments'), grant, scope: 'read', act: { sub: id('agents') } });
    expect(await introspect(next)).toMatchObject({ active: true, act: { sub: id('agents') } });
    const audit = await operatorGet(`/v1/audit?workload=${encodeURIComponent(id('payments'))}`);
    const events = (audit.json.events ?? audit.json.entries) as Record<string, unknown>[];
    expect(events.find((e) => e.type === 'grant.renewed' && e.grant === grant)).toMatchObject({ actor: id('agents') });
  });
});
