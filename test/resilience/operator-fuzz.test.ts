/**
 * The operator API under arbitrary input from an authenticated admin: query strings, grant ids,
 * cursors and kill-switch bodies. Never a 5xx, always the JSON error contract, and a refused
 * kill switch changes nothing (introspection of a live token stays active).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, postJson, startTestBroker } from '../helpers/broker.js';

const runs = (n: number) => Math.max(1, Math.round(n * Number(process.env.FUZZ_SCALE ?? 1)));
const admin = newCredential();
const rs = newCredential();
let issuer: OidcIssuer;
let broker: BrokerRuntime & { prefix: string };
let live: { grant: string; token: string };

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    operators: [{ name: 'root', role: 'admin', credential_sha256: admin.sha256 }],
    resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: rs.sha256 }],
  });
  await startLive();
});

/** The live grant a refused kill switch must leave alone. */
async function startLive(): Promise<void> {
  const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'p', audience: AUDIENCE, ttlSeconds: 600 });
  const res = await postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'fuzz', task: 'keep-me' },
  });
  live = { grant: res.json.grant as string, token: res.json.access_token as string };
}

afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const auth = { authorization: `Bearer ${admin.credential}` };

async function checked(res: Response, what: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const text = await res.text();
  expect(res.status, `${what}: ${text.slice(0, 200)}`).toBeLessThan(500);
  const body = JSON.parse(text) as Record<string, unknown>;
  if (res.status >= 400) {
    expect(typeof body.error, what).toBe('string');
    expect(typeof body.error_description, what).toBe('string');
  }
  return { status: res.status, body };
}

const stillActive = async () => {
  const res = await fetch(`${broker.url}/oauth2/introspect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${rs.credential}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: live.token }),
  });
  return ((await res.json()) as { active: boolean }).active;
};

const param = fc.constantFrom('workload', 'task', 'audience', 'issuer', 'rule', 'kid', 'status', 'since', 'until', 'limit', 'cursor', 'x', '__proto__');
const value = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('active', 'expired', '0', '1000', '1001', '-1', '1e3', '2026-12-05T00:00:00Z', '2026-13-45T99:99:99Z', '\ud800', 'eyJ2IjoxLCJzIjoxLCJpIjoieCJ9', 'eyJ2IjoxLCJzIjotMSwiaSI6IngifQ', 'x'.repeat(5000)),
);

describe('operator API fuzz', () => {
  it('GET /v1/grants, /v1/workloads and /v1/grants/{id} with arbitrary parameters: never a 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(param, value), { maxLength: 4 }), fc.constantFrom('/v1/grants', '/v1/workloads'), async (pairs, path) => {
        const q = new URLSearchParams(pairs).toString();
        await checked(await fetch(`${broker.url}${path}?${q}`, { headers: auth }), `${path}?${q}`);
      }),
      { numRuns: runs(150) },
    );
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 60 }), async (id) => {
        await checked(await fetch(`${broker.url}/v1/grants/${encodeURIComponent(id)}`, { headers: auth }), `grant ${id}`);
      }),
      { numRuns: runs(100) },
    );
  });

  it('POST /v1/grants/revoke with arbitrary bodies: never a 5xx, and a refused one revokes nothing', async () => {
    const selectorKey = fc.constantFrom('grant', 'workload', 'task', 'audience', 'issuer', 'rule', 'key_id', 'color');
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          selector: fc.oneof(fc.dictionary(selectorKey, fc.oneof(fc.string({ maxLength: 30 }), fc.jsonValue()), { maxKeys: 3 }), fc.jsonValue()),
          reason: fc.oneof(fc.string({ maxLength: 30 }), fc.jsonValue()),
          dry_run: fc.oneof(fc.boolean(), fc.jsonValue()),
          cursor: fc.oneof(fc.string({ maxLength: 30 }), value),
        },
        { requiredKeys: [] },
      ),
    );
    await fc.assert(
      fc.asyncProperty(body, async (b) => {
        const res = await fetch(`${broker.url}/v1/grants/revoke`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(b) });
        const { status, body: answer } = await checked(res, JSON.stringify(b).slice(0, 200));
        if (status !== 200) expect(await stillActive()).toBe(true);
        // A valid selector that matched it (a glob such as "**"): a new one for the next case.
        else if (!(await stillActive())) await startLive();
        if (status === 200) expect(answer).toMatchObject({ done: expect.any(Boolean), revoked: expect.any(Number) });
      }),
      { numRuns: runs(200) },
    );
  });
});
