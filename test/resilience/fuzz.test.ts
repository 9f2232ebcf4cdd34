/**
 * Hostile input (issue #5, item 4): property-based fuzzing (fast-check) of every public route of
 * a real broker — in-process, on loopback, with the harness's Redis, a real OIDC issuer, client
 * certificates forwarded by a trusted proxy (Envoy XFCC) and, for the handshake path, an HTTPS
 * broker with mTLS. Requests go out as raw bytes on node:net sockets, so bodies can carry bad
 * UTF-8, headers can lie about the length and requests can stop half-way.
 *
 * The properties, for every generated request:
 * - never a 5xx (no store fault is injected here, so no 503 either);
 * - every 4xx is JSON `{error, error_description}`, without a stack, also for requests too
 *   broken for HTTP itself, refused below the application (src/server.ts: Node's parser refusals
 *   400/408/431, a missing or bad Host, a bad request target); only Node's answer to an unmet
 *   Expect (417) stays bare, allowed only in the raw-bytes property and counted;
 * - nothing is written for a refused request: no grant for the workloads only fuzzed requests
 *   can attest as, the real grants unchanged, and (where no request can reach the policy) not a
 *   single key more under the broker's prefix;
 * - the server keeps serving, its memory stays bounded, and slow-loris connections are cut off
 *   after http.request_timeout while normal requests are served.
 * fast-check prints the seed and the shrunk counterexample of a failure: rerun with
 * `{ seed, path }` in the failing assert's options. FUZZ_SCALE=10 multiplies every numRuns;
 * FUZZ_REPORT=1 prints the transport refusals counted, the longest error_description and the
 * heap before and after.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { ERROR_CODES } from '../../src/protocol/errors.js';
import { MAX_TASK_TOKEN_BYTES } from '../../src/protocol/limits.js';
import { taskStartRequestSchema } from '../../src/protocol/tasks.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { createTestPki, scratchDir, xfcc, type TestPki } from '../helpers/pki.js';
import { captureFilePath } from '../helpers/log-capture.js';
import { redisUrl } from '../helpers/redis.js';

const REAL = 'k8s://test/ns/payments/sa/api';
/** Only fuzzed requests ever carry evidence of these two workloads. */
const FUZZ_K8S = 'k8s://test/ns/fuzz/sa/fuzzer';
const FUZZ_SVID = 'spiffe://example.org/ns/fuzz/sa/fuzzer';
const RS_CREDENTIAL = 'rs-fuzz-credential-2c1f0a9e77d4';
const MAX_BODY = 65_536;
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
/** FUZZ_SCALE=10 runs ten times as many cases (a deeper local run; the suite keeps the default). */
const runs = (n: number) => Math.max(1, Math.round(n * Number(process.env.FUZZ_SCALE ?? 1)));

let issuer: OidcIssuer;
let pki: TestPki;
let fuzzCert: Credential;
let broker: Awaited<ReturnType<typeof startTestBroker>>;
let redis: Redis;
let port: number;
const files = scratchDir('jit-fuzz-');

/** Valid evidence of the fuzz workloads: appears in fuzzed requests only next to something invalid. */
let fuzzToken: string;
let fuzzXfcc: string;
/** Two live grants of the real workload, and their tokens (never sent in a way that could succeed). */
const real: { grant: string; token: string }[] = [];

/** What the broker logs at warn and above; an "unhandled error" line is a 500 in disguise. */
const severe: string[] = [];
let warnings = 0;

const fuzzIntent = { audience: 'db.fuzz', actions: ['read'], resources: [], purpose: 'fuzzing', task: 'fuzz-1' };
const validFuzzStart = () => ({ attestation: { kind: 'oidc', token: fuzzToken }, intent: { ...fuzzIntent }, ttl: '5m', lifetime: '10m' });

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  fuzzCert = await issueCertificate(pki.example, { uris: [FUZZ_SVID] });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const line = chunk.toString();
      if (/"level":"(error|fatal)"/.test(line) || line.includes('unhandled error')) severe.push(line);
      else warnings++;
      cb();
    },
  });
  broker = await startTestBroker(
    issuer,
    {
      log: { level: 'warn' },
      http: { max_body_bytes: MAX_BODY, request_timeout: '1s', trusted_proxies: ['127.0.0.1/32'] },
      limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1_000_000, burst: 1_000_000 }, tracked_addresses: 1000 },
      grants: { max_active_per_workload: 100_000 }, // the XFCC property's accepted starts add up
      tls: { client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) } },
      attestation: {
        oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' } }] },
        x509: { forwarded: { trusted_proxies: ['127.0.0.1/32', '::1'] } },
      },
      policies: [
        { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'] },
        { name: 'fuzz', workloads: [FUZZ_K8S, FUZZ_SVID], audiences: ['db.fuzz'], actions: ['read'] },
      ],
      resource_servers: [
        { name: 'rs', audiences: ['db.payments', 'db.fuzz'], credential_sha256: sha256(RS_CREDENTIAL) },
        { name: 'rs-svid', audiences: ['db.fuzz'], workload: FUZZ_SVID },
      ],
    },
    { destination: sink },
  );
  port = broker.port;
  redis = new Redis(redisUrl());
  fuzzToken = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'fuzz', serviceAccount: 'fuzzer', audience: AUDIENCE, ttlSeconds: 3600 });
  fuzzXfcc = xfcc(fuzzCert);
  for (let i = 0; i < 2; i++) real.push(await startReal());
}, 30_000);

afterAll(async () => {
  if (process.env.FUZZ_REPORT) console.info(`fuzz: transport refusals ${JSON.stringify(Object.fromEntries(transportRefusals))}; longest error_description ${longestDescription.length} (${longestDescription.path}); warnings logged ${warnings}`);
  await broker?.close();
  await issuer?.close();
  redis?.disconnect();
  files.cleanup();
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP on a socket

interface Sent {
  raw: Buffer;
  /** Bytes of the request head sent. */
  head: number;
  /** The server closed the connection (else the client gave up after timeoutMs). */
  closed: boolean;
  ms: number;
  error?: string;
}

function send(data: Buffer, opts: { halfClose?: boolean; timeoutMs?: number; to?: number } = {}): Promise<Sent> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const socket = connect(opts.to ?? port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let error: string | undefined;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const head = data.indexOf('\r\n\r\n');
      resolve({ raw: Buffer.concat(chunks), head: head < 0 ? data.length : head, closed, ms: performance.now() - t0, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => {
      socket.destroy();
      finish(false);
    }, opts.timeoutMs ?? 10_000);
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', (e) => (error = (e as NodeJS.ErrnoException).code ?? e.message)); // a reset while we still write
    socket.on('close', () => finish(true));
    socket.on('connect', () => {
      socket.write(data);
      if (opts.halfClose) socket.end();
    });
  });
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** The first response in `raw` (HEAD: no body). */
function parseReply(raw: Buffer, method = 'GET'): Reply | undefined {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine ?? '');
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = raw.subarray(end + 4);
  if (method === 'HEAD') body = Buffer.alloc(0);
  else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
  else if (headers['content-length'] !== undefined) body = body.subarray(0, Number(headers['content-length']));
  return { status: Number(m[1]), headers, body };
}

function dechunk(b: Buffer): Buffer {
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', pos);
    if (eol < 0) break;
    const size = parseInt(b.subarray(pos, eol).toString('latin1'), 16);
    if (!(size > 0)) break;
    parts.push(b.subarray(eol + 2, eol + 2 + size));
    pos = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/** Every status line in a raw exchange (a pipelined remainder can draw a second response). */
const statusesIn = (raw: Buffer) => [...raw.toString('latin1').matchAll(/(?:^|\r\n)HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));

type Header = [string, string];

/** A well-formed HTTP/1.1 request: Host, Connection: close and (unless given) a true Content-Length. */
function request(method: string, target: string, headers: Header[] = [], body?: Buffer | string): Buffer {
  const bytes = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const has = (n: string) => headers.some(([k]) => k.toLowerCase() === n);
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  if (bytes !== undefined && !has('content-length') && !has('transfer-encoding')) lines.push(`Content-Length: ${bytes.length}`);
  for (const [k, v] of headers) lines.push(`${k}: ${v}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), bytes ?? Buffer.alloc(0)]);
}

const json = (o: unknown) => JSON.stringify(o);
const jsonType: Header = ['Content-Type', 'application/json'];
const formType: Header = ['Content-Type', 'application/x-www-form-urlencoded'];

/** Transport-level refusals seen (status → count): no JSON body, by Node or @hono/node-server. */
const transportRefusals = new Map<number, number>();
const longestDescription = { length: 0, path: '' };

/** Node refuses a request head over its limit (16 KiB, --max-http-header-size) with an empty 431. */
const MAX_HEAD = 16 * 1024;

/** The properties every answer of the application keeps. */
function checkReply(sent: Sent, method: string, what: string): Reply {
  for (const status of statusesIn(sent.raw)) expect(status, `${what}: ${sent.raw.toString('latin1').slice(0, 300)}`).toBeLessThan(500);
  const reply = parseReply(sent.raw, method);
  expect(reply, `${what}: no response (${sent.error ?? (sent.closed ? 'closed' : 'timeout')})`).toBeDefined();
  const r = reply!;
  if (sent.head > MAX_HEAD && r.status === 431 && r.body.length === 0) {
    transportRefusals.set(431, (transportRefusals.get(431) ?? 0) + 1);
    return r;
  }
  if (r.status >= 400 && method !== 'HEAD') {
    expect(r.headers['content-type'], `${what}: ${r.status} ${r.body.toString().slice(0, 200)}`).toMatch(/^application\/json/);
    const body = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
    expect(ERROR_CODES, what).toContain(body.error);
    expect(typeof body.error_description, what).toBe('string');
    expect((body.error_description as string).length, what).toBeGreaterThan(0);
    expect(r.body.toString(), what).not.toMatch(/\n\s+at |node_modules|\.ts:\d+/);
    if ((body.error_description as string).length > longestDescription.length) Object.assign(longestDescription, { length: (body.error_description as string).length, path: what });
  }
  return r;
}

/**
 * A transport refusal: 4xx, empty body, connection closed. Only Node's own answer to an Expect it
 * does not meet (417) is left bare; what its parser refuses is answered in JSON (src/server.ts
 * answerClientError) and must pass checkReply like everything else.
 */
function checkRawReply(sent: Sent, what: string, method = 'GET'): Reply | undefined {
  for (const status of statusesIn(sent.raw)) expect(status, `${what}: ${sent.raw.toString('latin1').slice(0, 300)}`).toBeLessThan(500);
  const reply = parseReply(sent.raw, method);
  if (!reply) {
    // Nothing at all: only when the server reset a connection it had already refused.
    expect(sent.closed, `${what}: no answer and not closed`).toBe(true);
    return undefined;
  }
  if (reply.status >= 400 && reply.body.length === 0 && !/json/.test(reply.headers['content-type'] ?? '')) {
    transportRefusals.set(reply.status, (transportRefusals.get(reply.status) ?? 0) + 1);
    expect([417], `${what}: ${reply.status}`).toContain(reply.status);
    return reply;
  }
  return checkReply(sent, method, what);
}

// ---------------------------------------------------------------------------------------------
// What the store holds

/** The keys under the broker's prefix (names compared, never interpreted). */
async function keysUnderPrefix(): Promise<Set<string>> {
  const keys = new Set<string>();
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${broker.prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const k of batch) keys.add(k);
  } while (cursor !== '0');
  return keys;
}

interface Snapshot {
  keys: Set<string>;
  fuzzGrants: Record<string, number>;
  fuzzEvents: Record<string, number>;
  real: unknown[];
}

async function snapshot(): Promise<Snapshot> {
  const now = Date.now();
  const fuzzGrants: Record<string, number> = {};
  const fuzzEvents: Record<string, number> = {};
  for (const w of [FUZZ_K8S, FUZZ_SVID]) {
    fuzzGrants[w] = (await broker.store.listWorkloadGrants(w, { now, limit: 100_000 })).length;
    fuzzEvents[w] = (await broker.store.readAudit(w, { limit: 100_000 })).length;
  }
  return { keys: await keysUnderPrefix(), fuzzGrants, fuzzEvents, real: await Promise.all(real.map((r) => broker.store.getGrant(r.grant))) };
}

/**
 * Runs a fuzz phase and asserts it wrote nothing: no grant or audit event of the fuzz workloads,
 * the real grants as they were, and no key under the prefix that was not there before (keys may
 * leave: a rate-limit bucket that refilled expires).
 */
async function writesNothing(phase: () => Promise<void>): Promise<void> {
  const before = await snapshot();
  expect(before.real.every((g) => (g as { status?: string } | null)?.status === 'active')).toBe(true);
  await phase();
  const after = await snapshot();
  expect([...after.keys].filter((k) => !before.keys.has(k)), 'keys written').toEqual([]);
  expect({ ...after, keys: undefined }).toEqual({ ...before, keys: undefined });
}

async function startReal(): Promise<{ grant: string; token: string }> {
  const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 600 });
  const body = json({ attestation: { kind: 'oidc', token }, intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'real work' } });
  const r = parseReply((await send(request('POST', '/v1/tasks', [jsonType], body))).raw);
  expect(r?.status, r?.body.toString()).toBe(201);
  const parsed = JSON.parse(r!.body.toString()) as { grant: string; access_token: string };
  return { grant: parsed.grant, token: parsed.access_token };
}

// ---------------------------------------------------------------------------------------------
// Generators

/** Any JSON value of a type other than `type`. */
const notA = (type: 'string' | 'number' | 'array' | 'object' | 'integer') =>
  fc
    .oneof(
      fc.constant(null),
      fc.boolean(),
      fc.integer(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.string({ maxLength: 20 }),
      fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
      fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
    )
    .filter((v) => {
      const t = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
      if (type === 'integer') return !(typeof v === 'number' && Number.isInteger(v) && v > 0) && !(typeof v === 'string' && /^\d{1,7}(ms|s|m|h|d)$/.test(v));
      return t !== type;
    });

const controlChar = fc.integer({ min: 0, max: 31 }).map((c) => String.fromCharCode(c));
const withControl = fc.tuple(fc.string({ maxLength: 10 }), controlChar, fc.string({ maxLength: 10 })).map(([a, c, b]) => a + c + b);
const tooLong = (max: number) => fc.integer({ min: max + 1, max: max + 2000 }).map((n) => 'a'.repeat(n));
const badString = (max: number) => fc.oneof(notA('string'), fc.constant(''), tooLong(max), withControl);
const badDuration = (tooBig: (string | number)[]) =>
  fc.oneof(notA('integer'), fc.constantFrom(0, -1, 1.5, 86_400 * 365 + 1, 1e21, '', '5', '5x', '5 m', ' 5m', '99999999s', '1s', '29s', '0s', '29999ms', '5M', '٥m', ...tooBig));
const badAction = fc.oneof(badString(128), fc.constantFrom('a b', 'a"b', 'a\\b', 'ä', 'read write', '\u00a0'));
const badResource = fc.oneof(
  badString(1024),
  fc.constantFrom('db://a/../b', 'db://a//b', 'db://a/./b', 'db://a\\b', 'db://a?x', 'db://a#x', 'db://ä', 'db://a/%2F', 'db://a/%7E', 'db://a/%25', 'db://a/%zz', 'db://a/%C0%AE', 'db://a/..;', 'db://a/%2e%2e', 'db://ａ/．．'),
);

/** Every field of the start request, with a generator of values it must refuse there. */
const startFields: Record<string, fc.Arbitrary<unknown>> = {
  attestation: fc.oneof(notA('object'), fc.constant({}), fc.record({ kind: fc.constantFrom('oidc', 'x509', 'jwt', '') }), fc.record({ kind: fc.constant('oidc'), token: badString(16_384) })),
  'attestation.kind': fc.jsonValue().filter((v) => v !== 'oidc'),
  'attestation.token': badString(16_384),
  intent: notA('object'),
  'intent.audience': badString(512),
  'intent.actions': fc.oneof(notA('array'), fc.constant([]), fc.array(fc.constant('read'), { minLength: 65, maxLength: 200 }), fc.array(badAction, { minLength: 1, maxLength: 3 })),
  'intent.resources': fc.oneof(notA('array').filter((v) => v !== undefined), fc.array(fc.constant('db://x'), { minLength: 65, maxLength: 100 }), fc.array(badResource, { minLength: 1, maxLength: 3 })),
  'intent.purpose': badString(1024),
  'intent.task': fc.oneof(badString(256), fc.constantFrom('a b', 'a?b', 'ä', 'a\u2028b', 'a;b')),
  ttl: badDuration(['16m', '1h', 901, '1d']),
  lifetime: badDuration([]),
};

/** Names that are not fields of any request schema (prototype keys among them). */
const FIELD_NAMES = new Set(['attestation', 'intent', 'ttl', 'lifetime', 'kind', 'token', 'audience', 'actions', 'resources', 'purpose', 'task']);
const strayKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'Token', 'kind ', ''), fc.string({ maxLength: 12 })).filter((k) => !FIELD_NAMES.has(k));

/**
 * The status a refused start must get: 413 over the limit; 400 when the request schema refuses it
 * (src/protocol is the oracle); otherwise some later check refuses it (ttl bounds 400, the
 * evidence 401): never a 2xx.
 */
function expectRefusedStart(r: Reply, text: string, body: unknown): void {
  const what = `${r.status} ${r.body.toString().slice(0, 120)}`;
  if (Buffer.byteLength(text) > MAX_BODY) expect(r.status, what).toBe(413);
  else if (!taskStartRequestSchema.safeParse(body).success) expect(r.status, what).toBe(400);
  else expect([400, 401], what).toContain(r.status);
}

function setPath(target: Record<string, any>, path: string, value: unknown): void {
  const parts = path.split('.');
  let obj = target;
  for (const p of parts.slice(0, -1)) {
    if (obj[p] === null || typeof obj[p] !== 'object' || Array.isArray(obj[p])) obj[p] = {};
    obj = obj[p] as Record<string, any>;
  }
  // defineProperty: "__proto__" as an own key, as JSON.parse makes it
  Object.defineProperty(obj, parts.at(-1)!, { value, enumerable: true, writable: true, configurable: true });
}

/** Invalid UTF-8: lone continuation, overlong, surrogate halves, truncated sequences, bytes never valid. */
const badUtf8 = fc.constantFrom([0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xf0, 0x82, 0x82, 0xac], [0xf4, 0x90, 0x80, 0x80], [0xff], [0xfe], [0xe2, 0x82], [0xf0, 0x9f, 0x98]);

/** A JSON text nested `depth` levels deep (arrays or objects), around `inner`. */
const nested = (depth: number, kind: 'array' | 'object', inner = '1') => (kind === 'array' ? `${'['.repeat(depth)}${inner}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}${inner}${'}'.repeat(depth)}`);

/** Serialises with a duplicate key: the last occurrence (the one JSON.parse keeps) holds `last`. */
function withDuplicate(obj: Record<string, unknown>, key: string, first: unknown, last: unknown): string {
  const rest = json(Object.fromEntries(Object.entries(obj).filter(([k]) => k !== key))).slice(1, -1);
  return `{${json(key)}:${json(first)},${rest}${rest ? ',' : ''}${json(key)}:${json(last)}}`;
}

/** Header values a client may send: printable ASCII and obs-text, no CR, LF or NUL. */
const headerValue = (max = 60) => fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: max });
const headerName = fc
  .stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/)
  .filter((n) => !['host', 'connection', 'content-length', 'transfer-encoding', 'expect', 'upgrade', 'authorization', 'content-type'].includes(n.toLowerCase()));

const garbageToken = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9\-._~+/]{1,200}=*$/),
  fc.constantFrom('a.b.c', 'eyJ.eyJ.', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', '....', 'Bearer', 'null', '0'),
  fc.integer({ min: 4000, max: 20_000 }).map((n) => 'A'.repeat(n)),
);
/** A real token made invalid: a character changed inside its payload or signature (never the last, whose low bits may be padding). */
const mutated = (token: string) =>
  fc.tuple(fc.integer({ min: 10, max: token.length - 10 }), fc.constantFrom('A', 'B', '_', '-', '.', '')).map(([i, c]) => {
    const out = token.slice(0, i) + (token[i] === c ? (c === 'A' ? 'B' : 'A') : c) + token.slice(i + 1);
    return out === token ? `${token}x` : out;
  });

const xff = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV6().map((ip) => `[${ip}]:443`),
  fc.tuple(fc.ipV4(), fc.nat(65535)).map(([ip, p]) => `${ip}:${p}`),
  fc.array(fc.oneof(fc.ipV4(), headerValue(20)), { minLength: 2, maxLength: 30 }).map((a) => a.join(', ')),
  headerValue(),
);
const xfccValue = () =>
  fc.oneof(
    headerValue(200),
    fc.string({ maxLength: 200 }).map((s) => `Cert="${encodeURIComponent(s)}"`),
    fc.constantFrom('Cert=', 'Cert=""', 'Chain=";;;"', '"', '=', ';', ',', 'Hash=00;Cert="%E0%A4%A"', 'Cert="%"', 'By=spiffe://x;URI=spiffe://y'),
    fc.integer({ min: 20, max: fuzzXfcc.length - 20 }).map((n) => fuzzXfcc.slice(0, n)),
    fc.constant(`${fuzzXfcc},${fuzzXfcc}`),
    fc.constant(`Hash=00;Cert="${encodeURIComponent(pki.other.certPem)}";Chain="${encodeURIComponent(fuzzCert.chainPem)}"`),
    fc.tuple(fc.integer({ min: 0, max: fuzzXfcc.length - 1 }), fc.constantFrom(';', ',', '"', '%', '\\', 'A')).map(([i, c]) => fuzzXfcc.slice(0, i) + c + fuzzXfcc.slice(i + 1)),
  );

/** Random extra headers: X-Forwarded-For, XFCC, and anything else. */
const extraHeaders = () =>
  fc.array(
    fc.oneof(
      xff.map((v): Header => ['X-Forwarded-For', v]),
      xfccValue().map((v): Header => ['X-Forwarded-Client-Cert', v]),
      fc.tuple(headerName, headerValue()),
    ),
    { maxLength: 4 },
  );

const contentType = fc.oneof(
  fc.constantFrom('application/json', 'APPLICATION/JSON; charset=utf-8', 'application/json;charset=latin1', 'application/jsonx', 'text/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain', '', ';', 'application/json, text/plain'),
  headerValue(40),
);

const junkQuery = fc.oneof(
  fc.constant(''),
  fc.webQueryParameters().map((q) => `?${q}`),
  fc.constantFrom('?', '?%', '?%zz', '?a=%E0%A4%A', '?&&&', '?a[b]=c', '?__proto__[x]=1', `?${'a'.repeat(4000)}`),
);

// ---------------------------------------------------------------------------------------------

describe('POST /v1/tasks: hostile JSON', () => {
  it('a wrong type or value at any field (one to three at once), stray and prototype keys: 400, nothing written', async () => {
    const corruption = fc.uniqueArray(fc.constantFrom(...Object.keys(startFields)), { minLength: 1, maxLength: 3 }).chain((paths) =>
      fc.tuple(fc.constant(paths), fc.tuple(...paths.map((p) => startFields[p]!))),
    );
    const stray = fc.option(fc.tuple(fc.constantFrom('', 'attestation.', 'intent.'), strayKey, fc.jsonValue({ maxDepth: 2 })), { nil: undefined });
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(corruption, stray, extraHeaders(), async ([paths, values], extra, headers) => {
          const body = validFuzzStart() as Record<string, any>;
          paths.forEach((p, i) => setPath(body, p, values[i]));
          if (extra) setPath(body, `${extra[0]}${extra[1]}`, extra[2]);
          const text = json(body);
          const sent = await send(request('POST', '/v1/tasks', [jsonType, ...headers], text));
          expectRefusedStart(checkReply(sent, 'POST', `start ${paths.join(',')}`), text, JSON.parse(text));
        }),
        { numRuns: runs(250) },
      ),
    );
  });

  it('a single stray key anywhere (prototype names too): 400, and Object.prototype untouched', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(fc.constantFrom('', 'attestation.', 'intent.'), strayKey, fc.jsonValue({ maxDepth: 3 }), async (where, key, value) => {
          const text = json(validFuzzStart()).replace(where === '' ? /^\{/ : where === 'attestation.' ? /"attestation":\{/ : /"intent":\{/, (m) => `${m}${json(key)}:${json(value)},`);
          const r = checkReply(await send(request('POST', '/v1/tasks', [jsonType], text)), 'POST', `stray ${where}${key}`);
          expect(r.status, r.body.toString()).toBe(400);
          expect(Object.getOwnPropertyNames(Object.prototype).filter((n) => !n.startsWith('__') && !OBJECT_PROTO.has(n))).toEqual([]);
        }),
        { numRuns: runs(150) },
      ),
    );
  });

  it('arbitrary JSON documents, with or without valid evidence beside them: 4xx, nothing written', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(fc.jsonValue(), fc.boolean(), fc.boolean(), async (doc, withToken, withCert) => {
          const body = withToken && doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? { ...doc, attestation: { kind: 'oidc', token: fuzzToken } } : doc;
          const headers: Header[] = withCert ? [jsonType, ['X-Forwarded-Client-Cert', fuzzXfcc]] : [jsonType];
          const r = checkReply(await send(request('POST', '/v1/tasks', headers, json(body))), 'POST', 'arbitrary JSON');
          expect(r.status).toBeGreaterThanOrEqual(400);
        }),
        { numRuns: runs(200) },
      ),
    );
  });

  it('huge strings and arrays near and beyond http.max_body_bytes: 400 below the limit (401 for a platform token), 413 above', async () => {
    const field = fc.constantFrom('attestation.token', 'intent.purpose', 'intent.audience', 'intent.actions', 'intent.resources', 'stray');
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(field, fc.integer({ min: MAX_BODY - 1500, max: MAX_BODY + 3000 }), async (where, target) => {
          const base = validFuzzStart() as Record<string, any>;
          const overhead = json(base).length + 20;
          const n = Math.max(1, target - overhead);
          if (where === 'intent.actions' || where === 'intent.resources') setPath(base, where, Array.from({ length: Math.ceil(n / 6) }, () => 'read'));
          else setPath(base, where === 'stray' ? 'padding' : where, 'x'.repeat(n));
          const text = json(base);
          const sent = await send(request('POST', '/v1/tasks', [jsonType], text));
          if (Buffer.byteLength(text) > MAX_BODY && !parseReply(sent.raw)) {
            // The 413 closes the connection; a reset can beat the answer to a client still writing.
            expect(sent.error, 'no 413 and no reset').toMatch(/ECONNRESET|EPIPE/);
            return;
          }
          const r = checkReply(sent, 'POST', `huge ${where} ${text.length}`);
          // A platform token longer than attestation.oidc.max_token_bytes is bad evidence: 401 (issue 12).
          expect(r.status).toBe(Buffer.byteLength(text) > MAX_BODY ? 413 : where === 'attestation.token' ? 401 : 400);
        }),
        { numRuns: runs(40) },
      ),
    );
  });

  it('deep nesting (thousands of levels) at any field: 400 below the limit, 413 above, the server unharmed', async () => {
    const where = fc.constantFrom('', ...Object.keys(startFields), 'stray');
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(where, fc.integer({ min: 1000, max: 40_000 }), fc.constantFrom('array' as const, 'object' as const), async (path, depth, kind) => {
          const marker = '"__DEEP__"';
          let text: string;
          if (path === '') text = nested(depth, kind);
          else {
            const base = validFuzzStart() as Record<string, any>;
            setPath(base, path === 'stray' ? 'padding' : path, '__DEEP__');
            text = json(base).replace(marker, nested(depth, kind));
          }
          const sent = await send(request('POST', '/v1/tasks', [jsonType], text));
          if (Buffer.byteLength(text) > MAX_BODY && !parseReply(sent.raw)) return void expect(sent.error).toMatch(/ECONNRESET|EPIPE/);
          const r = checkReply(sent, 'POST', `deep ${kind} ${depth} at ${path || 'root'}`);
          expect(r.status).toBe(Buffer.byteLength(text) > MAX_BODY ? 413 : 400);
        }),
        { numRuns: runs(40) },
      ),
    );
  });

  it('invalid UTF-8 anywhere in an otherwise valid request: 400 invalid_request', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(fc.nat(), badUtf8, async (at, bytes) => {
          const text = Buffer.from(json(validFuzzStart()));
          const i = at % (text.length + 1);
          const body = Buffer.concat([text.subarray(0, i), Buffer.from(bytes), text.subarray(i)]);
          const r = checkReply(await send(request('POST', '/v1/tasks', [jsonType], body)), 'POST', `utf8 ${bytes} at ${i}`);
          expect(r.status).toBe(400);
          expect(JSON.parse(r.body.toString()).error_description).toBe('request body is not valid UTF-8');
        }),
        { numRuns: runs(100) },
      ),
    );
  });

  it('duplicate keys: the last one counts (as JSON.parse reads it), so an invalid last one is a 400', async () => {
    const key = fc.constantFrom('attestation', 'intent', 'ttl', 'lifetime');
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(key, async (k) => {
          const valid = validFuzzStart() as Record<string, unknown>;
          const text = withDuplicate(valid, k, valid[k], k === 'ttl' || k === 'lifetime' ? '1s' : 42);
          const r = checkReply(await send(request('POST', '/v1/tasks', [jsonType], text)), 'POST', `duplicate ${k}`);
          expect(r.status).toBe(400);
        }),
        { numRuns: runs(12) },
      ),
    );
    // The other way round, a valid last value is accepted: documented, for the real workload.
    const token = await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE });
    const valid = { attestation: { kind: 'oidc', token }, intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/x'], purpose: 'duplicate keys' } };
    const r = parseReply((await send(request('POST', '/v1/tasks', [jsonType], withDuplicate(valid, 'intent', 42, valid.intent)))).raw);
    expect(r?.status).toBe(201);
  });

  it('content types, charsets and bodies that are not JSON: 400, nothing written', async () => {
    // The one valid-looking document asks for a ttl under the floor: refused whatever the type.
    const almost = json({ ...validFuzzStart(), ttl: '1s' });
    const body = fc.oneof(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)), fc.constant(almost), fc.constantFrom('', ' ', '\ufeff{}', 'null', '[]', 'true', '{"a":1}{"b":2}', 'NaN', '{"a":1,}', "{'a':1}"));
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(fc.option(contentType, { nil: undefined }), body, async (type, b) => {
          const headers: Header[] = type === undefined ? [] : [['Content-Type', type]];
          const r = checkReply(await send(request('POST', '/v1/tasks', headers, b)), 'POST', `type ${type}`);
          expect(r.status).toBe(400);
        }),
        { numRuns: runs(150) },
      ),
    );
  });
});

/** Object.prototype's own names in this process before fuzzing. */
const OBJECT_PROTO = new Set(Object.getOwnPropertyNames(Object.prototype));

describe('POST /v1/tasks/{grant}/renew and /end: hostile grant ids, bearer tokens and bodies', () => {
  /** A path segment for the grant: a real one, a near miss, or junk (percent-encoded or raw). */
  const grantSegment = () =>
    fc.oneof(
      fc.constantFrom(...real.map((r) => r.grant)),
      fc.constantFrom(...real.map((r) => r.grant)).chain((g) => mutated(g)),
      fc.string({ maxLength: 40 }).map(encodeURIComponent),
      fc.webSegment(),
      fc.constantFrom('%', '%zz', '%E0%A4%A', '%00', '..', '.', '%2e%2e', 'g_', '%2F', ';', '~', 'a%20b'),
      fc.integer({ min: 1000, max: 6000 }).map((n) => 'g'.repeat(n)),
    );
  /** Authorization headers: none, Bearer with junk or real-but-wrong tokens, other schemes, malformed. */
  const authorization = (forbidden: (token: string) => boolean) =>
    fc.oneof(
      fc.constant(undefined),
      garbageToken.map((t) => `Bearer ${t}`),
      fc.constantFrom(...real.map((r) => r.token)).chain(mutated).map((t) => `Bearer ${t}`),
      fc.constantFrom(...real.map((r) => r.token)).filter((t) => !forbidden(t)).map((t) => `Bearer ${t}`),
      fc.constant(`Bearer ${fuzzToken}`),
      fc.constantFrom('Bearer', 'Bearer ', 'bearer  x', 'Basic dXNlcjpwYXNz', 'Bearer a b', 'Bearer "x"', 'Bearer x,Bearer y', 'DPoP x', 'Bearerx'),
      headerValue(80).map((v) => `Bearer ${v}`),
      headerValue(80),
    );
  const renewBody = fc.oneof(
    fc.constant(undefined),
    fc.jsonValue().map(json),
    fc.constantFrom('{}', '{"ttl":"5m"}', json({ attestation: { kind: 'oidc', token: 'x' } })),
    fc.constant(() => json({ attestation: { kind: 'oidc', token: fuzzToken } })).map((f) => f()),
    fc.string({ maxLength: 100 }),
  );

  it('renew: 4xx JSON, never a new token, nothing written (no evidence of the real workload is ever sent)', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(grantSegment(), authorization(() => false), renewBody, fc.option(contentType, { nil: undefined }), extraHeaders(), junkQuery, async (grant, auth, body, type, extra, query) => {
          const headers: Header[] = [...(auth !== undefined ? [['Authorization', auth] as Header] : []), ...(type !== undefined ? [['Content-Type', type] as Header] : body !== undefined ? [jsonType] : []), ...extra];
          const r = checkReply(await send(request('POST', `/v1/tasks/${grant}/renew${query}`, headers, body)), 'POST', `renew ${grant.slice(0, 60)}`);
          expect(r.status, r.body.toString().slice(0, 300)).toBeGreaterThanOrEqual(400);
        }),
        { numRuns: runs(250) },
      ),
    );
  });

  it('end: 4xx JSON for every token that is not the grant\'s own, nothing written', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(
          grantSegment().chain((grant) => {
            // Never the one request that must succeed: the grant's own current token on its own path.
            const own = real.find((r) => r.grant === grant)?.token;
            return fc.tuple(fc.constant(grant), authorization((t) => t === own));
          }),
          fc.option(fc.oneof(fc.string({ maxLength: 50 }), fc.jsonValue().map(json)), { nil: undefined }),
          extraHeaders(),
          junkQuery,
          async ([grant, auth], body, extra, query) => {
            const headers: Header[] = [...(auth !== undefined ? [['Authorization', auth] as Header] : []), ...extra];
            const r = checkReply(await send(request('POST', `/v1/tasks/${grant}/end${query}`, headers, body)), 'POST', `end ${grant.slice(0, 60)}`);
            expect(r.status, r.body.toString().slice(0, 300)).toBeGreaterThanOrEqual(400);
          },
        ),
        { numRuns: runs(250) },
      ),
    );
  });
});

describe('POST /oauth2/introspect and /oauth2/revoke: hostile forms', () => {
  const paramName = fc.oneof(fc.constantFrom('token', 'token', 'token_type_hint', 'client_id', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'Token', 'token[]', ''), fc.string({ maxLength: 10 }));
  const paramValue = () =>
    fc.oneof(
      garbageToken,
      fc.string({ maxLength: 60 }),
      fc.constantFrom(...real.map((r) => r.token)).chain(mutated),
      fc.constant(fuzzToken),
      fc.constant(issuer.forgeNone({ sub: 'x', aud: 'db.payments' })),
      fc.integer({ min: 16_000, max: 17_000 }).map((n) => 'a'.repeat(n)),
    );
  /** A form body: encoded pairs, raw junk, percent junk, bad UTF-8; a real token only twice (a repeated parameter). */
  const form = () =>
    fc.oneof(
      fc.array(fc.tuple(paramName, paramValue()), { maxLength: 5 }).map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')),
      fc.array(fc.tuple(paramName, paramValue()), { maxLength: 4 }).map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&')),
      fc.constantFrom(...real.map((r) => r.token)).map((t) => `token=${t}&token=${t}`),
      fc.constantFrom(...real.map((r) => r.token)).map((t) => `token=${t}&token=x`),
      fc.constantFrom(...real.map((r) => r.token)).map((t) => `token=x&token=${encodeURIComponent(t)}`),
      fc.constantFrom('token=%', 'token=%zz', 'token=%E0%A4%A', 'token=%00', '=&=&=', '&&&', 'token', 'token=', '%', '+', 'token=a+b', 'token=\u00ff'),
      fc.tuple(badUtf8, fc.string({ maxLength: 20 })).map(([b, s]) => Buffer.concat([Buffer.from(`token=${s}`), Buffer.from(b)])),
      fc.integer({ min: MAX_BODY - 100, max: MAX_BODY + 2000 }).map((n) => `token=${'a'.repeat(n)}`),
    );
  const auth = fc.oneof(
    fc.constant(undefined),
    fc.constant(`Bearer ${RS_CREDENTIAL}`),
    fc.constant(`Bearer ${RS_CREDENTIAL}x`),
    garbageToken.map((t) => `Bearer ${t}`),
    fc.constantFrom('Basic cnM6c2VjcmV0', 'Bearer', 'Bearer a b'),
    headerValue(60),
  );

  for (const route of ['/oauth2/introspect', '/oauth2/revoke'] as const) {
    it(`${route}: 200 only as nothing (${route.endsWith('introspect') ? '{"active":false}' : '{}'}), else 4xx JSON; nothing written`, async () => {
      await writesNothing(() =>
        fc.assert(
          fc.asyncProperty(form(), auth, fc.option(contentType, { nil: undefined }), extraHeaders(), junkQuery, async (body, authorization, type, extra, query) => {
            const headers: Header[] = [...(authorization !== undefined ? [['Authorization', authorization] as Header] : []), type !== undefined ? ['Content-Type', type] : formType, ...extra];
            const sent = await send(request('POST', `${route}${query}`, headers, body));
            if (Buffer.byteLength(body) > MAX_BODY && !parseReply(sent.raw)) return void expect(sent.error).toMatch(/ECONNRESET|EPIPE/);
            const r = checkReply(sent, 'POST', `${route} ${String(body).slice(0, 80)}`);
            if (r.status === 200) expect(JSON.parse(r.body.toString())).toEqual(route.endsWith('introspect') ? { active: false } : {});
            else expect(r.status).toBeGreaterThanOrEqual(400);
          }),
          { numRuns: runs(200) },
        ),
      );
    });
  }
});

describe('the read routes, unknown paths and methods', () => {
  const known = ['/.well-known/jwks.json', '/.well-known/oauth-authorization-server', '/healthz', '/readyz'];
  const path = fc.oneof(
    fc.constantFrom(...known, '/v1/tasks', '/oauth2/token', '/v1/grants', '/v1/audit', '/metrics', '/', '//healthz', '/healthz/', '/HEALTHZ', '/.well-known/', '/.well-known/oauth-authorization-server/x', '/v1/tasks/x/renew/y', '/%2e%2e/healthz', '/v1/%2e%2e/healthz'),
    fc.webPath().map((p) => p || '/'),
    fc.array(fc.string({ maxLength: 12 }).map(encodeURIComponent), { maxLength: 6 }).map((segs) => `/${segs.join('/')}`),
    fc.constantFrom(...known).chain((k) => fc.webSegment().map((s) => `${k}/${s}`)),
  );
  const method = fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE');

  it('never a 5xx; known GETs answer 200 with JSON, everything else a JSON 4xx; nothing written', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(method, path, junkQuery, extraHeaders(), fc.option(fc.string({ maxLength: 40 }), { nil: undefined }), async (m, p, q, extra, body) => {
          const r = checkReply(await send(request(m, `${p}${q}`, extra, m === 'GET' || m === 'HEAD' ? undefined : body)), m, `${m} ${p}`);
          if ((m === 'GET' || m === 'HEAD') && known.includes(p)) {
            expect(r.status, `${m} ${p}${q}`).toBe(200);
            if (m === 'GET') expect(JSON.parse(r.body.toString())).toBeTypeOf('object');
          } else if (r.status < 400) {
            expect(['POST', 'GET', 'HEAD']).toContain(m); // a POST to a write route is another test's business
          }
        }),
        { numRuns: runs(250) },
      ),
    );
  });
});

// ---------------------------------------------------------------------------------------------
describe('below the application: bytes HTTP itself refuses', () => {
  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
  /** One header line, possibly broken: bad bytes, no colon, space before the colon, folded. */
  const headerLine = fc.oneof(
    fc.tuple(headerName, headerValue()).map(([k, v]) => `${k}: ${v}`),
    fc.tuple(headerName, fc.string({ maxLength: 30 })).map(([k, v]) => `${k}: ${v}`),
    fc.constantFrom('X-A: a\u0000b', 'X-A: a\rb', 'no-colon', 'X-A : b', ' X-A: folded', 'X-A: a\r\n b', ': empty-name', 'X-A:\u00ff\u00fe', 'Transfer-Encoding: chunked, identity', 'Transfer-Encoding: gzip', 'Expect: 100-continue', 'Expect: nonsense', 'Upgrade: websocket', 'Connection: upgrade'),
    fc.constantFrom('Host: a b', 'Host: [', 'Host: x@y', 'Host: ', 'Host: 127.0.0.1:99999', 'Host: ../', 'Host: a/b'),
    fc.constantFrom('Content-Length: abc', 'Content-Length: -1', 'Content-Length: 1e3', 'Content-Length: 0x10', 'Content-Length:  5', 'Content-Length: 5, 6', 'Content-Length: 99999999999999999999'),
  );
  const requestLine = fc.oneof(
    fc.tuple(fc.constantFrom('GET', 'POST', 'HEAD'), fc.constantFrom('/healthz', '/v1/tasks', '/oauth2/introspect', '/readyz')).map(([m, p]) => `${m} ${p} HTTP/1.1`),
    fc.tuple(token, fc.webPath()).map(([m, p]) => `${m} /${p} HTTP/1.1`),
    fc.constantFrom('GET * HTTP/1.1', 'OPTIONS * HTTP/1.1', 'GET http://127.0.0.1/healthz HTTP/1.1', 'GET http://[/x HTTP/1.1', 'GET https://evil.example/healthz HTTP/1.1', 'CONNECT 127.0.0.1:1 HTTP/1.1', 'GET /healthz HTTP/1.0', 'GET /healthz HTTP/2.0', 'GET /healthz HTTP/1.1x', 'GET /healthz', 'GET  /healthz HTTP/1.1', 'GET /\u0000 HTTP/1.1', 'GET /\u00ff HTTP/1.1', 'GET /a b HTTP/1.1', 'BREW /healthz HTTP/1.1', 'get /healthz HTTP/1.1', 'GET /\\..\\healthz HTTP/1.1'),
    fc.string({ maxLength: 40 }),
    fc.integer({ min: 9000, max: 20_000 }).map((n) => `GET /${'a'.repeat(n)} HTTP/1.1`),
  );
  /** A body that may disagree with the length the headers claim, or be chunked badly. */
  const bodyPart = fc.oneof(
    fc.constant({ headers: [] as string[], body: '' }),
    fc.tuple(fc.nat(40), fc.string({ maxLength: 40 })).map(([n, b]) => ({ headers: [`Content-Length: ${n}`], body: b })),
    fc.tuple(fc.nat(40), fc.string({ maxLength: 40 })).map(([n, b]) => ({ headers: [`Content-Length: ${n}`, `Content-Length: ${n + 1}`], body: b })),
    fc.string({ maxLength: 40 }).map((b) => ({ headers: ['Content-Length: 3', 'Transfer-Encoding: chunked'], body: b })),
    fc.constantFrom('zz\r\nab\r\n0\r\n\r\n', '5\r\nab\r\n0\r\n\r\n', '-1\r\n\r\n', '0\r\n', 'ffffffffffffffff\r\nx', '3;ext=\u0000\r\nabc\r\n0\r\n\r\n').map((b) => ({ headers: ['Transfer-Encoding: chunked'], body: b })),
  );

  it('without a Host header: HTTP/1.1 is a JSON 400, HTTP/1.0 (as health checkers send it) is served', async () => {
    const v11 = parseReply((await send(Buffer.from('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'))).raw);
    expect(v11?.status).toBe(400);
    expect(JSON.parse(v11!.body.toString())).toEqual({ error: 'invalid_request', error_description: 'the request has no Host header' });
    const v10 = parseReply((await send(Buffer.from('GET /healthz HTTP/1.0\r\n\r\n'))).raw);
    expect(v10?.status).toBe(200);
  });

  it('malformed request lines, headers, hosts, lengths and chunking: a JSON 4xx (bare only for an unmet Expect: 417), never a 5xx or a hang', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(
          requestLine,
          fc.array(headerLine, { maxLength: 4 }),
          bodyPart,
          fc.boolean(),
          fc.option(fc.uint8Array({ minLength: 1, maxLength: 300 }), { nil: undefined }),
          async (line, lines, part, withHost, bytes) => {
            // Every exchange ends with our FIN: an incomplete request is refused at once, not after the timeout.
            const data = bytes
              ? Buffer.from(bytes)
              : Buffer.from(`${[line, ...(withHost ? ['Host: 127.0.0.1'] : []), 'Connection: close', ...lines, ...part.headers].join('\r\n')}\r\n\r\n${part.body}`, 'latin1');
            const sent = await send(data, { halfClose: true, timeoutMs: 5000 });
            expect(sent.closed, 'the server closes every such connection').toBe(true);
            checkRawReply(sent, JSON.stringify(data.toString('latin1').slice(0, 120)), bytes ? 'GET' : line.split(' ')[0]);
          },
        ),
        { numRuns: runs(300) },
      ),
    );
    expect(await healthy()).toBe(true);
  });

  it('a body that stops before its Content-Length (client FIN) is refused and the connection closed at once', async () => {
    for (const [path, type] of [['/v1/tasks', 'application/json'], ['/v1/tasks/g_x/renew', 'application/json'], ['/oauth2/introspect', 'application/x-www-form-urlencoded'], ['/oauth2/revoke', 'application/x-www-form-urlencoded']] as const) {
      const sent = await send(Buffer.from(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${type}\r\nContent-Length: 1000\r\n\r\n{"intent":`), { halfClose: true, timeoutMs: 5000 });
      expect(sent.closed).toBe(true);
      expect(sent.ms).toBeLessThan(900); // not the request timeout (1 s): the FIN ended it
      checkRawReply(sent, path);
    }
    // And a client that resets the connection half-way: nothing to answer, nothing breaks.
    for (let i = 0; i < 20; i++) {
      const socket = connect(port, '127.0.0.1');
      await new Promise<void>((resolve) => socket.on('connect', () => resolve()));
      socket.write(`POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"intent":${'['.repeat(i * 50)}`);
      await new Promise((r) => setTimeout(r, i % 3));
      socket.resetAndDestroy();
    }
    expect(await healthy()).toBe(true);
  });
});

async function healthy(): Promise<boolean> {
  const r = parseReply((await send(request('GET', '/healthz'))).raw);
  return r?.status === 200;
}

describe('client certificates: forwarded by the trusted proxy (XFCC), and over an mTLS handshake', () => {
  it('XFCC values, real, broken and hostile, on a valid start: 201 only for the real certificate, 401 otherwise; grants written = 201s', async () => {
    const before = await snapshot();
    let accepted = 0;
    await fc.assert(
      // The real header one time in ten, the broken ones the rest.
      fc.asyncProperty(fc.oneof({ arbitrary: xfccValue(), weight: 9 }, { arbitrary: fc.constant(fuzzXfcc), weight: 1 }), fc.option(xff, { nil: undefined }), async (value, forwardedFor) => {
        const headers: Header[] = [jsonType, ['X-Forwarded-Client-Cert', value], ...(forwardedFor !== undefined ? [['X-Forwarded-For', forwardedFor] as Header] : [])];
        const r = checkReply(await send(request('POST', '/v1/tasks', headers, json({ intent: fuzzIntent }))), 'POST', `xfcc ${value.slice(0, 80)}`);
        if (r.status === 201) {
          accepted++;
          expect(JSON.parse(r.body.toString()).workload).toBe(FUZZ_SVID);
        } else expect(r.status, r.body.toString()).toBe(401);
      }),
      { numRuns: runs(150) },
    );
    const after = await snapshot();
    expect(accepted).toBeGreaterThan(0); // the real header was among them
    expect(after.fuzzGrants).toEqual({ ...before.fuzzGrants, [FUZZ_SVID]: before.fuzzGrants[FUZZ_SVID]! + accepted });
    expect(after.fuzzGrants[FUZZ_K8S]).toBe(before.fuzzGrants[FUZZ_K8S]);
    expect(after.real).toEqual(before.real);
  });

  it('XFCC as the credential of a resource server on introspect and revoke: nothing active, nothing revoked', async () => {
    await writesNothing(() =>
      fc.assert(
        fc.asyncProperty(fc.constantFrom('/oauth2/introspect', '/oauth2/revoke'), fc.oneof(xfccValue(), fc.constant(fuzzXfcc)), garbageToken, async (route, value, token) => {
          const r = checkReply(await send(request('POST', route, [formType, ['X-Forwarded-Client-Cert', value]], `token=${encodeURIComponent(token)}`)), 'POST', `${route} xfcc`);
          if (r.status === 200) expect(JSON.parse(r.body.toString())).toEqual(route.endsWith('introspect') ? { active: false } : {});
          // An overlong token is invalid_request (revoke reads the form first; introspect once the caller is authenticated).
          else if (token.length > MAX_TASK_TOKEN_BYTES) expect([400, 401]).toContain(r.status);
          else expect(r.status).toBe(401);
        }),
        { numRuns: runs(100) },
      ),
    );
  });

  it('over HTTPS with mTLS: hostile bodies and headers with and without a client certificate are 4xx JSON; a valid start still works', async () => {
    const tlsBroker = await startTestBroker(issuer, {
      tls: {
        cert: files.write('server.pem', pki.server.chainPem),
        key: files.write('server-key.pem', pki.server.keyPem),
        client_ca_bundles: { 'example.org': files.write('tls-bundle.pem', pki.example.certPem) },
      },
      attestation: { x509: {} },
      policies: [{ name: 'fuzz', workloads: [FUZZ_SVID], audiences: ['db.fuzz'], actions: ['read'] }],
    });
    const https = (path: string, body: Buffer | string | undefined, headers: Header[], cert: boolean) =>
      new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>((resolve, reject) => {
        const req = httpsRequest(`${tlsBroker.url}${path}`, {
          method: 'POST',
          ca: pki.example.certPem,
          agent: false,
          ...(cert ? { cert: fuzzCert.chainPem, key: fuzzCert.keyPem } : {}),
          headers: Object.fromEntries(headers),
        }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.end(body);
      });
    try {
      const corrupt = fc.uniqueArray(fc.constantFrom(...Object.keys(startFields).filter((k) => k.startsWith('intent') || k === 'ttl' || k === 'lifetime')), { minLength: 1, maxLength: 2 }).chain((paths) =>
        fc.tuple(fc.constant(paths), fc.tuple(...paths.map((p) => startFields[p]!))),
      );
      await fc.assert(
        fc.asyncProperty(corrupt, fc.boolean(), extraHeaders(), fc.constantFrom('/v1/tasks', '/oauth2/introspect', '/v1/tasks/g_x/renew'), async ([paths, values], cert, extra, path) => {
          const body = { intent: { ...fuzzIntent } } as Record<string, any>;
          paths.forEach((p, i) => setPath(body, p, values[i]));
          const headers: Header[] = [path.startsWith('/oauth2') ? formType : jsonType, ...extra.filter(([k]) => !/^(host|content-length)$/i.test(k))];
          const r = await https(path, path.startsWith('/oauth2') ? `token=${encodeURIComponent(json(body))}` : json(body), headers, cert);
          expect(r.status, r.body.toString()).toBeGreaterThanOrEqual(400);
          expect(r.status, r.body.toString()).toBeLessThan(500);
          const parsed = JSON.parse(r.body.toString()) as Record<string, unknown>;
          expect(ERROR_CODES).toContain(parsed.error);
          expect(typeof parsed.error_description).toBe('string');
        }),
        { numRuns: runs(40) },
      );
      expect(await tlsBroker.store.listWorkloadGrants(FUZZ_SVID, { now: Date.now() })).toEqual([]);
      const ok = await https('/v1/tasks', json({ intent: fuzzIntent }), [jsonType], true);
      expect(ok.status, ok.body.toString()).toBe(201);
    } finally {
      await tlsBroker.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe('slow-loris and memory', () => {
  it('many connections trickling headers or bodies are cut off after http.request_timeout (1 s) while normal requests are served', async () => {
    const N = 25;
    type Loris = { closedAt?: number; reply: string; openedAt: number };
    const open = (first: string, drip: string): Promise<Loris> =>
      new Promise((resolve) => {
        const l: Loris = { reply: '', openedAt: performance.now() };
        const socket = connect(port, '127.0.0.1');
        const timer = setInterval(() => socket.writable && socket.write(drip), 150);
        const giveUp = setTimeout(() => socket.destroy(), 15_000); // the assertion below fails then
        socket.on('data', (d: Buffer) => (l.reply += d.toString('latin1')));
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearInterval(timer);
          clearTimeout(giveUp);
          l.closedAt = performance.now();
          resolve(l);
        });
        socket.write(first);
      });
    const loris = [
      ...Array.from({ length: N }, () => open('POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n', 'X-Drip: a\r\n')),
      ...Array.from({ length: N }, () => open('POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{"intent":', ' ')),
      ...Array.from({ length: N }, () => open('POST /oauth2/introspect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n', '1\r\na\r\n')),
    ];
    let closedSoFar = 0;
    for (const p of loris) void p.then(() => closedSoFar++);
    await new Promise((r) => setTimeout(r, 200));
    // While they hang on: a task start, a health check and an introspection are answered.
    const served = await startReal();
    real.push(served);
    expect(await healthy()).toBe(true);
    const intro = parseReply((await send(request('POST', '/oauth2/introspect', [formType, ['Authorization', `Bearer ${RS_CREDENTIAL}`]], `token=${served.token}`))).raw);
    expect(JSON.parse(intro!.body.toString())).toMatchObject({ active: true });
    expect(closedSoFar, 'the normal requests were answered while the slow connections were still open').toBe(0);
    const done = await Promise.all(loris);
    for (const l of done) {
      expect(l.closedAt, 'closed by the server').toBeDefined();
      const lived = l.closedAt! - l.openedAt;
      expect(lived).toBeGreaterThanOrEqual(950); // not before request_timeout...
      expect(lived).toBeLessThan(10_000); // ...and well before the client gives up: cut off by the server
      expect(l.reply, l.reply).toMatch(/^(HTTP\/1\.1 408 |$)/);
    }
    expect(done.filter((l) => l.reply.startsWith('HTTP/1.1 408')).length).toBeGreaterThan(N);
    expect(await healthy()).toBe(true);
  });

  // On HTTPS, http.request_timeout starts once TLS is up: a connection that never finishes its
  // handshake is cut off by the TLS handshakeTimeout, which src/server.ts sets to the same.
  it('on HTTPS, connections that never finish the TLS handshake are cut off after http.request_timeout too', async () => {
    const tlsBroker = await startTestBroker(issuer, {
      http: { request_timeout: '1s' },
      tls: { cert: files.write('hs-server.pem', pki.server.chainPem), key: files.write('hs-server-key.pem', pki.server.keyPem) },
    });
    try {
      const closed = await Promise.all(
        [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])].map(
          (hello) =>
            new Promise<boolean>((resolve) => {
              const socket = connect(tlsBroker.port, '127.0.0.1');
              socket.on('error', () => undefined);
              socket.on('close', () => resolve(true));
              if (hello.length) socket.write(hello);
              setTimeout(() => {
                resolve(false);
                socket.destroy();
              }, 3500);
            }),
        ),
      );
      expect(closed).toEqual([true, true]);
    } finally {
      await tlsBroker.close();
    }
  });

  it('memory stays bounded: the heap after forced GC grows by less than 8 MiB over 3000 hostile requests after a warm-up', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const hostile = fc.oneof(
      fc.tuple(fc.constantFrom(...Object.keys(startFields)), fc.constant(null)).chain(([p]) => startFields[p]!.map((v) => {
        const body = validFuzzStart() as Record<string, any>;
        setPath(body, p, v);
        return request('POST', '/v1/tasks', [jsonType], json(body));
      })),
      fc.jsonValue().map((v) => request('POST', '/v1/tasks', [jsonType], json(v))),
      fc.integer({ min: MAX_BODY - 100, max: MAX_BODY + 100 }).map((n) => request('POST', '/v1/tasks', [jsonType], json({ intent: 'x'.repeat(n) }))),
      fc.integer({ min: 1000, max: 20_000 }).map((d) => request('POST', '/v1/tasks', [jsonType], nested(d, 'array'))),
      fc.tuple(garbageToken, xff).map(([t, ip]) => request('POST', `/v1/tasks/${real[0]!.grant}/renew`, [jsonType, ['Authorization', `Bearer ${t}`], ['X-Forwarded-For', ip]], '{}')),
      fc.tuple(garbageToken, xff).map(([t, ip]) => request('POST', '/oauth2/introspect', [formType, ['Authorization', `Bearer ${RS_CREDENTIAL}`], ['X-Forwarded-For', ip]], `token=${encodeURIComponent(t)}`)),
      xfccValue().map((v) => request('POST', '/v1/tasks', [jsonType, ['X-Forwarded-Client-Cert', v]], json({ intent: { ...fuzzIntent, audience: 7 } }))),
      fc.webPath().map((p) => request('GET', `/${p}`)),
    );
    const run = async (count: number, seed: number) => {
      for (let done = 0; done < count; done += 100) {
        const batch = fc.sample(hostile, { numRuns: 100, seed: seed + done });
        for (let i = 0; i < batch.length; i += 4) {
          await Promise.all(batch.slice(i, i + 4).map(async (data) => {
            const sent = await send(data);
            for (const status of statusesIn(sent.raw)) expect(status).toBeLessThan(500);
          }));
        }
      }
    };
    const heap = () => {
      gc();
      gc();
      return process.memoryUsage().heapUsed;
    };
    await run(500, 1);
    const before = heap();
    await run(3000, 10_000);
    const after = heap();
    if (process.env.FUZZ_REPORT) console.info(`fuzz: heap ${(before / 2 ** 20).toFixed(1)} MiB -> ${(after / 2 ** 20).toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(8 * 2 ** 20);
  }, 60_000);
});

describe('log lines of refused requests', () => {
  it('stay bounded whatever the request echoes: 6000 unrecognized keys (src/broker.ts bounds the answer), a 15 KB path (src/http/errors.ts clips the log)', async () => {
    const marker = `marker${Date.now()}`;
    const keys = Object.fromEntries([marker, ...Array.from({ length: 6000 }, (_, i) => `k${i}`)].map((k) => [k, 1]));
    const body = json({ ...keys, intent: fuzzIntent });
    const r = checkReply(await send(request('POST', '/v1/tasks', [jsonType], body)), 'POST', 'many keys');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body.toString()).error_description.length).toBeLessThan(1024); // src/broker.ts bounds each problem it names
    const path = `/v1/tasks/${marker}${'x'.repeat(15_000)}/end`;
    expect(checkReply(await send(request('POST', path)), 'POST', 'long path').status).toBe(400);
    const lines = readFileSync(captureFilePath()!, 'utf8').split('\n').filter((l) => l.includes(marker));
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.length).toBeLessThan(4096);
    expect(lines.filter((l) => /…\(\d+ chars\)/.test(l))).toHaveLength(1); // the path, clipped in the log
  });
});

describe('afterwards', () => {
  it('the broker still serves: a well-formed task start gets 201, /healthz and /readyz 200; it never logged an unhandled error', async () => {
    const fresh = await startReal();
    expect(await broker.store.getGrant(fresh.grant)).toMatchObject({ workload: REAL, status: 'active' });
    expect(await healthy()).toBe(true);
    expect(parseReply((await send(request('GET', '/readyz'))).raw)?.status).toBe(200);
    expect(severe).toEqual([]);
    // The real grants the fuzzing could have touched are live and unrenewed.
    for (const r of real.slice(0, 2)) expect(await broker.store.getGrant(r.grant)).toMatchObject({ status: 'active', generation: 1 });
  });
});
