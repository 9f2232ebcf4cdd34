/**
 * TLS material from real files in a scratch directory: PEM and SPIFFE bundles, the server key
 * pair, and the watcher that swaps in rotated files (and keeps the last good ones otherwise).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCA, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { loadTlsMaterial, parseBundle, TlsMaterialWatcher, type TlsFiles, type TlsMaterial } from '../../src/tls/material.js';
import { scratchDir } from '../helpers/pki.js';

let files: ReturnType<typeof scratchDir>;
let caA: Credential;
let caB: Credential;
let caC: Credential;
let caD: Credential;
let leaf: Credential;
let server: Credential;
let server2: Credential;

beforeAll(async () => {
  files = scratchDir('jit-tls-material-');
  caA = await createCA({ trustDomain: 'example.org', commonName: 'A' });
  caB = await createCA({ trustDomain: 'example.org', commonName: 'B' });
  caC = await createCA({ trustDomain: 'example.org', commonName: 'C' });
  caD = await createCA({ trustDomain: 'example.org', commonName: 'D' });
  leaf = await issueCertificate(caA, { uris: ['spiffe://example.org/ns/a/sa/b'] });
  server = await issueCertificate(caA, { server: true, dns: ['localhost'] });
  server2 = await issueCertificate(caB, { server: true, dns: ['localhost'] });
});

afterAll(() => files?.cleanup());

const subjects = (m: TlsMaterial, td: string) => m.bundles.get(td)?.map((c) => c.subject);
const b64 = (c: Credential) => c.der.toString('base64');

function problems(f: TlsFiles): string[] {
  try {
    loadTlsMaterial(f);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected loadTlsMaterial to fail');
}

/** A logger writing parsed JSON lines into memory. */
function sink() {
  const lines: Record<string, any>[] = [];
  const destination = new Writable({
    write(chunk, _e, cb) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, any>);
      cb();
    },
  });
  return { log: createLogger({ level: 'info', destination }), lines };
}

describe('loadTlsMaterial', () => {
  it('reads PEM bundles per trust domain and the server key pair', () => {
    const f: TlsFiles = {
      cert: files.write('server.pem', server.chainPem),
      key: files.write('server-key.pem', server.keyPem),
      bundles: {
        'example.org': files.write('example.pem', `# comment lines are fine\n${caA.certPem}${caB.certPem}`),
        'other.org': files.write('other.pem', caC.certPem),
      },
    };
    const m = loadTlsMaterial(f, 7);
    expect(m.generation).toBe(7);
    expect(subjects(m, 'example.org')).toEqual(['CN=A, O=jit-broker dev', 'CN=B, O=jit-broker dev']);
    expect(subjects(m, 'other.org')).toEqual(['CN=C, O=jit-broker dev']);
    expect(m.bundles.get('example.org')![0]!.der.equals(caA.der)).toBe(true);
    expect(m.caPem.map((p) => p.trim())).toEqual([caA.certPem.trim(), caB.certPem.trim(), caC.certPem.trim()]);
    // Every anchor's DER, to tell them apart from what a client sends.
    expect(m.anchorDers.map((d) => d.toString('hex'))).toEqual([caA, caB, caC].map((c) => c.der.toString('hex')));
    expect(m.cert).toBe(server.chainPem);
    expect(m.key).toBe(server.keyPem);
  });

  it('without cert and key there is no server material', () => {
    const m = loadTlsMaterial({ bundles: { 'example.org': files.write('only-bundle.pem', caA.certPem) } });
    expect(m.cert).toBeUndefined();
    expect(m.key).toBeUndefined();
    expect(m.generation).toBe(1);
  });

  it('reads a SPIFFE bundle: x509-svid entries only, and only their first x5c certificate', () => {
    const doc = {
      spiffe_sequence: 12,
      spiffe_refresh_hint: 300,
      keys: [
        { use: 'x509-svid', kty: 'EC', crv: 'P-256', x5c: [b64(caA), b64(caD)] },
        { use: 'jwt-svid', kty: 'EC', kid: 'k1', crv: 'P-256', x: 'AAAA', y: 'AAAA' },
        { use: 'jwt-svid', kty: 'EC', kid: 'k2', x5c: [b64(caD)] },
        { kty: 'EC', x5c: [b64(caD)] },
        { use: 'x509-svid', kty: 'EC' },
        null,
        { use: 'x509-svid', kty: 'EC', x5c: [b64(caB)] },
      ],
    };
    const m = loadTlsMaterial({ bundles: { 'example.org': files.write('bundle.json', `\n  ${JSON.stringify(doc, null, 2)}`) } });
    expect(subjects(m, 'example.org')).toEqual(['CN=A, O=jit-broker dev', 'CN=B, O=jit-broker dev']);
    expect(m.caPem).toHaveLength(2);
  });

  it('explains bundles that are not bundles', () => {
    expect(() => parseBundle('{"keys": [{"use": "jwt-svid", "kty": "EC"}]}')).toThrow(/^holds no certificate$/);
    expect(() => parseBundle('{"spiffe_sequence": 1}')).toThrow(/^is a JSON document without "keys" \(expected a SPIFFE bundle\)$/);
    expect(() => parseBundle('{ not json')).toThrow(/^is neither PEM nor valid JSON$/);
    expect(() => parseBundle('nothing here')).toThrow(/^holds no certificate$/);
    expect(() => parseBundle(server.keyPem)).toThrow(/^holds no certificate$/);
    expect(() => parseBundle(`{"keys":[{"use":"x509-svid","x5c":["${Buffer.from('junk').toString('base64')}"]}]}`)).toThrow(
      /^not a valid DER X\.509 certificate/,
    );
  });

  it('refuses a certificate in a bundle that is not a CA', () => {
    const path = files.write('with-leaf.pem', caA.certPem + leaf.certPem);
    expect(problems({ bundles: { 'example.org': path } })).toEqual([
      `tls.client_ca_bundles.example.org ${path}: certificate 2 (CN=b) is not a CA (basicConstraints cA=true)`,
    ]);
    const json = files.write('with-leaf.json', JSON.stringify({ keys: [{ use: 'x509-svid', x5c: [b64(leaf)] }] }));
    expect(problems({ bundles: { 'example.org': json } })).toEqual([
      `tls.client_ca_bundles.example.org ${json}: certificate 1 (CN=b) is not a CA (basicConstraints cA=true)`,
    ]);
  });

  it('names an unreadable file', () => {
    const missing = join(files.dir, 'missing.pem');
    expect(problems({ bundles: { 'example.org': missing } })).toEqual([`tls.client_ca_bundles.example.org ${missing}: cannot read (ENOENT)`]);
    expect(problems({ cert: files.dir, key: files.write('k.pem', server.keyPem), bundles: {} })).toEqual([`tls.cert ${files.dir}: cannot read (EISDIR)`]);
  });

  it('refuses a key that does not belong to the certificate', () => {
    const cert = files.write('mismatch.pem', server.chainPem);
    const key = files.write('mismatch-key.pem', server2.keyPem);
    expect(problems({ cert, key, bundles: {} })).toEqual([`tls.key ${key}: does not match the certificate in ${cert}`]);
  });

  it('refuses a certificate or key that does not parse', () => {
    const cert = files.write('garbage.pem', 'not a certificate');
    const key = files.write('garbage-key.pem', server.keyPem);
    const list = problems({ cert, key, bundles: {} });
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(/^tls\.cert\/tls\.key: /);
  });

  it('lists every problem in one ConfigError', () => {
    const missing = join(files.dir, 'nope.pem');
    const notCa = files.write('all-leaf.pem', leaf.certPem);
    const empty = files.write('all-empty.pem', '');
    const good = files.write('all-good.pem', caA.certPem);
    const cert = files.write('all-cert.pem', server.chainPem);
    const key = files.write('all-key.pem', server2.keyPem);
    let error: unknown;
    try {
      loadTlsMaterial({ cert, key, bundles: { 'a.org': missing, 'b.org': notCa, 'c.org': good, 'd.org': empty } });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      `tls.client_ca_bundles.a.org ${missing}: cannot read (ENOENT)`,
      `tls.client_ca_bundles.b.org ${notCa}: certificate 1 (CN=b) is not a CA (basicConstraints cA=true)`,
      `tls.client_ca_bundles.d.org ${empty}: holds no certificate`,
      `tls.key ${key}: does not match the certificate in ${cert}`,
    ]);
    expect((error as ConfigError).message).toContain(`tls.client_ca_bundles.a.org ${missing}: cannot read (ENOENT)\n  tls.client_ca_bundles.b.org`);
  });
});

describe('TlsMaterialWatcher.check', () => {
  function setup(name: string) {
    const bundle = files.write(`${name}.pem`, caA.certPem);
    const cert = files.write(`${name}-server.pem`, server.chainPem);
    const key = files.write(`${name}-server-key.pem`, server.keyPem);
    const s = sink();
    const watcher = new TlsMaterialWatcher({ cert, key, bundles: { 'example.org': bundle } }, s.log);
    const seen: TlsMaterial[] = [];
    watcher.onChange((m) => seen.push(m));
    return { watcher, seen, lines: s.lines, writeBundle: (text: string) => files.write(`${name}.pem`, text), bundle, cert, key, name };
  }

  it('reports no change when the bytes did not change', () => {
    const { watcher, seen, lines, writeBundle } = setup('w-same');
    const first = watcher.current;
    expect(first.generation).toBe(1);
    expect(watcher.check()).toBe(false);
    writeBundle(caA.certPem); // rewritten with the same bytes
    expect(watcher.check()).toBe(false);
    expect(watcher.current).toBe(first);
    expect(seen).toEqual([]);
    expect(lines).toEqual([]);
  });

  it('swaps in changed files with the next generation and tells the listeners', () => {
    const { watcher, seen, lines, writeBundle } = setup('w-change');
    writeBundle(caA.certPem + caB.certPem);
    expect(watcher.check()).toBe(true);
    expect(watcher.current.generation).toBe(2);
    expect(subjects(watcher.current, 'example.org')).toEqual(['CN=A, O=jit-broker dev', 'CN=B, O=jit-broker dev']);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBe(watcher.current);
    expect(lines).toEqual([expect.objectContaining({ level: 'info', msg: 'TLS material reloaded', generation: 2, trust_domains: ['example.org'] })]);
    expect(watcher.check()).toBe(false);
    expect(seen).toHaveLength(1);
  });

  it('picks up a rotated server key pair', () => {
    const { watcher, seen, cert, key } = setup('w-server');
    files.write(`w-server-server.pem`, server2.chainPem);
    files.write(`w-server-server-key.pem`, server2.keyPem);
    expect(cert).toMatch(/w-server-server\.pem$/);
    expect(key).toMatch(/w-server-server-key\.pem$/);
    expect(watcher.check()).toBe(true);
    expect(watcher.current.cert).toBe(server2.chainPem);
    expect(watcher.current.key).toBe(server2.keyPem);
    expect(seen.map((m) => m.generation)).toEqual([2]);
  });

  it('keeps the old material when new content does not load, logs it once, and recovers', () => {
    const { watcher, seen, lines, writeBundle, bundle } = setup('w-bad');
    const good = watcher.current;
    writeBundle('not a certificate');
    expect(watcher.check()).toBe(false);
    expect(watcher.current).toBe(good);
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'error',
        msg: 'TLS files changed but do not load; keeping the previous ones',
        problems: [`tls.client_ca_bundles.example.org ${bundle}: holds no certificate`],
      }),
    ]);
    // The same bad bytes are not reported again on every poll.
    expect(watcher.check()).toBe(false);
    expect(watcher.check()).toBe(false);
    expect(lines).toHaveLength(1);
    // Different bad bytes are.
    writeBundle(leaf.certPem);
    expect(watcher.check()).toBe(false);
    expect(lines).toHaveLength(2);
    expect(lines[1]!.problems).toEqual([`tls.client_ca_bundles.example.org ${bundle}: certificate 1 (CN=b) is not a CA (basicConstraints cA=true)`]);
    expect(watcher.current).toBe(good);
    expect(seen).toEqual([]);
    // Fixed: swapped in, one generation after the last good material.
    writeBundle(caA.certPem + caC.certPem);
    expect(watcher.check()).toBe(true);
    expect(watcher.current.generation).toBe(2);
    expect(subjects(watcher.current, 'example.org')).toEqual(['CN=A, O=jit-broker dev', 'CN=C, O=jit-broker dev']);
    expect(seen).toHaveLength(1);
    expect(lines[2]).toMatchObject({ msg: 'TLS material reloaded', generation: 2 });
  });

  it('reports bad content again after a rollback to the good files', () => {
    const { watcher, lines, writeBundle } = setup('w-rollback');
    writeBundle('broken');
    expect(watcher.check()).toBe(false);
    writeBundle(caA.certPem); // rolled back to what is loaded
    expect(watcher.check()).toBe(false);
    writeBundle('broken'); // the same broken deploy once more
    expect(watcher.check()).toBe(false);
    expect(lines.map((l) => l.msg)).toEqual([
      'TLS files changed but do not load; keeping the previous ones',
      'TLS files changed but do not load; keeping the previous ones',
    ]);
  });

  it('waits one poll while a file is missing (mid-rewrite) without logging', () => {
    const { watcher, lines, writeBundle, bundle } = setup('w-missing');
    rmSync(bundle);
    expect(watcher.check()).toBe(false);
    expect(watcher.current.generation).toBe(1);
    expect(lines).toEqual([]);
    writeBundle(caB.certPem);
    expect(watcher.check()).toBe(true);
    expect(subjects(watcher.current, 'example.org')).toEqual(['CN=B, O=jit-broker dev']);
  });

  it('a file still unreadable at the next poll is warned about once, and again after it recovers and goes missing anew', () => {
    const { watcher, lines, writeBundle, bundle } = setup('w-gone');
    const first = watcher.current;
    const warning = { level: 'warn', msg: 'a TLS file cannot be read; keeping the previous TLS material until it can' };
    rmSync(bundle);
    expect(watcher.check()).toBe(false);
    expect(lines).toEqual([]); // one poll: perhaps mid-rewrite
    expect(watcher.check()).toBe(false);
    expect(lines).toEqual([expect.objectContaining(warning)]);
    for (let i = 0; i < 5; i++) expect(watcher.check()).toBe(false);
    expect(lines).toHaveLength(1); // once, not on every poll
    expect(watcher.current).toBe(first);
    // Back with the same bytes: nothing to reload, and the count starts over.
    writeBundle(caA.certPem);
    expect(watcher.check()).toBe(false);
    rmSync(bundle);
    expect(watcher.check()).toBe(false);
    expect(lines).toHaveLength(1);
    expect(watcher.check()).toBe(false);
    expect(lines).toEqual([expect.objectContaining(warning), expect.objectContaining(warning)]);
    // Back with new bytes: reloaded as usual.
    writeBundle(caB.certPem);
    expect(watcher.check()).toBe(true);
    expect(subjects(watcher.current, 'example.org')).toEqual(['CN=B, O=jit-broker dev']);
    expect(lines.map((l) => l.msg)).toEqual([warning.msg, warning.msg, 'TLS material reloaded']);
  });

  it('an unreadable server key counts the same as a missing bundle', () => {
    const { watcher, lines, key } = setup('w-key-gone');
    rmSync(key);
    watcher.check();
    watcher.check();
    expect(lines).toEqual([expect.objectContaining({ level: 'warn', msg: 'a TLS file cannot be read; keeping the previous TLS material until it can' })]);
    expect(watcher.current.key).toBe(server.keyPem);
  });

  it('a failing listener is logged and does not stop the others', () => {
    const { watcher, seen, lines, writeBundle } = setup('w-listener');
    watcher.onChange(() => {
      throw new Error('server refused the context');
    });
    const after: number[] = [];
    watcher.onChange((m) => after.push(m.generation));
    writeBundle(caB.certPem);
    expect(watcher.check()).toBe(true);
    expect(seen).toHaveLength(1);
    expect(after).toEqual([2]);
    expect(lines).toContainEqual(expect.objectContaining({ level: 'error', msg: 'applying reloaded TLS material failed', err: 'server refused the context' }));
  });

  it('the constructor refuses files that do not load', () => {
    const bad = files.write('w-ctor.pem', 'nope');
    expect(() => new TlsMaterialWatcher({ bundles: { 'example.org': bad } }, sink().log)).toThrow(ConfigError);
  });
});
