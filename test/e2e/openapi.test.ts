/**
 * GET /openapi.json: every route the app registers is in the document with its method; real
 * answers of a running broker validate against the document's schemas; and so do the JSON
 * examples of the docs.
 *
 * Convention for JSON examples in README.md and docs/*.md: a fenced block whose info string is
 *
 *     ```json <METHOD> <path as in the document> request      e.g. ```json POST /v1/tasks request
 *     ```json <METHOD> <path as in the document> <status>     e.g. ```json POST /v1/tasks/{grant}/renew 200
 *
 * is validated against that operation's request body or response schema. JSON blocks without
 * such a tag (log lines, config) are not API bodies and are left alone. Examples use real-looking
 * values (a time is an RFC 3339 time, not "…"), so that they validate as written.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { buildOpenApiDocument } from '../../src/http/openapi.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';

const OPERATOR = 'op-openapi-credential-0123456789';
/** The issuer's path: every route is served under it, and documented relative to it. */
const BASE = '/tenant-a';
const relative = (path: string) => (path.startsWith(`${BASE}/`) ? path.slice(BASE.length) : path);
const RS = 'rs-openapi-credential-0123456789';
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

type Json = Record<string, unknown>;
let issuer: OidcIssuer;
let broker: BrokerRuntime;
let doc: Json;
let ajv: Ajv2020;
// ajv-formats is CommonJS: its default export arrives wrapped under ESM.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  broker = await startTestBroker(issuer, {
    // An issuer with a path: its RFC 8414 §3.1 metadata route is registered too.
    issuer: `https://broker.test${BASE}`,
    resource_servers: [{ name: 'rs', audiences: ['db.payments'], credential_sha256: sha256(RS) }],
    operators: [{ name: 'root', role: 'admin', credential_sha256: sha256(OPERATOR) }],
  });
  const res = await fetch(`${broker.url}${BASE}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  doc = (await res.json()) as Json;
  // A real JSON Schema validator over the document itself: every $ref resolves inside it.
  // (JSON Schema 2020-12, the dialect of OpenAPI 3.1; strict off: the document's own members
  // such as `paths` are not schema keywords.)
  ajv = new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv);
  ajv.addSchema(doc, 'openapi');
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
const openApiPath = (honoPath: string) => honoPath.replace(/:([A-Za-z_]\w*)/g, '{$1}');
const operation = (method: string, path: string) => (doc.paths as Record<string, Record<string, Json>>)[path]?.[method.toLowerCase()];

/** Errors of validating `value` against the schema at `where` (a JSON pointer into the document); [] when valid. */
function problems(where: string, value: unknown): string[] {
  const validate = ajv.compile({ $ref: `openapi#/${where}` });
  return validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''} ${JSON.stringify(e.params)}`);
}

function responseSchemaAt(method: string, path: string, status: number | string, type = 'application/json'): string {
  const op = operation(method, path);
  expect(op, `${method} ${path} is documented`).toBeDefined();
  let answer = (op!.responses as Record<string, Json>)[String(status)];
  expect(answer, `${method} ${path} documents ${status}`).toBeDefined();
  if (typeof answer!.$ref === 'string') return `${(answer!.$ref as string).slice(2)}/content/${pointer(type)}/schema`;
  answer = answer!;
  expect((answer.content as Json)[type], `${method} ${path} ${status} answers ${type}`).toBeDefined();
  return `paths/${pointer(path, method.toLowerCase(), 'responses', String(status), 'content', type, 'schema')}`;
}

function requestSchemaAt(method: string, path: string, type = 'application/json'): string {
  const op = operation(method, path);
  expect(op?.requestBody, `${method} ${path} has a request body`).toBeDefined();
  return `paths/${pointer(path, method.toLowerCase(), 'requestBody', 'content', type, 'schema')}`;
}

async function expectValidAnswer(res: Response, method: string, path: string): Promise<Json> {
  const body = (await res.json()) as Json;
  expect(problems(responseSchemaAt(method, path, res.status), body), `${method} ${path} ${res.status}: ${JSON.stringify(body)}`).toEqual([]);
  return body;
}

describe('GET /openapi.json', () => {
  it('is OpenAPI 3.1 with the error body, the security schemes and every registered route with its method', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
    const components = doc.components as Record<string, Record<string, Json>>;
    expect(Object.keys(components.securitySchemes!).sort()).toEqual(['mutualTLS', 'operator', 'resourceServer', 'taskToken']);
    expect(components.securitySchemes!.mutualTLS).toMatchObject({ type: 'mutualTLS' });
    expect(components.schemas!.ErrorBody).toMatchObject({ required: ['error', 'error_description'] });

    const routes = broker.app.routes.filter((r) => r.method !== 'ALL');
    expect(routes.length).toBeGreaterThanOrEqual(20);
    for (const r of routes) expect(operation(r.method, openApiPath(relative(r.path))), `${r.method} ${r.path}`).toBeDefined();
    expect(routes.map((r) => r.path)).toContain('/.well-known/oauth-authorization-server/tenant-a');
    // Nothing documented that is not served.
    const served = new Set(routes.map((r) => `${r.method.toLowerCase()} ${openApiPath(relative(r.path))}`));
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Json>)) for (const m of Object.keys(ops).filter((k) => k !== 'servers')) expect(served, `${m} ${path}`).toContain(`${m} ${path}`);

    // Every operation that can fail says how, with the error body; credentials where needed.
    for (const r of routes) {
      const op = operation(r.method, openApiPath(relative(r.path)))!;
      const refs = Object.values(op.responses as Record<string, Json>).map((a) => a.$ref).filter(Boolean);
      if (relative(r.path).startsWith('/v1/') || relative(r.path).startsWith('/oauth2/')) {
        expect(refs.length, `${r.method} ${r.path} documents its errors`).toBeGreaterThan(0);
        expect((op.security as unknown[]).length, `${r.method} ${r.path} names its credentials`).toBeGreaterThan(0);
      }
    }
    expect(operation('GET', '/v1/grants')!.security).toEqual([{ operator: [] }, { mutualTLS: [] }]);
    expect(operation('POST', '/oauth2/introspect')!.security).toEqual([{ resourceServer: [] }, { mutualTLS: [] }]);
    expect(operation('POST', '/v1/tasks/{grant}/renew')!.parameters).toEqual([{ name: 'grant', in: 'path', required: true, description: expect.any(String), schema: { type: 'string' } }]);
    const query = (operation('GET', '/v1/grants')!.parameters as Json[]).map((p) => p.name);
    expect(query).toEqual(expect.arrayContaining(['workload', 'status', 'limit', 'cursor']));
  });

  it('an undocumented route is refused when the document is built; routes of other modes are documented when registered', () => {
    expect(() => buildOpenApiDocument([{ method: 'GET', path: '/v1/undocumented' }], { version: '0', serverUrl: 'https://x' })).toThrow(/no OpenAPI operation documents GET \/v1\/undocumented/);
    const dev = buildOpenApiDocument([{ method: 'GET', path: '/dev/platform-token' }], { version: '0', serverUrl: 'https://x' });
    expect(Object.keys(dev.paths as Json)).toEqual(['/dev/platform-token']);
  });

  it("a running broker's answers validate against the document: tasks, introspection, revocation, discovery, health, operator routes, errors", async () => {
    const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', pod: 'api-1', audience: AUDIENCE, ttlSeconds: 600 });
    const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'openapi test' };
    const startBody = { attestation: { kind: 'oidc', token }, intent, ttl: '5m' };
    expect(problems(requestSchemaAt('POST', '/v1/tasks'), startBody)).toEqual([]);
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${broker.url}${BASE}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    const started = await expectValidAnswer(await post('/v1/tasks', startBody), 'POST', '/v1/tasks');
    const grant = started.grant as string;
    const renewed = await expectValidAnswer(await post(`/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token } }, { authorization: `Bearer ${started.access_token as string}` }), 'POST', '/v1/tasks/{grant}/renew');
    const form = (path: string, t: string) =>
      fetch(`${broker.url}${BASE}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${RS}` }, body: new URLSearchParams({ token: t }).toString() });
    expect(problems(requestSchemaAt('POST', '/oauth2/introspect', 'application/x-www-form-urlencoded'), { token: 'x' })).toEqual([]);
    expect(await expectValidAnswer(await form('/oauth2/introspect', renewed.access_token as string), 'POST', '/oauth2/introspect')).toMatchObject({ active: true });
    expect(await expectValidAnswer(await form('/oauth2/introspect', 'not-a-token'), 'POST', '/oauth2/introspect')).toEqual({ active: false });

    const op = { authorization: `Bearer ${OPERATOR}` };
    const get = (path: string, headers: Record<string, string> = op) => fetch(`${broker.url}${BASE}${path}`, { headers });
    await expectValidAnswer(await get('/v1/grants?status=active&limit=5'), 'GET', '/v1/grants');
    const detail = await expectValidAnswer(await get(`/v1/grants/${grant}`), 'GET', '/v1/grants/{id}');
    expect((detail.events as unknown[]).length).toBeGreaterThan(0);
    await expectValidAnswer(await get('/v1/workloads'), 'GET', '/v1/workloads');
    await expectValidAnswer(await get('/v1/keys'), 'GET', '/v1/keys');
    await expectValidAnswer(await get('/v1/audit?limit=10'), 'GET', '/v1/audit');
    const explainBody = { workload: 'k8s://test/ns/payments/sa/api', intent: { audience: 'db.payments', actions: ['drop'] } };
    expect(problems(requestSchemaAt('POST', '/v1/policy/explain'), explainBody)).toEqual([]);
    await expectValidAnswer(await post('/v1/policy/explain', explainBody, op), 'POST', '/v1/policy/explain');
    await expectValidAnswer(await post('/v1/policy/explain', { ...explainBody, intent: intent }, op), 'POST', '/v1/policy/explain');
    const killBody = { selector: { task: started.intent && (started.intent as Json).task }, reason: 'openapi test', dry_run: true };
    expect(problems(requestSchemaAt('POST', '/v1/grants/revoke'), killBody)).toEqual([]);
    await expectValidAnswer(await post('/v1/grants/revoke', killBody, op), 'POST', '/v1/grants/revoke');
    await expectValidAnswer(await post('/v1/keys/rotate', {}, op), 'POST', '/v1/keys/rotate');

    await expectValidAnswer(await post(`/v1/tasks/${grant}/end`, {}, { authorization: `Bearer ${renewed.access_token as string}` }), 'POST', '/v1/tasks/{grant}/end');
    await expectValidAnswer(await form('/oauth2/revoke', renewed.access_token as string), 'POST', '/oauth2/revoke');

    const jwks = await get('/.well-known/jwks.json', {});
    expect(problems(responseSchemaAt('GET', '/.well-known/jwks.json', 200, 'application/jwk-set+json'), await jwks.json())).toEqual([]);
    await expectValidAnswer(await get('/.well-known/oauth-authorization-server', {}), 'GET', '/.well-known/oauth-authorization-server');
    // RFC 8414 §3.1: at the root, so its path item names the origin as its server.
    await expectValidAnswer(await fetch(`${broker.url}/.well-known/oauth-authorization-server${BASE}`), 'GET', `/.well-known/oauth-authorization-server${BASE}`);
    expect((doc.paths as Record<string, Json>)[`/.well-known/oauth-authorization-server${BASE}`]!.servers).toEqual([{ url: 'https://broker.test' }]);
    expect(doc.servers).toEqual([{ url: `https://broker.test${BASE}` }]);
    await expectValidAnswer(await fetch(`${broker.url}/healthz`), 'GET', '/healthz');
    await expectValidAnswer(await get('/healthz', {}), 'GET', '/healthz');
    await expectValidAnswer(await get('/readyz', {}), 'GET', '/readyz');

    // Errors: the RFC 6749 body, at the statuses the document names.
    const errors: [Response, string, string][] = [
      [await post('/v1/tasks', { intent: { audience: 'x' } }), 'POST', '/v1/tasks'],
      [await post('/v1/tasks', { attestation: { kind: 'oidc', token: 'nope' }, intent }), 'POST', '/v1/tasks'],
      [await post('/v1/tasks', { ...startBody, intent: { ...intent, audience: 'db.other' } }), 'POST', '/v1/tasks'],
      [await get('/v1/grants', {}), 'GET', '/v1/grants'],
      [await get('/v1/grants/g_AAAAAAAAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAA'), 'GET', '/v1/grants/{id}'],
      [await post(`/v1/tasks/${grant}/renew`, {}), 'POST', '/v1/tasks/{grant}/renew'],
    ];
    expect(errors.map(([r]) => r.status)).toEqual([400, 401, 403, 401, 404, 401]);
    for (const [res, method, path] of errors) await expectValidAnswer(res, method, path);
  });
});

describe('JSON examples in the docs', () => {
  const files = ['README.md', ...readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  const TAG = /^```json[ \t]+(GET|POST|PUT|PATCH|DELETE)[ \t]+(\S+)[ \t]+(request|\d{3})[ \t]*$/;
  const examples: { where: string; method: string; path: string; what: string; text: string }[] = [];
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const m = TAG.exec(lines[i]!);
      if (!m) continue;
      const end = lines.indexOf('```', i + 1);
      examples.push({ where: `${file}:${i + 1}`, method: m[1]!, path: m[2]!, what: m[3]!, text: lines.slice(i + 1, end).join('\n') });
    }
  }

  it('are tagged (at least the operator API and audit log examples)', () => {
    expect(examples.length).toBeGreaterThanOrEqual(8);
  });

  it.each(examples.map((e) => [e.where, e] as const))('%s validates against the document', (_where, e) => {
    let body: unknown;
    expect(() => (body = JSON.parse(e.text)), `${e.where} is JSON`).not.toThrow();
    const at = e.what === 'request' ? requestSchemaAt(e.method, e.path) : responseSchemaAt(e.method, e.path, e.what);
    expect(problems(at, body)).toEqual([]);
  });
});
