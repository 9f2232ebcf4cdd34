/**
 * The OpenAPI 3.1 document of the routes an app serves (GET /openapi.json), generated from the
 * zod schemas the routes parse and answer with (zod's JSON Schema output, draft 2020-12, which is
 * OpenAPI 3.1's dialect). Nothing here restates a schema: each operation names its schemas, and
 * only the operations whose routes the app registered are documented (operator routes, metrics
 * on the main listener and dev mode's token route come and go with configuration).
 */
import { z } from 'zod';
import { errorBodySchema } from '../protocol/errors.js';
import {
  introspectionResponseSchema,
  revocationResponseSchema,
  taskEndResponseSchema,
  taskRenewRequestSchema,
  taskRenewResponseSchema,
  taskStartRequestSchema,
  taskStartResponseSchema,
  tokenParamsSchema,
} from '../protocol/tasks.js';
import { tokenRequestSchema, tokenResponseSchema } from '../protocol/token.js';
import { authorizationServerMetadataSchema, jwksSchema, livenessSchema, readinessSchema } from '../protocol/discovery.js';
import {
  auditLogEntrySchema,
  auditLogResponseSchema,
  explanationSchema,
  grantDetailSchema,
  grantPageSchema,
  keyListSchema,
  revokeResultSchema,
  rotateResultSchema,
  workloadListSchema,
} from '../protocol/operator.js';
import { grantQuerySchema } from '../operator/grants.js';
import { revokeRequestSchema } from '../operator/revoke.js';
import { workloadQuerySchema } from '../operator/workloads.js';
import { auditQuerySchema, auditTailSchema } from '../operator/audit-log.js';
import { explainRequestSchema } from '../policy/explain.js';

type Schema = z.ZodType;
type JsonObject = Record<string, unknown>;

/** Who may call: the security schemes of the document (any one of the listed suffices). */
type Credential = 'taskToken' | 'resourceServer' | 'operator' | 'mutualTLS';

/** The error statuses an operation can answer, each with the `{error, error_description}` body. */
const ERROR_STATUSES = {
  400: 'The request is malformed or a parameter is invalid',
  401: 'The evidence, token or client credential was missing or did not verify',
  403: 'Authenticated, but not allowed (policy, role or audience)',
  404: 'No such resource',
  413: 'The request body is larger than `http.max_body_bytes`',
  429: 'A rate or cap was reached; `Retry-After` says when to try again',
  503: 'A dependency (Redis, signing keys, an issuer) is unavailable: nothing was done',
} as const;
type ErrorStatus = keyof typeof ERROR_STATUSES;

interface Body {
  schema: Schema;
  type?: 'application/json' | 'application/x-www-form-urlencoded';
  required?: boolean;
}

interface Answer {
  description: string;
  /** JSON unless `type` says otherwise; no schema: the body is not JSON (text, a stream). */
  schema?: Schema;
  type?: string;
  /** Other media types the same status may answer with (format negotiation). */
  alternatives?: Record<string, { schema: JsonObject }>;
}

/** One operation, keyed by the hono route pattern it documents. */
interface OperationSpec {
  method: 'get' | 'post';
  path: string;
  /** The pattern also documents every route under it (RFC 8414's issuer-path metadata). */
  prefix?: boolean;
  id: string;
  tag: 'tasks' | 'oauth' | 'discovery' | 'platform' | 'operator' | 'dev';
  summary: string;
  description?: string;
  /** Absent: anonymous. */
  security?: Credential[];
  /** Evidence may arrive in the body instead of a credential (task start). */
  anonymousToo?: boolean;
  query?: z.ZodObject;
  body?: Body;
  responses: Record<number, Answer>;
  errors: ErrorStatus[];
}

const OPERATIONS: OperationSpec[] = [
  {
    method: 'post',
    path: '/v1/tasks',
    id: 'startTask',
    tag: 'tasks',
    summary: 'Start a task: attest, authorize the intent, record a grant, mint a task token',
    description: 'Evidence is a platform token in `attestation`, or the client certificate of the TLS connection (mTLS).',
    security: ['mutualTLS'],
    anonymousToo: true,
    body: { schema: taskStartRequestSchema, required: true },
    responses: { 201: { description: 'The task token and its grant', schema: taskStartResponseSchema } },
    errors: [400, 401, 403, 413, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/tasks/:grant/renew',
    id: 'renewTask',
    tag: 'tasks',
    summary: 'A new token for the same grant, for the same workload and key',
    description: 'The current task token travels as `Authorization: Bearer`; the body re-attests the workload (empty over mTLS).',
    security: ['taskToken'],
    body: { schema: taskRenewRequestSchema, required: false },
    responses: { 200: { description: 'The new task token', schema: taskRenewResponseSchema } },
    errors: [400, 401, 403, 404, 413, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/tasks/:grant/end',
    id: 'endTask',
    tag: 'tasks',
    summary: 'The task is done: its grant expires now',
    security: ['taskToken'],
    responses: { 200: { description: "The grant's state after the call", schema: taskEndResponseSchema } },
    errors: [400, 401, 403, 404, 503],
  },
  {
    method: 'post',
    path: '/oauth2/token',
    id: 'token',
    tag: 'oauth',
    summary: 'OAuth token endpoint: RFC 8693 token exchange, or client credentials over mTLS (RFC 8705)',
    description:
      'The same pipeline as POST /v1/tasks. Token exchange: the platform token is the `subject_token` (a public client: the subject token is the credential). Client credentials: the client certificate is the evidence (`tls_client_auth`). A `DPoP` header binds the token.',
    security: ['mutualTLS'],
    anonymousToo: true,
    body: { schema: tokenRequestSchema, type: 'application/x-www-form-urlencoded', required: true },
    responses: { 200: { description: 'The task token (RFC 8693 §2.2.1; never a refresh token)', schema: tokenResponseSchema } },
    errors: [400, 401, 413, 429, 503],
  },
  {
    method: 'post',
    path: '/oauth2/introspect',
    id: 'introspectToken',
    tag: 'oauth',
    summary: 'RFC 7662 token introspection, answered from the grant record',
    security: ['resourceServer', 'mutualTLS'],
    body: { schema: tokenParamsSchema, type: 'application/x-www-form-urlencoded', required: true },
    responses: { 200: { description: '`active: false`, or the claims of a live token', schema: introspectionResponseSchema } },
    errors: [400, 401, 413, 429, 503],
  },
  {
    method: 'post',
    path: '/oauth2/revoke',
    id: 'revokeToken',
    tag: 'oauth',
    summary: "RFC 7009 revocation: the token's grant is revoked",
    description: "A resource server for the token's audience, or the token's holder (the task token itself as the bearer credential).",
    security: ['resourceServer', 'mutualTLS', 'taskToken'],
    body: { schema: tokenParamsSchema, type: 'application/x-www-form-urlencoded', required: true },
    responses: { 200: { description: 'Revoked, or the token was unknown (RFC 7009 §2.2)', schema: revocationResponseSchema } },
    errors: [400, 401, 413, 429, 503],
  },
  {
    method: 'get',
    path: '/.well-known/jwks.json',
    id: 'getJwks',
    tag: 'discovery',
    summary: "The public keys task tokens are signed with (every instance's)",
    responses: { 200: { description: 'A JWK Set', schema: jwksSchema, type: 'application/jwk-set+json' } },
    errors: [503],
  },
  {
    method: 'get',
    path: '/.well-known/oauth-authorization-server',
    prefix: true,
    id: 'getAuthorizationServerMetadata',
    tag: 'discovery',
    summary: 'RFC 8414 authorization server metadata (also under the issuer path, RFC 8414 §3.1)',
    responses: { 200: { description: 'The metadata', schema: authorizationServerMetadataSchema } },
    errors: [],
  },
  {
    method: 'get',
    path: '/healthz',
    id: 'getLiveness',
    tag: 'platform',
    summary: 'Liveness',
    responses: { 200: { description: 'The process answers', schema: livenessSchema } },
    errors: [],
  },
  {
    method: 'get',
    path: '/readyz',
    id: 'getReadiness',
    tag: 'platform',
    summary: 'Readiness: Redis, signing keys and attestation sources',
    responses: {
      200: { description: 'Ready', schema: readinessSchema },
      503: { description: 'Not ready: the failing checks by name (why goes to the log)', schema: readinessSchema },
    },
    errors: [],
  },
  {
    method: 'get',
    path: '/metrics',
    id: 'getMetrics',
    tag: 'platform',
    summary: 'Prometheus metrics (text exposition format)',
    description: 'Served here unless `metrics.listen` moves it to a listener of its own.',
    responses: { 200: { description: 'Every metric of this instance', type: 'text/plain; version=0.0.4; charset=utf-8' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/openapi.json',
    id: 'getOpenApi',
    tag: 'platform',
    summary: 'This document',
    responses: { 200: { description: 'The OpenAPI 3.1 document of the routes this instance serves' } },
    errors: [],
  },
  {
    method: 'get',
    path: '/v1/grants',
    id: 'queryGrants',
    tag: 'operator',
    summary: 'Grants, newest first, filtered (role auditor)',
    security: ['operator', 'mutualTLS'],
    query: grantQuerySchema,
    responses: { 200: { description: 'One page of grants', schema: grantPageSchema } },
    errors: [400, 401, 403, 429, 503],
  },
  {
    method: 'get',
    path: '/v1/grants/:id',
    id: 'showGrant',
    tag: 'operator',
    summary: 'One grant with its audit history (role auditor)',
    security: ['operator', 'mutualTLS'],
    responses: { 200: { description: 'The grant and its events', schema: grantDetailSchema } },
    errors: [400, 401, 403, 404, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/grants/revoke',
    id: 'revokeGrants',
    tag: 'operator',
    summary: 'The kill switch: revoke every live grant a selector matches (role admin)',
    security: ['operator', 'mutualTLS'],
    body: { schema: revokeRequestSchema, required: true },
    responses: { 200: { description: 'What was revoked; `done: false` comes with a cursor to continue', schema: revokeResultSchema } },
    errors: [400, 401, 403, 413, 429, 503],
  },
  {
    method: 'get',
    path: '/v1/workloads',
    id: 'listWorkloads',
    tag: 'operator',
    summary: 'Workloads with grants within the audit retention, with live grant counts (role auditor)',
    security: ['operator', 'mutualTLS'],
    query: workloadQuerySchema,
    responses: { 200: { description: 'One page of workloads', schema: workloadListSchema } },
    errors: [400, 401, 403, 429, 503],
  },
  {
    method: 'get',
    path: '/v1/keys',
    id: 'listKeys',
    tag: 'operator',
    summary: 'Published and revoked signing keys (role auditor)',
    security: ['operator', 'mutualTLS'],
    responses: { 200: { description: 'The keys', schema: keyListSchema } },
    errors: [401, 403, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/keys/rotate',
    id: 'rotateKey',
    tag: 'operator',
    summary: 'The answering instance moves to its next signing key now (role admin)',
    security: ['operator', 'mutualTLS'],
    responses: { 200: { description: 'Whether it rotated, and the key ids', schema: rotateResultSchema } },
    errors: [401, 403, 429, 503],
  },
  {
    method: 'get',
    path: '/v1/audit',
    id: 'readAuditLog',
    tag: 'operator',
    summary: 'One page of the merged audit log (role auditor); `format=ndjson` exports one event per line',
    security: ['operator', 'mutualTLS'],
    query: auditQuerySchema,
    responses: {
      200: {
        description: 'JSON: a page with its cursor. ndjson: the events; the cursor travels in the `audit-cursor`, `audit-order` and `audit-done` headers',
        schema: auditLogResponseSchema,
        alternatives: { 'application/x-ndjson': { schema: { type: 'string', description: 'One AuditLogEntry as JSON per line' } } },
      },
    },
    errors: [400, 401, 403, 429, 503],
  },
  {
    method: 'get',
    path: '/v1/audit/stream',
    id: 'tailAuditLog',
    tag: 'operator',
    summary: 'A live tail of the audit log as server-sent events (role auditor)',
    description: 'Each event\'s `data` is one AuditLogEntry as JSON and its `id` the entry\'s id; reconnect with `Last-Event-ID` to continue.',
    security: ['operator', 'mutualTLS'],
    query: auditTailSchema,
    responses: { 200: { description: 'An event stream', type: 'text/event-stream' } },
    errors: [400, 401, 403, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/policy/explain',
    id: 'explainPolicy',
    tag: 'operator',
    summary: 'What the running policy decides for a workload id and an intent, and why (role auditor)',
    security: ['operator', 'mutualTLS'],
    body: { schema: explainRequestSchema, required: true },
    responses: { 200: { description: 'The decision and its explanation', schema: explanationSchema } },
    errors: [400, 401, 403, 413, 429, 503],
  },
  {
    method: 'get',
    path: '/dev/platform-token',
    id: 'getDevPlatformToken',
    tag: 'dev',
    summary: 'Dev mode only: a fresh demo service-account token for the printed curl',
    responses: { 200: { description: 'A platform token (JWT)', type: 'text/plain' } },
    errors: [],
  },
];

/** Named schemas: each becomes `#/components/schemas/<name>`, and a `$ref` wherever another uses it. */
const COMPONENTS: Record<string, Schema> = {
  ErrorBody: errorBodySchema,
  TaskStartRequest: taskStartRequestSchema,
  TaskStartResponse: taskStartResponseSchema,
  TaskRenewRequest: taskRenewRequestSchema,
  TaskRenewResponse: taskRenewResponseSchema,
  TaskEndResponse: taskEndResponseSchema,
  TokenParams: tokenParamsSchema,
  IntrospectionResponse: introspectionResponseSchema,
  RevocationResponse: revocationResponseSchema,
  Jwks: jwksSchema,
  AuthorizationServerMetadata: authorizationServerMetadataSchema,
  Liveness: livenessSchema,
  Readiness: readinessSchema,
  GrantPage: grantPageSchema,
  GrantDetail: grantDetailSchema,
  RevokeRequest: revokeRequestSchema,
  RevokeResult: revokeResultSchema,
  WorkloadList: workloadListSchema,
  KeyList: keyListSchema,
  RotateResult: rotateResultSchema,
  AuditLogResponse: auditLogResponseSchema,
  AuditLogEntry: auditLogEntrySchema,
  ExplainRequest: explainRequestSchema,
  Explanation: explanationSchema,
};

const SECURITY_SCHEMES = {
  taskToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'The task token of the grant (RFC 9068 JWT)' },
  resourceServer: { type: 'http', scheme: 'bearer', description: "A resource server's credential (`resource_servers[].credential_sha256` holds its SHA-256)" },
  operator: { type: 'http', scheme: 'bearer', description: "An operator's credential (`operators[].credential_sha256` holds its SHA-256)" },
  mutualTLS: { type: 'mutualTLS', description: 'A client certificate: a workload SVID, or a configured resource server or operator identity' },
} as const;

const PATH_PARAMS: Record<string, string> = {
  grant: 'The grant id (`g_…`, 47 characters) the task start answered',
  id: 'A grant id (`g_…`, 47 characters)',
};

/** JSON Schema (draft 2020-12) of the components, with `$ref`s between them, and a converter for the rest. */
function schemaConverter() {
  const registry = z.registry<{ id: string }>();
  const ids = new Map<Schema, string>();
  for (const [id, schema] of Object.entries(COMPONENTS)) {
    registry.add(schema, { id });
    ids.set(schema, id);
  }
  // Inputs: a default makes a field optional on the wire; responses have no transforms or defaults.
  const options = { target: 'draft-2020-12', io: 'input', unrepresentable: 'any', uri: (id: string) => `#/components/schemas/${id}` } as const;
  const clean = (s: JsonObject): JsonObject => {
    const { $schema: _s, $id: _i, ...rest } = s;
    return rest;
  };
  const { schemas } = z.toJSONSchema(registry, options) as { schemas: Record<string, JsonObject> };
  const components = Object.fromEntries(Object.entries(schemas).map(([id, s]) => [id, clean(s)]));
  const ref = (schema: Schema): JsonObject => {
    const id = ids.get(schema);
    return id ? { $ref: `#/components/schemas/${id}` } : clean(z.toJSONSchema(schema, options) as JsonObject);
  };
  return { components, ref };
}

function queryParameters(query: z.ZodObject, ref: (s: Schema) => JsonObject): JsonObject[] {
  const object = ref(query) as { properties?: Record<string, JsonObject>; required?: string[] };
  return Object.entries(object.properties ?? {}).map(([name, schema]) => ({
    name,
    in: 'query',
    required: object.required?.includes(name) ?? false,
    schema,
  }));
}

/** `/v1/tasks/:grant/renew` → `/v1/tasks/{grant}/renew`, with its path parameters. */
function openApiPath(path: string): { path: string; params: string[] } {
  const params: string[] = [];
  const converted = path.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, (_m, name: string) => {
    params.push(name);
    return `{${name}}`;
  });
  return { path: converted, params };
}

/** The operation that documents a registered route, if any. */
export function operationFor(method: string, path: string): OperationSpec | undefined {
  const m = method.toLowerCase();
  return OPERATIONS.find((o) => o.method === m && (o.path === path || (o.prefix === true && path.startsWith(`${o.path}/`))));
}

/** A route as hono lists it (`app.routes`); middleware (method ALL) documents nothing. */
export interface RegisteredRoute {
  method: string;
  path: string;
}

/**
 * The document of the routes given (the app's, after every route is registered). A route no
 * operation describes throws: an undocumented route is a bug found at start-up and in tests.
 */
export function buildOpenApiDocument(routes: readonly RegisteredRoute[], info: { version: string; serverUrl: string; basePath?: string }): JsonObject {
  const { components, ref } = schemaConverter();
  const paths: Record<string, Record<string, unknown>> = {};
  const seen = new Set<string>();
  // Under an issuer with a path, routes are served under it and documented relative to the
  // server URL (the issuer); a route also served at the root (health, metrics) is documented
  // once, and one served only at the root (RFC 8414 §3.1 metadata) gets the origin as its server.
  const base = info.basePath ?? '';
  const underBase = (p: string) => (base && p.startsWith(`${base}/`) ? p.slice(base.length) : undefined);
  const basedKeys = new Set(routes.flatMap((r) => (underBase(r.path) !== undefined ? [`${r.method} ${underBase(r.path)}`] : [])));
  const rootOnly = new Set<string>();
  for (const route of routes) {
    if (route.method === 'ALL') continue;
    const relative = underBase(route.path);
    if (base && relative === undefined && basedKeys.has(`${route.method} ${route.path}`)) continue;
    const routePath = relative ?? route.path;
    const key = `${route.method} ${routePath}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const op = operationFor(route.method, routePath);
    if (!op) throw new Error(`no OpenAPI operation documents ${route.method} ${route.path} (add it to src/http/openapi.ts)`);
    const { path, params } = openApiPath(routePath);
    if (base && relative === undefined) rootOnly.add(path);
    const responses: Record<string, JsonObject> = {};
    for (const [status, answer] of Object.entries(op.responses)) {
      const type = answer.type ?? 'application/json';
      const schema = answer.schema ? ref(answer.schema) : type === 'application/json' ? { type: 'object' } : { type: 'string' };
      responses[status] = { description: answer.description, content: { [type]: { schema }, ...answer.alternatives } };
    }
    for (const status of op.errors) responses[String(status)] ??= { $ref: `#/components/responses/Error${status}` };
    const operation: JsonObject = {
      operationId: routePath === op.path ? op.id : `${op.id}${path.slice(op.path.length).replace(/[^A-Za-z0-9]+/g, '_')}`,
      tags: [op.tag],
      summary: op.summary,
      ...(op.description ? { description: op.description } : {}),
      security: op.security ? [...(op.anonymousToo ? [{}] : []), ...op.security.map((c) => ({ [c]: [] }))] : [],
      parameters: [
        ...params.map((name) => ({ name, in: 'path', required: true, ...(PATH_PARAMS[name] ? { description: PATH_PARAMS[name] } : {}), schema: { type: 'string' } })),
        ...(op.query ? queryParameters(op.query, ref) : []),
      ],
      ...(op.body
        ? { requestBody: { required: op.body.required ?? true, content: { [op.body.type ?? 'application/json']: { schema: ref(op.body.schema) } } } }
        : {}),
      responses,
    };
    (paths[path] ??= {})[op.method] = operation;
  }
  const origin = new URL(info.serverUrl).origin;
  for (const path of rootOnly) paths[path] = { servers: [{ url: origin }], ...paths[path] };
  const errorResponses = Object.fromEntries(
    Object.entries(ERROR_STATUSES).map(([status, description]) => [
      `Error${status}`,
      { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorBody' } } } },
    ]),
  );
  return {
    openapi: '3.1.1',
    info: {
      title: 'jit-broker',
      version: info.version,
      description: 'Just-in-time workload identity broker: attested, intent-scoped, minute-scale task tokens. Errors are `{"error", "error_description"}` (RFC 6749 §5.2).',
    },
    servers: [{ url: info.serverUrl }],
    tags: [
      { name: 'tasks', description: 'Workloads: start, renew and end a task' },
      { name: 'oauth', description: 'Resource servers: introspection and revocation' },
      { name: 'discovery', description: 'Verifiers: keys and metadata' },
      { name: 'platform', description: 'Health, metrics and this document' },
      { name: 'operator', description: 'Operators: grant audit, kill switch, keys, audit log, policy explain' },
      { name: 'dev', description: 'Dev mode only' },
    ],
    paths,
    components: { schemas: components, responses: errorResponses, securitySchemes: SECURITY_SCHEMES },
  };
}
