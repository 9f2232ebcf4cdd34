/**
 * JWT conformance (issue 12, "What must work" items 1, 2 and 4): a table of platform tokens, each
 * citing the section of the spec that decides it, sent to a real broker process (`jit-broker
 * serve` with a YAML config, memory store) over HTTP. Tokens are signed with the real keys of real
 * local OIDC issuers (discovery + JWKS over HTTP); the malformed ones (padding, duplicate members,
 * non-canonical base64url, ...) are hand-made text whose signature is computed over exactly that
 * text, so that the strict-JOSE rule under test, and no signature failure, is what refuses them.
 *
 * Every refused token must be a 401 `invalid_client` with a description that says why; no input
 * may cause a 5xx; a URL in a token (`jku`, `x5u`) is never fetched (a local server counts requests).
 *
 * The broker runs on the system clock (it is a separate process), so the cases that depend on
 * "now" keep margins of tens of seconds from every boundary; the exact-second leeway boundaries
 * are in test/resilience/clock-skew.test.ts (injected clock). Lifetime boundaries (`exp - iat`,
 * `exp - nbf`) do not depend on now and are exact here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { freePort } from '../../src/util/net.js';
import { postJson } from '../helpers/broker.js';
import { captureChildOutput } from '../helpers/log-capture.js';

const CLI = ['--import', 'tsx', 'src/cli/main.ts'];
const AUD = 'jit-broker';
const DAY = 86_400;
/** The default platform-token size limit (attestation.oidc.max_token_bytes). */
const MAX_TOKEN_BYTES = 16_384;
/** The nesting cap of the strict parser (src/protocol/jose-strict.ts), the document itself counted as level 1. */
const MAX_DEPTH = 16;

/** The issuers the broker trusts, each configured for a group of cases. */
interface Issuers {
  /** Kubernetes preset; defaults (leeway 30 s, max_token_age 24 h, max_token_lifetime 24 h, require_kid). */
  k8s: OidcIssuer;
  /** Template `ci://{iss_host}/{sub}`; max_token_lifetime 1 h. */
  tmpl: OidcIssuer;
  /** Template; leeway 60 s (the maximum). */
  wide: OidcIssuer;
  /** Template; require_kid false, one key, max_token_age false (iat optional). */
  nokid: OidcIssuer;
  /** Template; require_kid false, two ES256 keys. */
  twokeys: OidcIssuer;
}
let is: Issuers;
let firstTwoKeysKid: string;
let broker: ChildProcess | undefined;
let url = '';
/** Stands in for any URL a token names (jku, x5u): counts the requests it gets. */
let bait: Server;
let baitRequests = 0;
let baitUrl = '';

const dir = mkdtempSync(join(tmpdir(), 'jit-conformance-jwt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function brokerConfig(port: number) {
  const template = { template: 'ci://{iss_host}/{sub}' };
  const ciPolicy = (i: OidcIssuer) => `ci://${new URL(i.issuer).host}/*`;
  return {
    issuer: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'memory' },
    log: { level: 'debug' },
    limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1_000_000, burst: 1_000_000 } },
    attestation: {
      oidc: {
        issuers: [
          { issuer: is.k8s.issuer, audiences: [AUD], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'conf' } },
          { issuer: is.tmpl.issuer, audiences: [AUD], algorithms: ['ES256'], max_token_lifetime: '1h', mapping: template },
          { issuer: is.wide.issuer, audiences: [AUD], algorithms: ['ES256'], leeway: '60s', mapping: template },
          { issuer: is.nokid.issuer, audiences: [AUD], algorithms: ['ES256'], require_kid: false, max_token_age: false, mapping: template },
          { issuer: is.twokeys.issuer, audiences: [AUD], algorithms: ['ES256'], require_kid: false, mapping: template },
        ],
      },
    },
    policies: [
      {
        name: 'conformance',
        workloads: ['k8s://conf/ns/app/sa/*', ...Object.values(is).filter((i) => i !== is.k8s).map(ciPolicy)],
        audiences: ['api.conf'],
        actions: ['read'],
      },
    ],
  };
}

beforeAll(async () => {
  const [k8s, tmpl, wide, nokid, twokeys] = await Promise.all([1, 2, 3, 4, 5].map(() => startOidcIssuer({ alg: 'ES256' })));
  is = { k8s: k8s!, tmpl: tmpl!, wide: wide!, nokid: nokid!, twokeys: twokeys! };
  firstTwoKeysKid = is.twokeys.kid;
  await is.twokeys.rotateKey();

  bait = createServer((req, res) => {
    baitRequests++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [] }));
  });
  await new Promise<void>((resolve) => bait.listen(0, '127.0.0.1', resolve));
  baitUrl = `http://127.0.0.1:${(bait.address() as AddressInfo).port}`;

  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  const path = join(dir, 'broker.yaml');
  writeFileSync(path, stringify(brokerConfig(port)));
  broker = spawn(process.execPath, [...CLI, 'serve', '--config', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  captureChildOutput(broker, 'conformance-jwt');
  let out = '';
  broker.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  broker.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  for (let tries = 0; !(await fetch(`${url}/readyz`).then((r) => r.ok, () => false)); tries++) {
    if (tries > 300 || broker.exitCode !== null) throw new Error(`broker did not become ready:\n${out.slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);

afterAll(async () => {
  if (broker?.pid && broker.exitCode === null) {
    const exited = new Promise((resolve) => broker!.once('exit', resolve));
    broker.kill('SIGTERM');
    await exited;
  }
  await Promise.all(Object.values(is ?? {}).map((i) => i.close()));
  await new Promise((resolve) => bait?.close(resolve));
});

// ---------------------------------------------------------------------------------------------
// Hand-made tokens

const now = () => Math.floor(Date.now() / 1000);
const b64 = (data: string | Buffer) => Buffer.from(data).toString('base64url');
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The same bytes with the unused low bits of the last character set (RFC 4648 §3.5: canonical encoders leave them zero). */
function spareBitsSet(segment: string): string {
  const spare = ({ 2: 4, 3: 2 } as Record<number, number>)[segment.length % 4];
  if (!spare) throw new Error(`segment of length ${segment.length} has no spare bits`);
  const last = ALPHABET.indexOf(segment.at(-1)!);
  return segment.slice(0, -1) + ALPHABET[last | 1]!;
}
/** base64 padding added to a segment whose length is not a multiple of 4. */
const padded = (segment: string) => segment + '='.repeat((4 - (segment.length % 4)) % 4);
/** The standard base64 alphabet (`+`, `/`) in place of base64url's. */
const standardAlphabet = (segment: string) => segment.replace(/-/g, '+').replace(/_/g, '/');

type Segments = { header: string; payload: string };
interface CraftOptions {
  /** Signed with this issuer's key (default: the token's own issuer). */
  signer?: OidcIssuer;
  /** The key of the signer to sign with (default its current one). */
  signKid?: string;
  /** Header as an object, or exact JSON text. Default `{alg: ES256, kid, typ: JWT}`. */
  header?: Record<string, unknown> | string;
  /** Extra header members (with `header` as an object or the default). */
  headerExtra?: Record<string, unknown>;
  /** Claims as an object (merged over the defaults), or exact JSON text. */
  claims?: Record<string, unknown> | string;
  /** Which defaults to leave out. */
  omit?: string[];
  /** Rewrites the encoded header and payload before signing (the signature covers the result). */
  encode?: (s: Segments) => Segments;
  /** Retries until the encoded segments satisfy this (JSON whitespace added, or a fresh ECDSA signature). */
  until?: (s: Segments & { signature: string }) => boolean;
  /** Rewrites the finished token (after signing: the signature no longer needs to cover it). */
  finish?: (s: Segments & { signature: string }) => string;
}

/** Default claims for an issuer: a valid token for its mapping, issued now, valid 10 minutes. */
function defaultClaims(iss: OidcIssuer): Record<string, unknown> {
  const t = now();
  const base: Record<string, unknown> = { iss: iss.issuer, aud: AUD, iat: t, nbf: t, exp: t + 600 };
  if (iss === is.k8s)
    return { ...base, sub: 'system:serviceaccount:app:runner', 'kubernetes.io': { namespace: 'app', serviceaccount: { name: 'runner', uid: 'u-1' } } };
  return { ...base, sub: 'svc' };
}

async function craft(iss: OidcIssuer, o: CraftOptions = {}): Promise<string> {
  const signer = o.signer ?? iss;
  const kid = o.signKid ?? signer.kid;
  for (let attempt = 0; attempt < 64; attempt++) {
    const space = ' '.repeat(attempt % 4);
    let headerJson: string;
    if (typeof o.header === 'string') headerJson = o.header;
    else {
      const h: Record<string, unknown> = { ...(o.header ?? { alg: 'ES256', kid, typ: 'JWT' }), ...o.headerExtra };
      for (const k of o.omit ?? []) delete h[k];
      headerJson = JSON.stringify(h) + space;
    }
    let payloadJson: string;
    if (typeof o.claims === 'string') payloadJson = o.claims;
    else {
      const c: Record<string, unknown> = { ...defaultClaims(iss), ...o.claims };
      for (const k of o.omit ?? []) delete c[k];
      payloadJson = JSON.stringify(c) + ' '.repeat(Math.floor(attempt / 4) % 4);
    }
    let segs: Segments = { header: b64(headerJson), payload: b64(payloadJson) };
    if (o.encode) segs = o.encode(segs);
    const signature = b64(await signer.signRaw(`${segs.header}.${segs.payload}`, kid));
    const all = { ...segs, signature };
    if (o.until && !o.until(all)) continue;
    return o.finish ? o.finish(all) : `${segs.header}.${segs.payload}.${signature}`;
  }
  throw new Error('could not make the token the case needs');
}

/** Exact JSON text for claims, with members in this order (duplicates allowed). */
const members = (pairs: [string, unknown][], raw: Record<string, string> = {}) =>
  `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${raw[k] ?? JSON.stringify(v)}`).join(',')}}`;
const claimPairs = (iss: OidcIssuer, over: Record<string, unknown> = {}): [string, unknown][] => Object.entries({ ...defaultClaims(iss), ...over });

/** A token of exactly `bytes` bytes (a `pad` claim and header whitespace adjusted). */
async function tokenOfSize(iss: OidcIssuer, bytes: number): Promise<string> {
  const sigLength = 86; // ES256: 64 bytes
  const claims = defaultClaims(iss);
  const header = (spaces: number) => JSON.stringify({ alg: 'ES256', kid: iss.kid, typ: 'JWT' }) + ' '.repeat(spaces);
  const payload = (pad: number) => JSON.stringify({ ...claims, pad: 'x'.repeat(pad) });
  const length = (spaces: number, pad: number) => b64(header(spaces)).length + b64(payload(pad)).length + 2 + sigLength;
  const guess = Math.floor(((bytes - length(0, 0)) * 3) / 4);
  for (let pad = guess - 8; pad <= guess + 8; pad++)
    for (let spaces = 0; spaces < 4; spaces++) if (length(spaces, pad) === bytes) return craft(iss, { header: header(spaces), claims: payload(pad) });
  throw new Error(`no token of ${bytes} bytes`);
}

const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

// ---------------------------------------------------------------------------------------------
// The cases

type Outcome = 201 | { status: 401; why: RegExp };
interface Case {
  name: string;
  /** The spec section that decides the case. */
  cite: string;
  token: () => Promise<string>;
  expect: Outcome;
  /** Extra check after the answer (e.g. the bait server got no request). */
  after?: () => void;
}

const ok = 201 as const;
const refused = (why: RegExp): Outcome => ({ status: 401, why });
const MALFORMED = /platform token is malformed/;

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);

// --- Accepted baselines
add({ name: 'a service-account token from the issuer (typ absent)', cite: 'RFC 7519 §7.2; RFC 7515 §4.1.9 (typ OPTIONAL)', token: () => is.k8s.mintServiceAccountToken({ namespace: 'app', serviceAccount: 'runner', audience: AUD }), expect: ok });
add({ name: 'a hand-made canonical token', cite: 'RFC 7515 §7.1 (compact serialization), §2 (base64url without padding)', token: () => craft(is.tmpl), expect: ok });
add({ name: 'claim names differing only in case are distinct members', cite: 'RFC 7519 §4 (names are case-sensitive)', token: () => craft(is.tmpl, { claims: { Sub: 'other' } }), expect: ok });
add({ name: 'aud as an array that contains ours', cite: 'RFC 7519 §4.1.3', token: () => craft(is.tmpl, { claims: { aud: ['other', AUD] } }), expect: ok });
add({ name: 'x5t (a thumbprint, nothing to fetch) is not refused', cite: 'RFC 7515 §4.1.7', token: () => craft(is.tmpl, { headerExtra: { x5t: 'AAAAAAAAAAAAAAAAAAAAAAAAAAA' } }), expect: ok });

// --- typ
for (const typ of ['JWT', 'jwt', 'application/jwt', 'Application/JWT', 'JOSE', 'jose', 'application/jose', 'application/JOSE'])
  add({ name: `typ ${typ}`, cite: 'RFC 7515 §4.1.9 (media type, case-insensitive, application/ prefix optional), §9.2.1 (JOSE); RFC 7519 §5.1', token: () => craft(is.tmpl, { headerExtra: { typ } }), expect: ok });
for (const typ of ['at+jwt', 'application/at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'dpop+jwt', 'JOSE+JSON', 'jwt ', ''])
  add({ name: `typ ${JSON.stringify(typ)} is refused`, cite: 'RFC 8725 §3.11 (explicit typing), §3.12 (one token kind, one rule set); RFC 7515 §9.2.1 (JOSE+JSON is the JSON serialization)', token: () => craft(is.tmpl, { headerExtra: { typ } }), expect: refused(/platform token type.*is not accepted/) });
add({ name: 'typ that is not a string', cite: 'RFC 7515 §4.1.9 (typ is a string)', token: () => craft(is.tmpl, { headerExtra: { typ: 1 } }), expect: refused(/platform token type.*is not accepted/) });

// --- base64url (RFC 7515 §2: base64url, all trailing '=' omitted, no line breaks, whitespace or other characters)
const B64 = 'RFC 7515 §2 (base64url without padding, no whitespace), §7.1; RFC 4648 §5, §3.5 (canonical)';
add({ name: 'signature padded with ==', cite: B64, token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${padded(s.signature)}` }), expect: refused(MALFORMED) });
add({ name: 'signature with one = appended', cite: B64, token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${s.signature}=` }), expect: refused(MALFORMED) });
add({ name: 'header padded', cite: B64, token: () => craft(is.tmpl, { until: (s) => s.header.endsWith('='), encode: (s) => ({ ...s, header: padded(s.header) }) }), expect: refused(MALFORMED) });
add({ name: 'payload padded', cite: B64, token: () => craft(is.tmpl, { until: (s) => s.payload.endsWith('='), encode: (s) => ({ ...s, payload: padded(s.payload) }) }), expect: refused(MALFORMED) });
add({ name: 'signature with spare bits set in its last character', cite: B64, token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${spareBitsSet(s.signature)}` }), expect: refused(MALFORMED) });
add({ name: 'header with spare bits set', cite: B64, token: () => craft(is.tmpl, { until: (s) => s.header.length % 4 >= 2, encode: (s) => (s.header.length % 4 >= 2 ? { ...s, header: spareBitsSet(s.header) } : s) }), expect: refused(MALFORMED) });
add({ name: 'payload with spare bits set', cite: B64, token: () => craft(is.tmpl, { until: (s) => s.payload.length % 4 >= 2, encode: (s) => (s.payload.length % 4 >= 2 ? { ...s, payload: spareBitsSet(s.payload) } : s) }), expect: refused(MALFORMED) });
add({ name: 'signature in the standard alphabet (+ /)', cite: B64, token: () => craft(is.tmpl, { until: (s) => /[-_]/.test(s.signature), finish: (s) => `${s.header}.${s.payload}.${standardAlphabet(s.signature)}` }), expect: refused(MALFORMED) });
add({ name: 'payload in the standard alphabet (+ /)', cite: B64, token: () => craft(is.tmpl, { claims: { note: '\u00ff\u00ff\u00ff>>>???' }, encode: (s) => ({ ...s, payload: standardAlphabet(s.payload) }), until: (s) => /[+/]/.test(s.payload) }), expect: refused(MALFORMED) });
add({ name: 'a space inside the payload segment', cite: B64, token: () => craft(is.tmpl, { encode: (s) => ({ ...s, payload: `${s.payload.slice(0, 10)} ${s.payload.slice(10)}` }) }), expect: refused(MALFORMED) });
add({ name: 'a line break inside the signature', cite: B64, token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${s.signature.slice(0, 40)}\n${s.signature.slice(40)}` }), expect: refused(MALFORMED) });
add({ name: 'a truncated signature (length 1 mod 4: no such encoding)', cite: B64, token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${s.signature.slice(0, 85)}` }), expect: refused(MALFORMED) });
add({ name: 'five segments (JWE compact form)', cite: 'RFC 7516 §7.1; RFC 8725 §3.12 (a JWE is not this token kind)', token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${s.signature}.AA.AA` }), expect: refused(MALFORMED) });
add({ name: 'two segments', cite: 'RFC 7515 §7.1 (three segments)', token: () => craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}` }), expect: refused(MALFORMED) });

// --- duplicate member names (RFC 7515 §5.2 step 4, RFC 7519 §4: reject or take the last; we reject: RFC 7493 §2.3, RFC 8259 §4)
const DUP = 'RFC 7515 §4, §5.2 step 4 (duplicate header parameter names); RFC 7519 §4 (claims); RFC 7493 §2.3 (I-JSON: names unique); RFC 8725 §2.6';
const DUPLICATE = /duplicate member/;
add({ name: 'duplicate sub, the last (what JSON.parse keeps) the legitimate one', cite: DUP, token: () => craft(is.tmpl, { claims: members([['sub', 'evil'], ...claimPairs(is.tmpl)]) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate sub, the first the legitimate one', cite: DUP, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['sub', 'evil']]) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate sub with the same value', cite: DUP, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['sub', 'svc']]) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate names spelled differently ("sub" and "s\\u0075b")', cite: `${DUP}; RFC 8259 §8.3 (names compared after unescaping)`, token: () => craft(is.tmpl, { claims: members(claimPairs(is.tmpl)).replace(/}$/, ',"s\\u0075b":"evil"}') }), expect: refused(DUPLICATE) });
add({ name: 'duplicate iss', cite: DUP, token: () => craft(is.tmpl, { claims: members([['iss', 'https://evil.example'], ...claimPairs(is.tmpl)]) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate exp, the last far in the future', cite: DUP, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['exp', now() + 3000]]) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate member inside a nested claim object', cite: DUP, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['ctx', 0]], { ctx: '{"ns":"a","ns":"b"}' }) }), expect: refused(DUPLICATE) });
add({ name: 'duplicate alg in the header, both ES256', cite: DUP, token: () => craft(is.tmpl, { header: `{"alg":"ES256","kid":"${is.tmpl.kid}","alg":"ES256"}` }), expect: refused(DUPLICATE) });
add({ name: 'duplicate alg in the header, none first', cite: DUP, token: () => craft(is.tmpl, { header: `{"alg":"none","kid":"${is.tmpl.kid}","alg":"ES256"}` }), expect: refused(DUPLICATE) });
add({ name: 'duplicate kid in the header', cite: DUP, token: () => craft(is.tmpl, { header: `{"alg":"ES256","kid":"other","kid":"${is.tmpl.kid}"}` }), expect: refused(DUPLICATE) });
add({ name: 'duplicate typ in the header (at+jwt first)', cite: DUP, token: () => craft(is.tmpl, { header: `{"alg":"ES256","typ":"at+jwt","kid":"${is.tmpl.kid}","typ":"JWT"}` }), expect: refused(DUPLICATE) });

// --- JSON: nesting, types, encoding
const JSON_LIMITS = 'RFC 8259 §9 (a parser may limit the depth of nesting); RFC 7493 §2 (I-JSON)';
add({ name: `claims nested ${MAX_DEPTH} levels (the cap)`, cite: JSON_LIMITS, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['deep', 0]], { deep: nested(MAX_DEPTH - 1) }) }), expect: ok });
add({ name: `claims nested ${MAX_DEPTH + 1} levels`, cite: JSON_LIMITS, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['deep', 0]], { deep: nested(MAX_DEPTH) }) }), expect: refused(/nested/) });
add({ name: 'claims nested 1,000 levels (arrays)', cite: JSON_LIMITS, token: () => craft(is.tmpl, { claims: members([...claimPairs(is.tmpl), ['deep', 0]], { deep: `${'['.repeat(1000)}${']'.repeat(1000)}` }) }), expect: refused(/nested/) });
add({ name: 'header nested 100 levels', cite: JSON_LIMITS, token: () => craft(is.tmpl, { header: `{"alg":"ES256","kid":"${is.tmpl.kid}","x":${nested(100)}}` }), expect: refused(/nested/) });
add({ name: 'header that is a JSON array', cite: 'RFC 7515 §4 (the JOSE header is a JSON object)', token: () => craft(is.tmpl, { header: '["ES256"]' }), expect: refused(MALFORMED) });
add({ name: 'claims that are JSON null', cite: 'RFC 7519 §7.2 (the claims set is a JSON object)', token: () => craft(is.tmpl, { claims: 'null' }), expect: refused(MALFORMED) });
add({ name: 'claims with a byte that is not UTF-8', cite: 'RFC 7519 §7.2 (UTF-8 JSON object); RFC 8725 §3.7; RFC 8259 §8.1', token: () => craft(is.tmpl, { encode: (s) => ({ ...s, payload: b64(Buffer.concat([Buffer.from(members([...claimPairs(is.tmpl), ['note', '']])).subarray(0, -3), Buffer.from([0x22, 0xff, 0x22, 0x7d])])) }) }), expect: refused(MALFORMED) });
add({ name: 'claims preceded by a byte-order mark', cite: 'RFC 8259 §8.1 (no BOM)', token: () => craft(is.tmpl, { claims: `\ufeff${members(claimPairs(is.tmpl))}` }), expect: refused(MALFORMED) });

// --- size (one limit: attestation.oidc.max_token_bytes)
const SIZE = 'RFC 8725 §3.4 (validate inputs); issue 12 item 1 (one configurable size limit)';
add({ name: `a token of exactly ${MAX_TOKEN_BYTES} bytes (the limit)`, cite: SIZE, token: () => tokenOfSize(is.tmpl, MAX_TOKEN_BYTES), expect: ok });
add({ name: `a token of ${MAX_TOKEN_BYTES + 1} bytes`, cite: SIZE, token: () => tokenOfSize(is.tmpl, MAX_TOKEN_BYTES + 1), expect: refused(/larger than 16384 bytes/) });

// --- header parameters that are refused outright (RFC 8725 §3.10: a token is not trusted for where its keys live)
const noFetch = () => expect(baitRequests, 'a URL from a token was fetched').toBe(0);
add({ name: 'jku naming a reachable JWKS', cite: 'RFC 7515 §4.1.2; RFC 8725 §3.10', token: () => craft(is.tmpl, { headerExtra: { jku: `${baitUrl}/jwks.json` } }), expect: refused(/header parameter "jku"/), after: noFetch });
add({ name: 'x5u naming a reachable URL', cite: 'RFC 7515 §4.1.5; RFC 8725 §3.10', token: () => craft(is.tmpl, { headerExtra: { x5u: `${baitUrl}/chain.pem` } }), expect: refused(/header parameter "x5u"/), after: noFetch });
add({ name: 'jku on a token of an unknown issuer', cite: 'RFC 7515 §4.1.2; RFC 8725 §3.10', token: () => craft(is.tmpl, { claims: { iss: baitUrl }, headerExtra: { jku: `${baitUrl}/jwks.json` } }), expect: refused(/header parameter "jku"|issuer is not trusted/), after: noFetch });
add({ name: 'jwk embedding a key', cite: 'RFC 7515 §4.1.3; RFC 8725 §3.10', token: () => craft(is.tmpl, { headerExtra: { jwk: { kty: 'EC', crv: 'P-256', x: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', y: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' } } }), expect: refused(/header parameter "jwk"/) });
add({ name: 'x5c carrying a certificate', cite: 'RFC 7515 §4.1.6; RFC 8725 §3.10', token: () => craft(is.tmpl, { headerExtra: { x5c: ['MIIB'] } }), expect: refused(/header parameter "x5c"/) });
add({ name: 'b64: false without crit', cite: 'RFC 7797 §3, §6 (b64 must be understood: crit)', token: () => craft(is.tmpl, { headerExtra: { b64: false } }), expect: refused(/header parameter "b64"/) });
add({ name: 'b64: true', cite: 'RFC 7797 §3; RFC 7519 §7.2 (a JWT payload is always base64url)', token: () => craft(is.tmpl, { headerExtra: { b64: true } }), expect: refused(/header parameter "b64"/) });
add({ name: 'crit ["b64"] with b64: false', cite: 'RFC 7515 §4.1.11; RFC 7797 §6', token: () => craft(is.tmpl, { headerExtra: { b64: false, crit: ['b64'] } }), expect: refused(/header parameter "(b64|crit)"/) });
add({ name: 'crit naming an unknown extension', cite: 'RFC 7515 §4.1.11 (must be understood)', token: () => craft(is.tmpl, { headerExtra: { crit: ['exp'], exp: 1 } }), expect: refused(/header parameter "crit"/) });
add({ name: 'crit empty', cite: 'RFC 7515 §4.1.11 (producers MUST NOT use the empty list)', token: () => craft(is.tmpl, { headerExtra: { crit: [] } }), expect: refused(/header parameter "crit"/) });

// --- alg
add({ name: 'alg none', cite: 'RFC 8725 §3.1, §2.1; RFC 7518 §3.6', token: async () => is.tmpl.forgeNone({ aud: AUD, sub: 'svc', nbf: now() }), expect: refused(/algorithm is not allowed|malformed/) });
add({ name: 'HS256 keyed with the public key', cite: 'RFC 8725 §3.1, §2.1 (algorithm confusion)', token: () => is.tmpl.forgeHs256WithPublicKey({ aud: AUD, sub: 'svc', nbf: now() }), expect: refused(/algorithm is not allowed/) });
add({ name: 'alg outside the issuer allow-list (RS256)', cite: 'RFC 8725 §3.1; SPIFFE JWT-SVID §2.1', token: () => craft(is.tmpl, { headerExtra: { alg: 'RS256' } }), expect: refused(/algorithm is not allowed/) });
add({ name: 'alg missing', cite: 'RFC 7515 §4.1.1 (REQUIRED)', token: () => craft(is.tmpl, { omit: ['alg'] }), expect: refused(/algorithm is not allowed/) });
add({ name: 'signed by a key the issuer does not publish', cite: 'RFC 7515 §5.2 step 8', token: () => is.tmpl.mintWithForeignKey({ aud: AUD, sub: 'svc', nbf: now() }), expect: refused(/signature is invalid/) });

// --- kid (a kid names a key of this issuer only; without one, the single key for the alg)
add({ name: 'no kid where the issuer requires one', cite: 'RFC 7515 §4.1.4; STANDARDS §2.13 (kid present and known)', token: () => craft(is.tmpl, { omit: ['kid'] }), expect: refused(/does not name its signing key/) });
add({ name: 'a kid the issuer does not publish', cite: 'RFC 7515 §4.1.4', token: () => craft(is.tmpl, { headerExtra: { kid: 'no-such-key' } }), expect: refused(/signing key is not known/) });
add({ name: "another configured issuer's kid and key", cite: 'RFC 7515 §4.1.4; RFC 8725 §3.8 (issuer and key go together)', token: () => craft(is.tmpl, { signer: is.k8s }), expect: refused(/signing key is not known/) });
add({ name: 'a kid that is not a string', cite: 'RFC 7515 §4.1.4 (kid is a string)', token: () => craft(is.nokid, { headerExtra: { kid: 7 } }), expect: refused(/kid/) });
add({ name: 'no kid, require_kid off, the single key for the alg', cite: 'RFC 7515 §4.1.4 (kid OPTIONAL); SPIFFE JWT-SVID §2.2', token: () => craft(is.nokid, { omit: ['kid'] }), expect: ok });
add({ name: 'no kid, require_kid off, two keys for the alg: no try-every-key', cite: 'RFC 7515 §6 (key identification); RFC 8725 §3.1', token: () => craft(is.twokeys, { omit: ['kid'], signKid: firstTwoKeysKid }), expect: refused(/does not identify its signing key/) });
add({ name: 'the older of two keys named by its kid', cite: 'RFC 7515 §4.1.4', token: () => craft(is.twokeys, { signKid: firstTwoKeysKid, headerExtra: { kid: firstTwoKeysKid } }), expect: ok });

// --- time claims: finite JSON numbers
const NUMERIC = 'RFC 7519 §2 (NumericDate: a JSON numeric value), §4.1.4; RFC 7493 §2.2 (numbers within IEEE 754 double)';
const timeRaw = (iss: OidcIssuer, name: string, text: string) => craft(iss, { claims: members(claimPairs(iss), { [name]: text }) });
add({ name: 'exp 1e400 (Infinity as a double)', cite: NUMERIC, token: () => timeRaw(is.tmpl, 'exp', '1e400'), expect: refused(/"exp" must be a finite number/) });
add({ name: 'nbf -1e400', cite: NUMERIC, token: () => timeRaw(is.tmpl, 'nbf', '-1e400'), expect: refused(/"nbf" must be a finite number/) });
add({ name: 'iat -1e400', cite: NUMERIC, token: () => timeRaw(is.nokid, 'iat', '-1e400'), expect: refused(/"iat" must be a finite number/) });
add({ name: 'exp as a string', cite: NUMERIC, token: () => craft(is.tmpl, { claims: { exp: String(now() + 600) } }), expect: refused(/"exp" must be a finite number/) });
add({ name: 'exp missing', cite: 'RFC 7519 §4.1.4; SPIFFE JWT-SVID §3.3 (exp REQUIRED)', token: () => craft(is.tmpl, { omit: ['exp'] }), expect: refused(/lacks the required "exp" claim/) });
add({ name: 'exp far in the future (1e300, finite)', cite: 'RFC 7519 §4.1.4; RFC 7493 §2.2; issue 12 item 2 (max_token_lifetime)', token: () => timeRaw(is.tmpl, 'exp', '1e300'), expect: refused(/lifetime/) });
add({ name: 'exp in the past beyond the leeway', cite: 'RFC 7519 §4.1.4', token: () => craft(is.tmpl, { claims: { iat: now() - 700, nbf: now() - 700, exp: now() - 100 } }), expect: refused(/has expired/) });

// --- lifetime (max_token_lifetime: exp - iat, else exp - nbf, else exp - now; exactly the maximum accepted)
const LIFETIME = 'RFC 7519 §4.1.4, §4.1.6 (a validator may cap lifetime); issue 12 item 2';
add({ name: 'exp - iat = 24 h (the default maximum)', cite: LIFETIME, token: () => craft(is.k8s, { claims: { iat: now() - 5, nbf: now() - 5, exp: now() - 5 + DAY } }), expect: ok });
add({ name: 'exp - iat = 24 h + 1 s', cite: LIFETIME, token: () => craft(is.k8s, { claims: { iat: now() - 5, nbf: now() - 5, exp: now() - 5 + DAY + 1 } }), expect: refused(/lifetime/) });
add({ name: 'exp - iat = 1 h (a configured maximum)', cite: LIFETIME, token: () => craft(is.tmpl, { claims: { iat: now() - 5, exp: now() - 5 + 3600 } }), expect: ok });
add({ name: 'exp - iat = 1 h + 1 s (a configured maximum)', cite: LIFETIME, token: () => craft(is.tmpl, { claims: { iat: now() - 5, exp: now() - 5 + 3601 } }), expect: refused(/lifetime/) });
add({ name: 'no iat: exp - nbf = 24 h', cite: LIFETIME, token: () => craft(is.nokid, { omit: ['iat'], claims: { nbf: now() - 5, exp: now() - 5 + DAY } }), expect: ok });
add({ name: 'no iat: exp - nbf = 24 h + 1 s', cite: LIFETIME, token: () => craft(is.nokid, { omit: ['iat'], claims: { nbf: now() - 5, exp: now() - 5 + DAY + 1 } }), expect: refused(/lifetime/) });
add({ name: 'no iat, no nbf: exp - now under 24 h', cite: LIFETIME, token: () => craft(is.nokid, { omit: ['iat', 'nbf'], claims: { exp: now() + DAY - 600 } }), expect: ok });
add({ name: 'no iat, no nbf: exp - now over 24 h', cite: LIFETIME, token: () => craft(is.nokid, { omit: ['iat', 'nbf'], claims: { exp: now() + DAY + 600 } }), expect: refused(/lifetime/) });
add({ name: 'iat before nbf: exp - iat decides', cite: LIFETIME, token: () => craft(is.tmpl, { claims: { iat: now() - 1000, nbf: now() - 5, exp: now() - 1000 + 3601 } }), expect: refused(/lifetime/) });

// --- leeway (per issuer, at most 60 s) and issued-in-the-future
const LEEWAY = 'RFC 7519 §4.1.4, §4.1.5 ("some small leeway"), §4.1.6; issue 12 item 2';
add({ name: 'iat 45 s ahead, leeway 60 s', cite: LEEWAY, token: () => craft(is.wide, { claims: { iat: now() + 45, nbf: now(), exp: now() + 600 } }), expect: ok });
add({ name: 'iat 120 s ahead, leeway 60 s', cite: LEEWAY, token: () => craft(is.wide, { claims: { iat: now() + 120, nbf: now(), exp: now() + 600 } }), expect: refused(/issued in the future/) });
add({ name: 'iat 45 s ahead, leeway 30 s (default)', cite: LEEWAY, token: () => craft(is.tmpl, { claims: { iat: now() + 45, nbf: now(), exp: now() + 600 } }), expect: refused(/issued in the future/) });
add({ name: 'iat 120 s ahead with max_token_age off', cite: LEEWAY, token: () => craft(is.nokid, { claims: { iat: now() + 120, nbf: now(), exp: now() + 600 } }), expect: refused(/issued in the future/) });
add({ name: 'nbf 45 s ahead, leeway 60 s', cite: LEEWAY, token: () => craft(is.wide, { claims: { nbf: now() + 45 } }), expect: ok });
add({ name: 'nbf 120 s ahead, leeway 60 s', cite: LEEWAY, token: () => craft(is.wide, { claims: { nbf: now() + 120 } }), expect: refused(/not yet valid/) });
add({ name: 'iat older than max_token_age (24 h) by more than the leeway', cite: 'RFC 7519 §4.1.6; issue 12 item 2 (max_token_age)', token: () => craft(is.k8s, { claims: { iat: now() - DAY - 120, nbf: now() - DAY - 120, exp: now() + 600 } }), expect: refused(/too old|lifetime/) });

// --- sub: a non-empty string, for every mapping
const SUB = 'RFC 7519 §4.1.2 (sub is a StringOrURI); SPIFFE JWT-SVID §3.1';
add({ name: 'template mapping, sub a number', cite: SUB, token: () => craft(is.tmpl, { claims: { sub: 42 } }), expect: refused(/"sub" must be a non-empty string/) });
add({ name: 'template mapping, sub empty', cite: SUB, token: () => craft(is.tmpl, { claims: { sub: '' } }), expect: refused(/"sub" must be a non-empty string/) });
add({ name: 'template mapping, sub an array', cite: SUB, token: () => craft(is.tmpl, { claims: { sub: ['svc'] } }), expect: refused(/"sub" must be a non-empty string/) });
add({ name: 'template mapping, sub missing', cite: SUB, token: () => craft(is.tmpl, { omit: ['sub'] }), expect: refused(/"sub" must be a non-empty string/) });
add({ name: 'kubernetes preset, sub a number', cite: SUB, token: () => craft(is.k8s, { claims: { sub: 42 } }), expect: refused(/"sub" must be a non-empty string/) });

// --- iss and aud
add({ name: 'iss of no configured issuer', cite: 'RFC 7519 §4.1.1; RFC 8725 §3.8', token: () => craft(is.tmpl, { claims: { iss: 'https://evil.example' } }), expect: refused(/issuer is not trusted/) });
add({ name: 'iss with a trailing slash (exact match only)', cite: 'RFC 7519 §4.1.1 (case-sensitive string)', token: () => craft(is.tmpl, { claims: { iss: `${is.tmpl.issuer}/` } }), expect: refused(/issuer is not trusted/) });
add({ name: 'aud not ours', cite: 'RFC 7519 §4.1.3; SPIFFE JWT-SVID §3.2', token: () => craft(is.tmpl, { claims: { aud: 'someone-else' } }), expect: refused(/audience is not accepted/) });

const intent = { audience: 'api.conf', actions: ['read'], purpose: 'conformance' };

describe('JWT conformance: platform tokens over HTTP, against a broker process', () => {
  it('has at least 60 cases, each citing its spec section', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
    for (const c of cases) expect(c.cite, c.name).toMatch(/(RFC \d+|SPIFFE|STANDARDS|issue 12) /);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const token = await c.token();
    const r = await postJson(`${url}/v1/tasks`, { attestation: { kind: 'oidc', token }, intent });
    const shown = `${c.cite}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`;
    if (c.expect === 201) expect(r.status, shown).toBe(201);
    else {
      expect(r.status, shown).toBe(401);
      expect(r.json.error, shown).toBe('invalid_client');
      expect(r.json.error_description, shown).toMatch(c.expect.why);
    }
    c.after?.();
  });

  it('renewal reads platform tokens by the same rules', async () => {
    const first = await craft(is.tmpl);
    const started = await postJson(`${url}/v1/tasks`, { attestation: { kind: 'oidc', token: first }, intent });
    expect(started.status).toBe(201);
    const renew = (token: string) =>
      postJson(`${url}/v1/tasks/${started.json.grant as string}/renew`, { attestation: { kind: 'oidc', token } }, { authorization: `Bearer ${started.json.access_token as string}` });
    const paddedToken = await craft(is.tmpl, { finish: (s) => `${s.header}.${s.payload}.${padded(s.signature)}` });
    const paddedRenewal = await renew(paddedToken);
    expect(paddedRenewal.status).toBe(401);
    expect(paddedRenewal.json.error_description).toMatch(MALFORMED);
    const large = await renew(await tokenOfSize(is.tmpl, MAX_TOKEN_BYTES + 1));
    expect(large.status).toBe(401);
    expect(large.json.error_description).toMatch(/larger than 16384 bytes/);
    expect((await renew(await craft(is.tmpl))).status).toBe(200);
  });
});
