/**
 * Secrets never logged (issue #5, item 5). The scanner the suite's global teardown runs over
 * every captured broker log (test/helpers/log-capture.ts) is tested here, including that a
 * finding really fails a vitest run; then brokers at trace level — one in-process over HTTPS with
 * mTLS, one the production CLI in its own process — go through every route with success and
 * failure paths, and their logs must hold none of the tokens, credentials and keys they saw:
 * checked by the scanner's patterns and by the exact strings.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { exportJWK, exportPKCS8, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { createLogger, scrubSecrets } from '../../src/log.js';
import { MIN_BODY_BYTES } from '../../src/protocol/limits.js';
import { freePort } from '../../src/util/net.js';
import { AUDIENCE, startTestBroker } from '../helpers/broker.js';
import { captureChildOutput, captureFilePath, formatFindings, redact, scanLogDir, scanText, startLogCapture } from '../helpers/log-capture.js';
import { createTestPki, httpsJson, scratchDir, type TestPki } from '../helpers/pki.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from '../helpers/redis.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const run = promisify(execFile);
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------------------------------------
describe('the log scanner', () => {
  let jwt: string;
  let ecJwk: Record<string, unknown>;
  let rsaJwk: Record<string, unknown>;
  let pkcs8: string;

  beforeAll(async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    jwt = await new SignJWT({ sub: 'k8s://test/ns/payments/sa/api', grant: 'g_x' }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' }).sign(privateKey);
    ecJwk = { ...(await exportJWK(privateKey)), kid: 'k1', alg: 'ES256' };
    pkcs8 = await exportPKCS8(privateKey);
    const rsa = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
    rsaJwk = await exportJWK(rsa.privateKey);
  });

  const line = (fields: Record<string, unknown>) => JSON.stringify({ level: 'info', time: 1795946400000, svc: 'jit-broker', ...fields });

  it('finds a JWT anywhere in a line, with its line and column, and never shows it whole', () => {
    const text = [line({ msg: 'task token issued' }), line({ msg: 'oops', token_echo: jwt }), `Bearer ${jwt} trailing`].join('\n');
    const findings = scanText(text);
    expect(findings.map((f) => [f.kind, f.line])).toEqual([
      ['jwt', 2],
      ['jwt', 3],
    ]);
    expect(findings[1]!.column).toBe('Bearer '.length + 1);
    const [, , signature] = jwt.split('.');
    for (const f of findings) {
      expect(f.preview).not.toContain(jwt);
      expect(f.preview).not.toContain(signature);
      expect(f.preview.length).toBeLessThan(40);
    }
  });

  it('finds unsigned (alg none) tokens too', () => {
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"x"}').toString('base64url')}.`;
    expect(scanText(line({ msg: none })).map((f) => f.kind)).toEqual(['jwt']);
  });

  it('finds PEM private keys of every kind, raw or JSON-escaped, but not certificates or public keys', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pems = [
      pkcs8,
      rsa.privateKey.export({ format: 'pem', type: 'pkcs1' }) as string,
      ec.privateKey.export({ format: 'pem', type: 'sec1' }) as string,
      ec.privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'x' }) as string,
    ];
    expect(pems.map((p) => /-----BEGIN ([A-Z ]+)-----/.exec(p)![1])).toEqual(['PRIVATE KEY', 'RSA PRIVATE KEY', 'EC PRIVATE KEY', 'ENCRYPTED PRIVATE KEY']);
    for (const pem of pems) {
      expect(scanText(pem).map((f) => [f.kind, f.line])).toEqual([['pem-private-key', 1]]);
      expect(scanText(line({ msg: 'tls', err: pem })).map((f) => f.kind)).toEqual(['pem-private-key']);
      const body = pem.split('\n')[1]!;
      expect(formatFindings(scanText(pem))).not.toContain(body.slice(0, 16));
    }
    const publicPem = ec.publicKey.export({ format: 'pem', type: 'spki' }) as string;
    expect(scanText(`${publicPem}\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----`)).toEqual([]);
  });

  it('finds private JWK members (EC d; RSA d p q dp dq qi), also JSON-escaped inside a string, never printing them', () => {
    const ec = scanText(line({ msg: 'keys', jwk: ecJwk }));
    expect(ec.map((f) => f.kind)).toEqual(['private-jwk']);
    expect(ec[0]!.preview).toMatch(/^"d":"/);
    const rsa = scanText(line({ msg: 'keys', keys: [rsaJwk] }));
    expect(rsa.map((f) => /^"(\w+)"/.exec(f.preview)![1]).sort()).toEqual(['d', 'dp', 'dq', 'p', 'q', 'qi']);
    const escaped = scanText(line({ msg: `JWKS ${JSON.stringify({ keys: [ecJwk] })} does not validate` }));
    expect(escaped.map((f) => f.kind)).toEqual(['private-jwk']);
    const twice = scanText(line({ err: JSON.stringify({ body: JSON.stringify(ecJwk) }) }));
    expect(twice.map((f) => f.kind)).toEqual(['private-jwk']);
    const report = formatFindings([...ec, ...rsa, ...escaped]);
    for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi']) {
      const value = (member in ecJwk ? ecJwk : rsaJwk)[member] as string;
      expect(report).not.toContain(value);
      expect(report).not.toContain(value.slice(0, 8));
    }
  });

  it("flags the logger's own scrub marks: some code logged a token or key as text", () => {
    const text = [line({ msg: 'fine' }), line({ msg: 'refused: unrecognized key [redacted token]' }), line({ err: 'x [redacted private key] y' })].join('\n');
    expect(scanText(text).map((f) => [f.line, f.kind, f.preview])).toEqual([
      [2, 'scrubbed', '[redacted token]'],
      [3, 'scrubbed', '[redacted private key]'],
    ]);
  });

  it('passes clean logs: public keys, redacted members, ids, hashes, digests and words alone', () => {
    const { d: _d, ...publicJwk } = ecJwk;
    const clean = [
      line({ msg: 'oidc issuer keys fetched', keys: [publicJwk], kids: ['414fd773-8e78-4c95-9356-c3d050770f8a'] }),
      line({ msg: 'keys', jwk: { ...ecJwk, d: '[redacted]' } }), // what pino's redaction writes
      line({ grant: 'g_FQfDF-n04wOcLdHtJoDojw_w88B3JTyap_uNfOGAdd6vQ', jti: 'GRrPdn8fKyejY61r2wH2LA', msg: 'task token issued' }),
      line({ d: '2026-11-29', p: 'some-plain-value-here', msg: 'an object with short names is not a JWK' }),
      line({ hash: sha256('x'), msg: 'eyJ alone, eyJhbGciOiJFUzI1NiJ9 (a JWT header alone), Bearer, PRIVATE KEY, -----BEGIN CERTIFICATE-----' }),
      line({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } }),
    ].join('\n');
    expect(formatFindings(scanText(clean))).toBe('');
  });

  it('scans a directory file by file, naming file and line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-scan-'));
    try {
      writeFileSync(join(dir, 'a.log'), `${line({ msg: 'fine' })}\n${line({ msg: 'fine' })}\n${line({ leaked: jwt })}\n`);
      writeFileSync(join(dir, 'b.log'), `${line({ msg: 'fine' })}\n`);
      mkdirSync(join(dir, 'sub')); // not a file: skipped
      const findings = scanLogDir(dir);
      expect(findings.map((f) => [f.file, f.line, f.kind])).toEqual([[join(dir, 'a.log'), 3, 'jwt']]);
      expect(formatFindings(findings)).toBe(`  ${join(dir, 'a.log')}:3:${findings[0]!.column}  jwt  ${redact(jwt)}`);
      expect(redact(jwt)).toMatch(/^eyJhbGci…\(\d+ chars\)$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the run teardown removes a clean log directory, and keeps a dirty one, sets a failing exit code and throws', () => {
    const clean = startLogCapture({ keep: false });
    writeFileSync(join(clean.dir, 'clean.log'), `${line({ msg: 'fine' })}\n`);
    clean.finish();
    expect(existsSync(clean.dir)).toBe(false);

    const dirty = startLogCapture({ keep: false });
    const before = process.exitCode;
    const printed = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      writeFileSync(join(dirty.dir, 'dirty.log'), `${line({ msg: 'fine' })}\n${line({ leaked: jwt })}\n`);
      expect(() => dirty.finish()).toThrow(/secrets found in test logs \(1; logs kept in .*\):\n.*dirty\.log:2:\d+ {2}jwt/);
      expect(process.exitCode).toBe(1);
      expect(existsSync(dirty.dir)).toBe(true);
      const output = printed.mock.calls.flat().join('\n');
      expect(output).toContain('dirty.log:2:');
      expect(output).not.toContain(jwt.split('.')[2]);
    } finally {
      printed.mockRestore();
      process.exitCode = before;
      rmSync(dirty.dir, { recursive: true, force: true });
    }
  });

  it('a secret in a captured log fails a whole vitest run through the suite global setup (exit code 1), a clean run passes', async () => {
    // vitest 4 only prints an error thrown by a global teardown and exits 0: the teardown must
    // set the exit code itself. A nested vitest with this suite's own global setup shows it does.
    const dir = mkdtempSync(join(tmpdir(), 'jit-nested-vitest-'));
    try {
      writeFileSync(
        join(dir, 'vitest.config.mjs'),
        `export default { test: { root: ${JSON.stringify(dir)}, include: ['*.test.mjs'], globalSetup: [${JSON.stringify(join(ROOT, 'test/helpers/redis-global-setup.ts'))}] } };\n`,
      );
      writeFileSync(
        join(dir, 'plant.test.mjs'),
        [
          `import { writeFileSync } from 'node:fs';`,
          `import { join } from 'node:path';`,
          `import { inject, it } from 'vitest';`,
          `it('writes a log line', () => writeFileSync(join(inject('logDir'), 'broker.log'), process.env.PLANT + '\\n'));`,
        ].join('\n'),
      );
      symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VITEST') && !['NODE_OPTIONS', 'TEST', 'JIT_KEEP_TEST_LOGS'].includes(k)) env[k] = v;
      env.REDIS_URL = redisUrl(); // no second redis-server: the setup takes the given one
      const nested = (plant: string) =>
        run(process.execPath, [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', join(dir, 'vitest.config.mjs')], {
          cwd: ROOT,
          env: { ...env, PLANT: plant },
          timeout: 60_000,
        }).then(
          (r) => ({ code: 0, out: r.stdout + r.stderr }),
          (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
        );
      const dirty = await nested(line({ msg: 'oops', token: jwt }));
      expect(dirty.out).toMatch(/1 passed/); // every test passed: only the scan fails the run
      expect(dirty.out).toMatch(/secrets found in test logs \(1; logs kept in (\S+)\):/);
      expect(dirty.out).toMatch(/broker\.log:1:\d+ {2}jwt {2}eyJhbGci…/);
      expect(dirty.out).not.toContain(jwt.split('.')[2]);
      expect(dirty.code).toBe(1);
      const kept = /logs kept in (\S+)\)/.exec(dirty.out)![1]!;
      rmSync(kept, { recursive: true, force: true });

      const clean = await nested(line({ msg: 'task token issued' }));
      expect(clean.out).toMatch(/1 passed/);
      expect(clean.out).not.toMatch(/secrets found/);
      expect(clean.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------
describe('the production logger scrubs tokens and private keys inside logged text (src/log.ts)', () => {
  it('in the message, in fields, nested, and leaves everything else and the caller\'s objects alone', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwt = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
    const pem = await exportPKCS8(privateKey);
    let out = '';
    const log = createLogger({ level: 'trace', destination: new Writable({ write: (c, _e, cb) => ((out += String(c)), cb()) }) });
    const fields = { path: `/v1/tasks/${jwt}/end`, detail: { problems: [`key "${jwt}"`], err: `bad key ${pem}` }, grant: 'g_abc', n: 3 };
    const snapshot = structuredClone(fields);
    log.info(fields, `invalid request: attestation: Unrecognized key: "${jwt}"`);
    log.warn(`two: ${jwt} and ${jwt}`);
    log.debug({ plain: 'nothing eyJ-like here', header: 'eyJhbGciOiJFUzI1NiJ9' }, 'untouched');
    expect(fields).toEqual(snapshot); // the caller's object is not rewritten
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    expect(lines[0]).toMatchObject({
      msg: 'invalid request: attestation: Unrecognized key: "[redacted token]"',
      path: '/v1/tasks/[redacted token]/end',
      detail: { problems: ['key "[redacted token]"'], err: expect.stringMatching(/^bad key \[redacted private key\]\s*$/) },
      grant: 'g_abc',
      n: 3,
    });
    expect(lines[1]!.msg).toBe('two: [redacted token] and [redacted token]');
    expect(lines[2]).toMatchObject({ msg: 'untouched', plain: 'nothing eyJ-like here', header: 'eyJhbGciOiJFUzI1NiJ9' });
    // Nothing a secret remains; only the scrub marks, which the run's scan reports as such.
    expect(scanText(out).filter((f) => f.kind !== 'scrubbed')).toEqual([]);
    expect(scanText(out).length).toBeGreaterThan(0);
    expect(out).not.toContain(jwt.split('.')[2]);
    expect(scrubSecrets('no secrets')).toBe('no secrets');
  });
});

// ---------------------------------------------------------------------------------------------
/** Everything secret a broker saw during a test, to look for in its log by exact string. */
class Secrets {
  readonly items: { what: string; value: string }[] = [];
  add(what: string, value: string | undefined): string {
    if (value) this.items.push({ what, value });
    return value ?? '';
  }
  /** A JWT also by its signature, a PEM also by a line of its body: a fragment is a leak too. */
  token(what: string, jwt: string): string {
    this.add(what, jwt);
    const [, p, s] = jwt.split('.');
    if (s) this.add(`${what} (signature)`, s);
    if (p && p.length > 40) this.add(`${what} (payload)`, p);
    return jwt;
  }
  pem(what: string, pem: string): void {
    this.add(what, pem);
    const body = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
    for (const l of body.slice(0, 3)) if (l.length >= 40) this.add(`${what} (body line)`, l);
  }
  jwk(what: string, jwk: Record<string, unknown>): void {
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi']) if (typeof jwk[m] === 'string') this.add(`${what} (${m})`, jwk[m]);
  }
  /** The ones `log` contains, by name (never the value). */
  foundIn(log: string): string[] {
    return this.items.filter((s) => log.includes(s.value)).map((s) => s.what);
  }
}

const SVID = 'spiffe://example.org/ns/payments/sa/api';
const RS_CREDENTIAL = 'rs-secrets-credential-5f3a9c0e7b1d42a8';
const RS_SPIFFE = 'spiffe://example.org/ns/rs/sa/gateway';
const intent = { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'secrets test' };

describe('a broker at trace level, every route with success and failure paths', () => {
  let issuer: OidcIssuer;
  let leaky: OidcIssuer;
  let pki: TestPki;
  let svid: Credential;
  let rsCert: Credential;
  const files = scratchDir('jit-secrets-');
  const lines: string[] = [];
  const secrets = new Secrets();
  let broker: Awaited<ReturnType<typeof startTestBroker>>;

  beforeAll(async () => {
    issuer = await startOidcIssuer({ alg: 'ES256' });
    // An issuer whose JWKS leaks its private members: the broker must refuse it without logging them.
    leaky = await startOidcIssuer({ alg: 'ES256' });
    leaky.setMode('private');
    const leakedJwks = (await (await fetch(leaky.jwksUri)).json()) as { keys: Record<string, unknown>[] };
    for (const k of leakedJwks.keys) secrets.jwk('leaky issuer private JWK', k);
    pki = await createTestPki();
    svid = await issueCertificate(pki.example, { uris: [SVID] });
    rsCert = await issueCertificate(pki.example, { uris: [RS_SPIFFE] });
    for (const [what, cred] of [['server', pki.server], ['svid', svid], ['rs', rsCert], ['ca', pki.example]] as const) secrets.pem(`${what} private key`, cred.keyPem);
    secrets.add('resource server credential', RS_CREDENTIAL);
    secrets.add('key publication secret', TEST_KEY_PUBLICATION_SECRET);
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const oidcIssuer = (i: OidcIssuer) => ({ issuer: i.issuer, audiences: [AUDIENCE], algorithms: ['ES256' as const], mapping: { preset: 'kubernetes' as const, cluster: 'test' } });
    broker = await startTestBroker(
      issuer,
      {
        log: { level: 'trace' },
        http: { max_body_bytes: MIN_BODY_BYTES },
        tls: {
          cert: files.write('server.pem', pki.server.chainPem),
          key: files.write('server-key.pem', pki.server.keyPem),
          client_ca_bundles: { 'example.org': files.write('bundle.pem', pki.example.certPem) },
        },
        attestation: { oidc: { issuers: [oidcIssuer(issuer), { ...oidcIssuer(leaky), mapping: { preset: 'kubernetes', cluster: 'leaky' } }] }, x509: {} },
        policies: [
          { name: 'payments', workloads: ['k8s://test/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], resources: ['db://payments/**'], max_lifetime: '1h' },
          { name: 'payments-svid', workloads: ['spiffe://example.org/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read'], resources: ['db://payments/**'], require_binding: true },
        ],
        resource_servers: [
          { name: 'rs-payments', audiences: ['db.payments'], credential_sha256: sha256(RS_CREDENTIAL) },
          { name: 'rs-gateway', audiences: ['db.payments'], workload: RS_SPIFFE },
        ],
      },
      { destination: sink },
    );
    const signing = broker.keyring.signingKey();
    secrets.jwk('broker signing key', signing.privateKey.export({ format: 'jwk' }) as Record<string, unknown>);
    secrets.pem('broker signing key', signing.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  }, 30_000);

  afterAll(async () => {
    await broker?.close();
    await issuer?.close();
    await leaky?.close();
    files.cleanup();
  });

  type Auth = { cert?: Credential; bearer?: string };
  const call = (path: string, opts: { auth?: Auth; body?: unknown; form?: Record<string, string>; method?: string; headers?: Record<string, string> } = {}) => {
    const { auth = {} } = opts;
    const body = opts.form ? new URLSearchParams(opts.form).toString() : opts.body;
    return httpsJson(`${broker.url}${path}`, {
      ca: pki.example.certPem,
      ...(auth.cert ? { cert: auth.cert.chainPem, key: auth.cert.keyPem } : {}),
      ...(opts.method ? { method: opts.method } : body === undefined ? { method: 'POST' } : {}),
      ...(body !== undefined ? { body } : {}),
      headers: {
        ...(opts.form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...(auth.bearer !== undefined ? { authorization: `Bearer ${auth.bearer}` } : {}),
        ...opts.headers,
      },
    });
  };
  const platformToken = async (over: { serviceAccount?: string; ttlSeconds?: number; audience?: string } = {}) =>
    secrets.token(
      'platform token',
      await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: over.serviceAccount ?? 'api', audience: over.audience ?? AUDIENCE, ttlSeconds: over.ttlSeconds ?? 600 }),
    );
  const issued = (res: { status: number; json: Record<string, any> }, status: number) => {
    expect(res.status, JSON.stringify(res.json)).toBe(status);
    return secrets.token('issued task token', res.json.access_token as string);
  };
  const expectError = (res: { status: number; json: Record<string, any> }, status: number, code: string) => {
    expect(res.status, JSON.stringify(res.json)).toBe(status);
    expect(res.json.error).toBe(code);
  };

  it('logs every route at trace, and its log holds none of the secrets it saw', async () => {
    // Start: platform token, then mTLS; and the refusals.
    const started = await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken() }, intent } });
    const token1 = issued(started, 201);
    const grant1 = started.json.grant as string;
    const bound = await call('/v1/tasks', { auth: { cert: svid }, body: { intent } });
    const boundToken = issued(bound, 201);
    const boundGrant = bound.json.grant as string;
    const foreign = secrets.token('forged platform token', await issuer.mintWithForeignKey({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }));
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: foreign }, intent } }), 401, 'invalid_client');
    const none = secrets.token('alg none token', issuer.forgeNone({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }));
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: none }, intent } }), 401, 'invalid_client');
    const hs = secrets.token('HS256 confusion token', await issuer.forgeHs256WithPublicKey({ sub: 'system:serviceaccount:payments:api', aud: AUDIENCE }));
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: hs }, intent } }), 401, 'invalid_client');
    const wrongAud = await platformToken({ audience: 'someone-else' });
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: wrongAud }, intent } }), 401, 'invalid_client');
    const leakyToken = secrets.token('token of an issuer whose JWKS is refused', await leaky.mintServiceAccountToken({ namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE }));
    const refused = await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: leakyToken }, intent } });
    expect([401, 503]).toContain(refused.status);
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken({ serviceAccount: 'api' }) }, intent: { ...intent, audience: 'db.other' } } }), 403, 'access_denied');
    // The token in the wrong place, in a rejected body: 400 names the field, never the value.
    const misplaced = await platformToken();
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: misplaced, [misplaced]: 1 }, intent } }), 400, 'invalid_request');
    expectError(await call('/v1/tasks', { body: { attestation: { kind: misplaced, token: misplaced }, intent: { ...intent, purpose: misplaced, actions: [misplaced] } } }), 400, 'invalid_request');
    expectError(await call('/v1/tasks', { body: `{"attestation":{"kind":"oidc","token":"${await platformToken()}"}` }), 400, 'invalid_request');
    expectError(await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken() }, intent, pad: 'x'.repeat(MIN_BODY_BYTES) } }), 413, 'request_too_large');
    expectError(await call('/v1/tasks', { body: 'token=' + (await platformToken()), headers: { 'content-type': 'text/plain' } }), 400, 'invalid_request');

    // Renew: platform token and mTLS; then replay, bad token, wrong grant, no bearer.
    const renewed = await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token1 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } });
    const token2 = issued(renewed, 200);
    const boundRenewed = await call(`/v1/tasks/${boundGrant}/renew`, { auth: { cert: svid, bearer: boundToken } });
    const boundToken2 = issued(boundRenewed, 200);
    expectError(await call(`/v1/tasks/${boundGrant}/renew`, { auth: { bearer: boundToken2 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 401, 'invalid_client');
    expectError(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: `${token2.slice(0, -4)}AAAA` }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 401, 'invalid_token');
    expectError(await call(`/v1/tasks/${boundGrant}/renew`, { auth: { bearer: token2 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 400, 'invalid_grant');
    expectError(await call(`/v1/tasks/${grant1}/renew`, { body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 401, 'invalid_token');
    expectError(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token2 }, body: { attestation: { kind: 'oidc', token: await platformToken({ serviceAccount: 'intruder' }) } } }), 401, 'invalid_client');
    expectError(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token2 }, headers: { authorization: `Bearer ${token2} extra` } }), 400, 'invalid_request');

    // Introspect: active, inactive, unauthenticated; by credential and by certificate.
    const active = await call('/oauth2/introspect', { auth: { bearer: RS_CREDENTIAL }, form: { token: token2 } });
    expect(active.json).toMatchObject({ active: true, grant: grant1 });
    expect((await call('/oauth2/introspect', { auth: { cert: rsCert }, form: { token: boundToken2 } })).json).toMatchObject({ active: true, grant: boundGrant });
    expect((await call('/oauth2/introspect', { auth: { bearer: RS_CREDENTIAL }, form: { token: token1 } })).json).toEqual({ active: false });
    expect((await call('/oauth2/introspect', { auth: { bearer: RS_CREDENTIAL }, form: { token: foreign } })).json).toEqual({ active: false });
    expectError(await call('/oauth2/introspect', { auth: { bearer: token2 }, form: { token: token2 } }), 401, 'invalid_client');
    expectError(await call('/oauth2/introspect', { auth: { bearer: `${RS_CREDENTIAL}x` }, form: { token: token2 } }), 401, 'invalid_client');
    expectError(await call('/oauth2/introspect', { auth: { bearer: RS_CREDENTIAL }, body: `token=${token2}&token=${token2}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 400, 'invalid_request');

    // Retry: the superseded token, within the retry window, gets the latest token again; renewed
    // once more, it is two behind, and presented again it is a replay that revokes the grant.
    issued(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token1 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 200);
    issued(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token2 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 200);
    expectError(await call(`/v1/tasks/${grant1}/renew`, { auth: { bearer: token1 }, body: { attestation: { kind: 'oidc', token: await platformToken() } } }), 400, 'invalid_grant');

    // End: a fresh grant ended by its holder, twice; a bound one without its certificate.
    const third = await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken() }, intent } });
    const token3 = issued(third, 201);
    expect((await call(`/v1/tasks/${third.json.grant}/end`, { auth: { bearer: token3 } })).json).toMatchObject({ status: 'ended' });
    expect((await call(`/v1/tasks/${third.json.grant}/end`, { auth: { bearer: token3 } })).json).toMatchObject({ status: 'ended' });
    expectError(await call(`/v1/tasks/${boundGrant}/end`, { auth: { bearer: boundToken2 } }), 401, 'invalid_token');
    expectError(await call(`/v1/tasks/${boundGrant}/end`, { auth: { bearer: token3 } }), 400, 'invalid_grant');
    expectError(await call('/v1/tasks/not-a-grant/end', { auth: { bearer: token3 } }), 400, 'invalid_request');
    expectError(await call(`/v1/tasks/${token3}/end`, { auth: { bearer: token3 } }), 400, 'invalid_request'); // the token where the grant goes: the logged path

    // Revoke: by a resource server, by its holder, unknown tokens, a bad credential.
    const fourth = await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken() }, intent } });
    const token4 = issued(fourth, 201);
    expect((await call('/oauth2/revoke', { auth: { bearer: RS_CREDENTIAL }, form: { token: token4 } })).status).toBe(200);
    const fifth = await call('/v1/tasks', { body: { attestation: { kind: 'oidc', token: await platformToken() }, intent } });
    const token5 = issued(fifth, 201);
    expect((await call('/oauth2/revoke', { form: { token: token5 } })).status).toBe(200);
    expect((await call('/oauth2/revoke', { form: { token: foreign } })).status).toBe(200);
    expect((await call('/oauth2/revoke', { auth: { cert: svid }, form: { token: boundToken2 } })).status).toBe(200);
    expectError(await call('/oauth2/revoke', { auth: { bearer: `${RS_CREDENTIAL}x` }, form: { token: token5 } }), 401, 'invalid_client');
    expect(await broker.store.getGrant(fourth.json.grant as string)).toMatchObject({ status: 'revoked' });
    expect(await broker.store.getGrant(fifth.json.grant as string)).toMatchObject({ status: 'revoked' });

    // The rest of the surface.
    expect((await call('/.well-known/jwks.json', { method: 'GET' })).status).toBe(200);
    expect((await call('/.well-known/oauth-authorization-server', { method: 'GET' })).status).toBe(200);
    expect((await call('/healthz', { method: 'GET' })).status).toBe(200);
    expect((await call('/readyz', { method: 'GET' })).status).toBe(200); // one issuer with usable keys is enough
    expectError(await call(`/nope/${token5}`, { method: 'GET', auth: { bearer: token5 } }), 404, 'not_found');

    const log = lines.join('');
    // The log is the real thing: every outcome above is in it, at trace level.
    for (const msg of ['task token issued', 'task token renewed', 'renewal retried', 'grant ended by its holder', 'grant revoked', 'replay detected', 'oidc issuer keys could not be fetched'])
      expect(log, msg).toContain(msg);
    for (const code of ['invalid_client', 'invalid_token', 'invalid_grant', 'invalid_request', 'access_denied', 'request_too_large']) expect(log, code).toContain(`"code":"${code}"`);
    // Seven, plus the retried renewal's (the latest token re-signed) and the renewal after it.
    expect(secrets.items.filter((s) => s.what === 'issued task token')).toHaveLength(9);
    // Clean by pattern, and by every exact string it saw.
    expect(formatFindings(scanText(log))).toBe('');
    expect(secrets.foundIn(log)).toEqual([]);
    // The run's capture file (trace, whatever the test's own destination) holds the same lines, and is clean too.
    const captured = readFileSync(captureFilePath()!, 'utf8');
    expect(captured).toContain('"msg":"task token renewed"');
    expect(formatFindings(scanText(captured))).toBe('');
    expect(secrets.foundIn(captured)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
describe('the production CLI at trace level, in its own process', () => {
  let issuer: OidcIssuer;
  let child: ChildProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'jit-secrets-cli-'));

  beforeAll(async () => {
    issuer = await startOidcIssuer({ alg: 'ES256' });
  });
  afterAll(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await issuer?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('logs JSON lines to stdout that hold none of the tokens and credentials it saw', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const config = {
      issuer: url,
      listen: { host: '127.0.0.1', port },
      store: { kind: 'redis', url: redisUrl(), key_prefix: uniquePrefix('secrets-cli') },
      attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'ops' } }] } },
      policies: [{ name: 'ops', workloads: ['k8s://ops/ns/ops/sa/*'], audiences: ['api.ops'], actions: ['read'] }],
      resource_servers: [{ name: 'ops-api', audiences: ['api.ops'], credential_sha256: sha256(RS_CREDENTIAL) }],
      log: { level: 'trace' },
    };
    const path = join(dir, 'broker.yaml');
    writeFileSync(path, stringify(config));
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('JIT_') && !['REDIS_URL', 'PORT', 'LOG_LEVEL'].includes(k)) env[k] = v;
    // The key publication secret from the environment, as deployments pass it: never in a log line.
    const publicationSecret = `cli-publication-secret-${randomBytes(16).toString('hex')}`;
    env.JIT_KEY_PUBLICATION_SECRET = publicationSecret;
    child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--config', path], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    captureChildOutput(child, 'cli-serve');
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 20_000;
    while (!(await fetch(`${url}/readyz`).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`broker did not become ready:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const secrets = new Secrets();
    secrets.add('resource server credential', RS_CREDENTIAL);
    secrets.add('key publication secret', publicationSecret);
    const post = async (p: string, body: unknown, headers: Record<string, string> = {}) => {
      const form = typeof body === 'string';
      const res = await fetch(`${url}${p}`, { method: 'POST', headers: { 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json', ...headers }, body: form ? body : JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as Record<string, any> };
    };
    const sa = async (name = 'runner') => secrets.token('platform token', await issuer.mintServiceAccountToken({ cluster: 'ops', namespace: 'ops', serviceAccount: name, audience: AUDIENCE, ttlSeconds: 600 }));
    const opsIntent = { audience: 'api.ops', actions: ['read'], purpose: 'cli secrets test' };

    const started = await post('/v1/tasks', { attestation: { kind: 'oidc', token: await sa() }, intent: opsIntent });
    expect(started.status).toBe(201);
    const t1 = secrets.token('issued task token', started.json.access_token as string);
    const grant = started.json.grant as string;
    const renewed = await post(`/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await sa() } }, { authorization: `Bearer ${t1}` });
    expect(renewed.status).toBe(200);
    const t2 = secrets.token('issued task token', renewed.json.access_token as string);
    expect((await post('/oauth2/introspect', `token=${t2}`, { authorization: `Bearer ${RS_CREDENTIAL}` })).json).toMatchObject({ active: true });
    expect((await post('/oauth2/introspect', `token=${t2}`, { authorization: `Bearer ${t1}` })).status).toBe(401);
    expect((await post('/v1/tasks', { attestation: { kind: 'oidc', token: await issuer.mintWithForeignKey({ sub: 'system:serviceaccount:ops:runner', aud: AUDIENCE }).then((t) => secrets.token('forged', t)) }, intent: opsIntent })).status).toBe(401);
    expect((await post('/v1/tasks', { attestation: { kind: 'oidc', token: await sa() }, intent: { ...opsIntent, audience: 'api.other' } })).status).toBe(403);
    const renewedAgain = await post(`/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await sa() } }, { authorization: `Bearer ${t2}` });
    expect(renewedAgain.status).toBe(200);
    secrets.token('issued task token', renewedAgain.json.access_token as string);
    expect((await post(`/v1/tasks/${grant}/renew`, { attestation: { kind: 'oidc', token: await sa() } }, { authorization: `Bearer ${t1}` })).status).toBe(400); // replay: two behind
    const second = await post('/v1/tasks', { attestation: { kind: 'oidc', token: await sa() }, intent: opsIntent });
    const t3 = secrets.token('issued task token', second.json.access_token as string);
    expect((await post(`/v1/tasks/${second.json.grant}/end`, '', { authorization: `Bearer ${t3}` })).status).toBe(200);
    const third = await post('/v1/tasks', { attestation: { kind: 'oidc', token: await sa() }, intent: opsIntent });
    const t4 = secrets.token('issued task token', third.json.access_token as string);
    expect((await post('/oauth2/revoke', `token=${t4}`, { authorization: `Bearer ${RS_CREDENTIAL}` })).status).toBe(200);

    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    for (const msg of ['task token issued', 'task token renewed', 'grant ended by its holder', 'grant revoked', 'replay detected']) expect(out, msg).toContain(msg);
    expect(formatFindings(scanText(out))).toBe('');
    expect(secrets.foundIn(out)).toEqual([]);
    // And the copy in the run's capture (the teardown scans it with the rest).
    const captured = readFileSync(captureFilePath()!, 'utf8');
    expect(captured).toContain('[cli-serve] {"level":"info"');
  }, 40_000);
});
