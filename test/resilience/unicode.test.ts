/**
 * Only readable records are written (issue 11, item 1). A lone UTF-16 surrogate survives
 * JSON.stringify as `\ud800`, but Redis's cjson cannot decode it: a grant recorded with one could
 * not be read back by the Lua scripts, so it could not be ended, revoked or listed. Every string
 * that can reach a grant, a token or an audit event must therefore be well-formed Unicode:
 * request fields get a 400 naming the field, verified evidence a 401 (attestation failure).
 *
 * The property drives the whole cycle through the HTTP API of a real broker on the harness's
 * redis-server, with intents mixing astral characters, lone and paired surrogates, NUL, bidi
 * marks, combining marks and strings at their maximum length: what the broker accepts must
 * round-trip through every Lua script (create, read-grants, renew, close) and every ended or
 * revoked grant must introspect inactive; what it refuses is a 400 naming the field and writes
 * nothing.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { grantKeys, workloadTag } from '../../src/grants/ids.js';
import { intentSchema } from '../../src/protocol/intent.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';
import { redisUrl } from '../helpers/redis.js';

const WORKLOAD = 'k8s://test/ns/payments/sa/api';
const RS_CREDENTIAL = 'rs-unicode-credential-5b0e1d7c';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const PURPOSE_MAX = 1024;
const AUDIENCE_MAX = 512;

const BIDI = ['\u200e', '\u200f', '\u061c', '\u202a', '\u202b', '\u202c', '\u202d', '\u202e', '\u2066', '\u2067', '\u2068', '\u2069'];
/** Audiences the policy allows: each class of text, and one at the maximum length (astral pairs). */
const AUDIENCES = [
  'db.payments',
  'ünïcödé.example',
  'astral-𝔸𝔹ℂ-😀',
  'combining-e\u0301\u0301\u0327',
  'bidi-\u202eevil\u202c-\u2067x\u2069',
  '𝔸'.repeat(AUDIENCE_MAX / 2),
];

let issuer: OidcIssuer;
let github: OidcIssuer;
let broker: Awaited<ReturnType<typeof startTestBroker>>;
let redis: Redis;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  github = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    attestation: { oidc: { issuers: [issuerEntry(issuer), issuerEntry(github, { mapping: { preset: 'github' } })] } },
    policies: [
      { name: 'unicode', workloads: [WORKLOAD], audiences: AUDIENCES, actions: ['read', 'write'], resources: ['db://payments/**'], max_lifetime: '1h' },
      { name: 'gh', workloads: ['github://acme/app/**'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'] },
    ],
    resource_servers: [{ name: 'rs-unicode', audiences: AUDIENCES, credential_sha256: sha256(RS_CREDENTIAL) }],
  });
  redis = new Redis(redisUrl());
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
  await github?.close();
  redis?.disconnect();
});

const saToken = (pod = 'api-1') =>
  issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod, audience: AUDIENCE, ttlSeconds: 600 });
const start = async (intent: unknown, token?: string) => postJson(`${broker.url}/v1/tasks`, { attestation: { kind: 'oidc', token: token ?? (await saToken()) }, intent });
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const renew = async (grant: string, token: string) => postJson(`${broker.url}/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await saToken() } }, bearer(token));
async function end(grant: string, token: string) {
  const res = await fetch(`${broker.url}/v1/tasks/${grant}/end`, { method: 'POST', headers: bearer(token) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
async function form(path: string, token: string) {
  const res = await fetch(`${broker.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...bearer(RS_CREDENTIAL) },
    body: new URLSearchParams({ token }).toString(),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}
const introspect = (token: string) => form('/oauth2/introspect', token);
const revoke = (token: string) => form('/oauth2/revoke', token);

/** What the store holds about WORKLOAD: its grants (all-grants index) and audit events. */
async function written(): Promise<{ grants: number; events: number }> {
  const k = grantKeys(broker.prefix, workloadTag(WORKLOAD));
  // Lifecycle events and denials live in two streams; both count.
  const [grants, lifecycle, denials] = await Promise.all([redis.zcard(k.all), redis.xlen(k.audit), redis.xlen(k.denials)]);
  return { grants, events: lifecycle + denials };
}

const wellFormed = (s: string) => !/\p{Cs}/u.test(s);
const LONE = '\ud800';

describe('request strings that are not well-formed Unicode', () => {
  const base = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'unicode test', task: 'unicode-1' };
  const cases: [string, Record<string, unknown>][] = [
    ['intent.purpose', { purpose: `before ${LONE} after` }],
    ['intent.purpose', { purpose: '\udc00' }],
    ['intent.purpose', { purpose: '\udc00\ud800' }],
    ['intent.audience', { audience: `db.payments${LONE}` }],
    ['intent.actions[0]', { actions: [`read${LONE}`] }],
    ['intent.resources[0]', { resources: [`db://payments/${LONE}`] }],
    ['intent.task', { task: `t-${LONE}` }],
  ];
  it.each(cases)('%s: 400 invalid_request naming the field, nothing written', async (field, over) => {
    const before = await written();
    const res = await start({ ...base, ...over });
    expect(res.status, JSON.stringify(res.json)).toBe(400);
    expect(res.json.error).toBe('invalid_request');
    expect(res.json.error_description).toContain(field);
    expect(await written()).toEqual(before);
  });
});

describe('verified evidence whose text is not well-formed Unicode', () => {
  it('a mapped attribute (a pod name) is an attestation failure (401), nothing written', async () => {
    const before = await written();
    const res = await start({ audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'p' }, await saToken(`api-${LONE}`));
    expect(res.status, JSON.stringify(res.json)).toBe(401);
    expect(res.json).toMatchObject({ error: 'invalid_client' });
    expect(res.json.error_description).toMatch(/well-formed Unicode/);
    expect(await written()).toEqual(before);
  });

  it('a claim mapped into the workload id is an attestation failure (401), never a 500', async () => {
    const token = await github.mintGitHubToken({ repository: 'acme/app', environment: `prod${LONE}`, audience: AUDIENCE });
    const res = await start({ audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'p' }, token);
    expect(res.status, JSON.stringify(res.json)).toBe(401);
    expect(res.json).toMatchObject({ error: 'invalid_client' });
    // Refused by the mapping itself, naming the claim (not by the broker's backstop after it).
    expect(res.json.error_description).toMatch(/claim (sub|environment) must be well-formed Unicode/);
  });
});

// ── the property ──

const char = (lo: number, hi: number) => fc.integer({ min: lo, max: hi }).map((c) => String.fromCharCode(c));
/** Pieces of well-formed text of every class the property must see. */
const cleanPiece = fc.oneof(
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 6 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'grapheme-ascii', maxLength: 6 }), weight: 2 },
  fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
  fc.constantFrom(...BIDI),
  char(0x300, 0x36f),
);
/** ... and pieces nothing may store: lone surrogates, NUL, any code point (fast-check's 'binary'). */
const anyPiece = fc.oneof(
  { arbitrary: cleanPiece, weight: 4 },
  char(0xd800, 0xdbff),
  char(0xdc00, 0xdfff),
  fc.constant('\u0000'),
  fc.string({ unit: 'binary', maxLength: 6 }),
);
const textOf = (piece: fc.Arbitrary<string>) => fc.array(piece, { minLength: 1, maxLength: 10 }).map((ps) => ps.join(''));
/** `piece` repeated to exactly `max` UTF-16 units (padded, never a pair cut in two), or cut at max + 1. */
const atLength = (piece: fc.Arbitrary<string>, max: number) =>
  fc.tuple(piece, fc.boolean()).map(([p, over]) => {
    const unit = p === '' ? 'x' : p;
    if (over) return unit.repeat(Math.ceil((max + 1) / unit.length)).slice(0, max + 1);
    let s = '';
    while (s.length + unit.length <= max) s += unit;
    return s.padEnd(max, 'x');
  });
const text = (max: number) =>
  fc.oneof({ arbitrary: textOf(cleanPiece), weight: 3 }, { arbitrary: textOf(anyPiece), weight: 2 }, atLength(fc.oneof(cleanPiece, anyPiece), max));

const intentArb = fc.record({
  audience: fc.oneof({ arbitrary: fc.constantFrom(...AUDIENCES), weight: 5 }, text(AUDIENCE_MAX)),
  actions: fc.oneof({ arbitrary: fc.constant(['read']), weight: 9 }, text(128).map((a) => [a])),
  resources: fc.oneof({ arbitrary: fc.constant(['db://payments/orders']), weight: 9 }, text(1024).map((r) => [r])),
  purpose: text(PURPOSE_MAX),
  task: fc.option(fc.oneof({ arbitrary: fc.nat().map((n) => `task-${n}`), weight: 9 }, text(256)), { nil: undefined }),
  close: fc.constantFrom('end' as const, 'revoke' as const),
});
type GeneratedIntent = { audience: string; actions: string[]; resources: string[]; purpose: string; task: string | undefined };

const CLASSES: Record<string, (s: string) => boolean> = {
  astral: (s) => /[\u{10000}-\u{10ffff}]/u.test(s),
  'paired surrogates': (s) => /[\ud800-\udbff][\udc00-\udfff]/.test(s),
  'lone surrogate': (s) => !wellFormed(s),
  NUL: (s) => s.includes('\u0000'),
  bidi: (s) => BIDI.some((b) => s.includes(b)),
  combining: (s) => /\p{M}/u.test(s),
};
const FIELDS = ['audience', 'actions', 'resources', 'purpose', 'task'] as const;
const stringsOf = (i: GeneratedIntent): [string, string][] =>
  FIELDS.flatMap((f) => {
    const v = i[f];
    return v === undefined ? [] : Array.isArray(v) ? v.map((s, n): [string, string] => [`${f}[${n}]`, s]) : [[f, v] as [string, string]];
  });

describe('property: the full cycle over HTTP on real Redis, with full-Unicode intents', () => {
  it('accepted intents round-trip through every script and end inactive; refused ones are a 400 naming the field and write nothing', async () => {
    const seen = { all: new Map<string, number>(), accepted: new Map<string, number>() };
    const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
    const outcomes = { accepted: 0, refused: 0, denied: 0 };

    await fc.assert(
      fc.asyncProperty(intentArb, async ({ close, ...generated }) => {
        const intent = generated as GeneratedIntent;
        const body = Object.fromEntries(Object.entries(intent).filter(([, v]) => v !== undefined));
        const strings = stringsOf(intent);
        const illFormed = strings.filter(([, s]) => !wellFormed(s)).map(([f]) => f);
        // Which fields the wire contract refuses for any reason (length, control characters, shape).
        const invalid = FIELDS.filter((f) => intent[f] !== undefined && !intentSchema.shape[f].safeParse(intent[f]).success);
        const classes = Object.keys(CLASSES).filter((c) => strings.some(([, s]) => CLASSES[c]!(s)));
        if (intent.purpose.length === PURPOSE_MAX || intent.audience.length === AUDIENCE_MAX) classes.push('maximum length');
        for (const c of classes) count(seen.all, c);

        const before = await written();
        const res = await start(body);

        if (res.status === 400) {
          outcomes.refused++;
          expect(res.json.error).toBe('invalid_request');
          const named = invalid.filter((f) => (res.json.error_description as string).includes(`intent.${f}`));
          expect(named.length, `${String(res.json.error_description)} names none of ${invalid.join(', ')}`).toBeGreaterThan(0);
          expect(await written()).toEqual(before);
          return;
        }
        // Nothing ill-formed gets past the request (201) or reaches the policy (403).
        expect(illFormed, `${res.status} ${JSON.stringify(res.json)}`).toEqual([]);
        expect(invalid).toEqual([]);
        if (res.status === 403) {
          // A denial's audit event round-trips too (append-audit.lua); no grant.
          outcomes.denied++;
          const events = await broker.store.readAudit(WORKLOAD, { limit: 10_000 });
          // Denials are recorded clipped (DENIAL_CLIP), never between the halves of a surrogate pair.
          const denial = events.at(-1);
          expect(denial).toMatchObject({ type: 'grant.denied' });
          expect(intent.audience.startsWith((denial?.audience ?? '').replace(/…\(\d+ chars\)$/, ''))).toBe(true);
          expect(await written()).toEqual({ grants: before.grants, events: before.events + 1 });
          return;
        }
        expect(res.status, JSON.stringify(res.json)).toBe(201);
        outcomes.accepted++;
        for (const c of classes) count(seen.accepted, c);

        const grant = res.json.grant as string;
        const token1 = res.json.access_token as string;
        const task = (res.json.intent as { task: string }).task;
        const want = { audience: intent.audience, actions: intent.actions, resources: intent.resources, purpose: intent.purpose, task };
        expect(res.json.intent).toEqual(want);
        const claims = decodeJwt(token1) as { aud: string; authorization_details: { purpose: string; locations: string[] }[] };
        expect(claims.aud).toBe(intent.audience);
        expect(claims.authorization_details[0]).toMatchObject({ purpose: intent.purpose, locations: [intent.audience] });

        // The record, as GET reads it and as read-grants.lua lists it (by workload and by task).
        const now = Date.now();
        expect(await broker.store.getGrant(grant)).toMatchObject({ ...want, status: 'active' });
        const live = await broker.store.listWorkloadGrants(WORKLOAD, { now, liveOnly: true });
        expect(live.find((g) => g.id === grant)).toMatchObject(want);
        expect((await broker.store.listTaskGrants(WORKLOAD, task, { now })).find((g) => g.id === grant)).toMatchObject(want);
        expect((await broker.store.readAudit(WORKLOAD, { limit: 10_000 })).at(-1)).toMatchObject({ type: 'grant.issued', grant, audience: intent.audience, task });

        expect((await introspect(token1)).json).toMatchObject({ active: true, aud: intent.audience, authorization_details: [{ purpose: intent.purpose }] });

        // renew-grant.lua
        const renewed = await renew(grant, token1);
        expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
        expect(renewed.json).toMatchObject({ grant, generation: 2, intent: want });
        const token2 = renewed.json.access_token as string;
        expect((await introspect(token1)).json).toEqual({ active: false });
        expect((await introspect(token2)).json).toMatchObject({ active: true, authorization_details: [{ purpose: intent.purpose }] });

        // close-grant.lua: ended by its holder or revoked by the resource server.
        if (close === 'end') {
          const ended = await end(grant, token2);
          expect(ended.status, JSON.stringify(ended.json)).toBe(200);
          expect(ended.json).toMatchObject({ grant, status: 'ended' });
        } else {
          expect((await revoke(token2)).status).toBe(200);
        }
        const status = close === 'end' ? 'ended' : 'revoked';
        expect((await introspect(token2)).json).toEqual({ active: false });
        expect(await broker.store.getGrant(grant)).toMatchObject({ ...want, status, generation: 2 });
        expect((await broker.store.listWorkloadGrants(WORKLOAD, { now: Date.now(), liveOnly: true })).map((g) => g.id)).not.toContain(grant);
        expect((await broker.store.listWorkloadGrants(WORKLOAD, { now: Date.now(), limit: 1000 })).find((g) => g.id === grant)).toMatchObject({ ...want, status });
        const again = await end(grant, token2);
        expect(again.json).toMatchObject({ grant, status });
        const late = await renew(grant, token2);
        expect(late.status).toBe(400);
        expect(late.json.error).toBe('invalid_grant');
      }),
      // UNICODE_RUNS=1000 for a deeper local run; UNICODE_REPORT=1 prints what was generated.
      { numRuns: Number(process.env.UNICODE_RUNS ?? 80) },
    );

    if (process.env.UNICODE_REPORT) console.log({ outcomes, generated: Object.fromEntries(seen.all), accepted: Object.fromEntries(seen.accepted) });
    // The classes the issue names actually occurred, and well-formed ones were accepted too.
    for (const c of Object.keys(CLASSES).concat('maximum length')) expect(seen.all.get(c) ?? 0, `generated intents with ${c}`).toBeGreaterThan(0);
    for (const c of ['astral', 'paired surrogates', 'bidi', 'combining', 'maximum length']) expect(seen.accepted.get(c) ?? 0, `accepted intents with ${c}`).toBeGreaterThan(0);
    expect(outcomes.accepted).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  }, 120_000);
});
