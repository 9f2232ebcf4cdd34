import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { applyEnv, loadConfig, parseConfig } from '../../src/config/load.js';
import { configWarnings } from '../../src/config/warnings.js';
import { configProblems } from '../helpers/config.js';

const baseConfig = {
  issuer: 'https://broker.example.com',
  store: { kind: 'memory' },
  policies: [{ name: 'r', workloads: ['spiffe://td/*'], audiences: ['a'], actions: ['read'] }],
};

const base = baseConfig;
const problems = configProblems;
/** The base with an attestation source for its rule (else it warns that no one can be attested). */
const attested = { ...baseConfig, tls: { client_ca_bundles: { td: '/etc/jit/td.pem' } } };

describe('config', () => {
  it('applies defaults: ttl 5m, cap 15m, leeway 30s', () => {
    const cfg = parseConfig(base);
    expect(cfg.tokens).toMatchObject({ default_ttl: 300_000, max_ttl: 900_000, leeway: 30_000, algorithm: 'ES256' });
    expect(cfg.listen).toEqual({ host: '0.0.0.0', port: 8080 });
  });

  it('has limits by default, and checks them and the resource servers', () => {
    expect(parseConfig(base).limits).toEqual({
      issuance: { rate: 100, per: 1000, burst: 200 },
      failed_attestations: { rate: 10, per: 60_000, burst: 20 },
      tracked_addresses: 100_000,
      ipv6_prefix: 64,
      denial_audit: { per_address: { rate: 60, per: 60_000, burst: 100 }, per_workload: { rate: 60, per: 60_000, burst: 100 } },
    });
    const hash = 'a'.repeat(64);
    expect(
      problems({
        ...base,
        limits: { issuance: { rate: 0, burst: 1.5 }, failed_attestations: { per: 'soon' } },
        resource_servers: [
          { name: 'rs', audiences: ['api'], credential_sha256: hash },
          { name: 'rs', audiences: ['api'], credential_sha256: hash },
          { name: 'both', audiences: ['api'], jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'private' }] }, jwks_file: 'rs.jwks.json' },
          { name: 'neither', audiences: ['api'] },
          { name: 'plain', audiences: [], credential_sha256: 'secret' },
          { name: 'mtls', audiences: ['api'], workload: 'spiffe://td/rs' },
        ],
      }),
    ).toEqual([
      'limits.issuance.rate: Too small: expected number to be >0',
      'limits.issuance.burst: Invalid input: expected int, received number',
      'limits.failed_attestations.per: invalid duration "soon" (use e.g. 90s, 5m, 1h)',
      'resource_servers[2].jwks.keys[0]: must be a public key (it has private members: never put a private key in the config)',
      'resource_servers[2].jwks_file: jwks and jwks_file are exclusive',
      'resource_servers[3]: needs a way to authenticate: credential_sha256 (client secret or bearer), workload (mTLS), or jwks / jwks_file (private_key_jwt)',
      'resource_servers[4].audiences: Too small: expected array to have >=1 items',
      'resource_servers[4].credential_sha256: must be the SHA-256 of the credential, 64 lowercase hex digits (sha256sum)',
    ]);
    expect(
      problems({
        ...base,
        resource_servers: [
          { name: 'rs', audiences: ['api'], credential_sha256: hash },
          { name: 'rs', audiences: ['api'], credential_sha256: hash },
          { name: 'mtls', audiences: ['api'], workload: 'spiffe://td/rs' },
        ],
      }),
    ).toEqual([
      'resource_servers[1]: repeats the name and credential of resource_servers[0]',
      'resource_servers[2].workload: needs tls.client_ca_bundles (mTLS client authentication)',
    ]);
  });

  it('reports every problem by its path', () => {
    const list = problems({
      ...base,
      tokens: { default_ttl: '10s', max_ttl: '20m', leeway: '45s' },
      policies: [
        base.policies[0],
        { name: 'ok', workloads: ['a://b'], audiences: ['a'], actions: ['r'] },
        { name: 'long', workloads: ['a://b'], audiences: ['a'], actions: ['r'], max_ttl: '20m' },
      ],
      bogus: true,
    });
    expect(list).toEqual(
      expect.arrayContaining([
        'policies[2].max_ttl: must be <= 15m',
        'bogus: unrecognized key',
      ]),
    );
    // Unknown key stops the object-level invariants; check them separately.
    const inv = problems({ ...base, tokens: { default_ttl: '10s', max_ttl: '20m', leeway: '45s' } });
    expect(inv).toEqual(
      expect.arrayContaining([
        'tokens.max_ttl: must be <= 15m',
        'tokens.default_ttl: must be >= 30s',
        'tokens.leeway: must be <= 30s',
      ]),
    );
  });

  it('warns when http.max_body_bytes cannot carry a platform token of max_token_bytes (issue 12)', () => {
    const oidc = { issuers: [{ issuer: 'https://idp.example.com', audiences: ['jit-broker'], mapping: { preset: 'github' } }] };
    const base = { ...baseConfig, policies: [{ name: 'r', workloads: ['github://org/*'], audiences: ['a'], actions: ['read'] }] };
    expect(configWarnings(parseConfig({ ...base, attestation: { oidc: { ...oidc, max_token_bytes: 65_536 } } }))).toEqual([
      'attestation.oidc.max_token_bytes (65536) plus 2048 bytes for the rest of the request exceeds http.max_body_bytes (65536): ' +
        'a platform token near the limit is refused as a too-large request (413); raise http.max_body_bytes or lower max_token_bytes',
    ]);
    expect(configWarnings(parseConfig({ ...base, http: { max_body_bytes: 70_000 }, attestation: { oidc: { ...oidc, max_token_bytes: 65_536 } } }))).toEqual([]);
  });

  it('refuses a key overlap shorter than the largest TTL plus leeway', () => {
    expect(problems({ ...base, tokens: { max_ttl: '15m', key_overlap: '10m' } })).toEqual([
      'tokens.key_overlap: must be >= tokens.max_ttl + tokens.leeway (930s) so no live token loses its key',
    ]);
  });

  it('reports bad durations and a missing issuer', () => {
    const list = problems({ store: { kind: 'memory' }, tokens: { default_ttl: 'soon' } });
    expect(list).toContain('issuer: Invalid input: expected string, received undefined');
    expect(list.some((p) => p.startsWith('tokens.default_ttl: invalid duration "soon"'))).toBe(true);
  });

  it('accepts only an https issuer (http on loopback) without query, fragment, credentials or trailing slash', () => {
    for (const [issuer, problem] of [
      ['ftp://x', 'issuer: must be an https URL (http only on localhost)'],
      ['http://broker.example.com', 'issuer: must be an https URL (http only on localhost)'],
      ['javascript:alert(1)', 'issuer: must be an https URL (http only on localhost)'],
      ['https://x/a?b=1', 'issuer: must not have a query'],
      ['https://x/#f', 'issuer: must not have a fragment'],
      ['https://user:pw@x', 'issuer: must not contain credentials'],
      ['https://x/', 'issuer: must not end with "/"'],
      ['not a url', 'issuer: must be an absolute URL'],
    ]) {
      expect(problems({ ...base, issuer }), issuer).toEqual([problem]);
    }
    for (const issuer of ['https://jit.example.com', 'https://example.com/tenant-a', 'http://127.0.0.1:8080', 'http://localhost:8080', 'http://[::1]:9000']) {
      expect(problems({ ...base, issuer }), issuer).toEqual([]);
    }
  });

  it('loads YAML with env overrides', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'broker.yaml');
    writeFileSync(
      file,
      'issuer: https://broker.example.com\nstore: {kind: memory}\ntokens:\n  default_ttl: 2m\npolicies: []\n',
    );
    const cfg = loadConfig(file, { REDIS_URL: 'redis://127.0.0.1:6390', JIT__TOKENS__DEFAULT_TTL: '3m', PORT: '9999', JIT_KEY_PUBLICATION_SECRET: 'x'.repeat(32) });
    expect(cfg.store).toEqual({ kind: 'redis', url: 'redis://127.0.0.1:6390', key_prefix: 'jit:', command_timeout: 1000, global_index: true });
    expect(cfg.tokens.default_ttl).toBe(180_000);
    expect(cfg.listen.port).toBe(9999);
  });

  it('names the file for unreadable or invalid YAML', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'issuer: [unclosed\n');
    expect(() => loadConfig(file, {})).toThrow(/bad\.yaml: invalid YAML/);
    expect(() => loadConfig(join(dir, 'missing.yaml'), {})).toThrow(/missing\.yaml: cannot read \(ENOENT\)/);
  });

  it('env override helper does not mutate its input', () => {
    const raw = { tokens: { default_ttl: '1m' } };
    applyEnv(raw, { JIT__TOKENS__DEFAULT_TTL: '2m' });
    expect(raw.tokens.default_ttl).toBe('1m');
  });
});

describe('key publication secret (issue 11 item 5)', () => {
  const redis = { kind: 'redis', url: 'redis://127.0.0.1:6379' };
  const SECRET = 'a-publication-secret-of-32-chars-or-more';

  it('a Redis store refuses to load without it; the memory store needs none', () => {
    const found = problems({ ...base, store: redis });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^tokens\.key_publication_secret: .*required with a redis store/);
    expect(problems({ ...base, store: redis, tokens: { key_publication_secret: SECRET } })).toEqual([]);
    expect(problems(base)).toEqual([]);
  });

  it('comes from JIT_KEY_PUBLICATION_SECRET (and the accepted one from JIT_KEY_PUBLICATION_SECRET_ACCEPTED), as text', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'broker.yaml');
    writeFileSync(file, 'issuer: https://broker.example.com\nstore: {kind: redis, url: "redis://127.0.0.1:6390"}\npolicies: []\n');
    expect(() => loadConfig(file, {})).toThrow(/key_publication_secret/);
    const digits = '1234567890'.repeat(4); // would be a number if read as YAML
    const cfg = loadConfig(file, { JIT_KEY_PUBLICATION_SECRET: SECRET, JIT_KEY_PUBLICATION_SECRET_ACCEPTED: digits });
    expect(cfg.tokens.key_publication_secret).toBe(SECRET);
    expect(cfg.tokens.key_publication_secret_accepted).toBe(digits);
  });

  it('is long enough, differs from the accepted one, and no problem repeats it', () => {
    const short = 'too-short-secret';
    const found = problems({ ...base, store: redis, tokens: { key_publication_secret: short, key_publication_secret_accepted: short } });
    expect(found.some((p) => p.startsWith('tokens.key_publication_secret: '))).toBe(true);
    for (const p of found) expect(p).not.toContain(short);
    expect(problems({ ...base, store: redis, tokens: { key_publication_secret: SECRET, key_publication_secret_accepted: SECRET } })).toEqual([
      'tokens.key_publication_secret_accepted: must differ from tokens.key_publication_secret',
    ]);
    expect(problems({ ...base, tokens: { key_publication_secret_accepted: SECRET } })).toEqual([
      'tokens.key_publication_secret_accepted: needs tokens.key_publication_secret',
    ]);
  });
});

describe('operators (issue 13 item 1)', () => {
  const H1 = 'a'.repeat(64);
  const H2 = 'b'.repeat(64);
  const tls = { client_ca_bundles: { 'example.org': '/dev/null' } };

  it('is a list of its own: name, role, and exactly one identity', () => {
    const cfg = parseConfig({
      ...base,
      tls,
      operators: [
        { name: 'root', role: 'admin', credential_sha256: H1 },
        { name: 'alice', role: 'auditor', spiffe_id: 'spiffe://example.org/ops/alice' },
        { name: 'bob', role: 'auditor', subject: 'CN=bob, O=Acme', trust_domain: 'example.org' },
      ],
    });
    expect(cfg.operators.map((o) => o.name)).toEqual(['root', 'alice', 'bob']);
    expect(parseConfig(base).operators).toEqual([]);
    expect(problems({ ...base, operators: [{ name: 'x', role: 'admin' }] })[0]).toMatch(/^operators\[0\]: needs exactly one of/);
    expect(problems({ ...base, tls, operators: [{ name: 'x', role: 'admin', credential_sha256: H1, spiffe_id: 'spiffe://example.org/a' }] })[0]).toMatch(/needs exactly one/);
    expect(problems({ ...base, operators: [{ name: 'x', role: 'owner', credential_sha256: H1 }] })[0]).toMatch(/^operators\[0\]\.role/);
    expect(problems({ ...base, operators: [{ name: 'x', role: 'admin', credential_sha256: 'secret' }] })[0]).toMatch(/credential_sha256: must be the SHA-256/);
    expect(problems({ ...base, tls, operators: [{ name: 'x', role: 'admin', subject: 'CN=x' }] }).join('\n')).toMatch(/subject and trust_domain go together/);
  });

  it('refuses repeated names or identities, identities shared with a resource server, and mTLS without a bundle', () => {
    expect(problems({ ...base, operators: [{ name: 'a', role: 'admin', credential_sha256: H1 }, { name: 'a', role: 'auditor', credential_sha256: H2 }] })).toEqual([
      'operators[1]: repeats the name of operators[0]',
    ]);
    expect(problems({ ...base, operators: [{ name: 'a', role: 'admin', credential_sha256: H1 }, { name: 'b', role: 'auditor', credential_sha256: H1 }] })).toEqual([
      'operators[1]: repeats the credential of operators[0]',
    ]);
    expect(
      problems({ ...base, resource_servers: [{ name: 'rs', audiences: ['a'], credential_sha256: H1 }], operators: [{ name: 'a', role: 'admin', credential_sha256: H1 }] }),
    ).toEqual(['operators[0].credential_sha256: is also a resource server credential: an operator needs a credential of its own (jit-broker credential new)']);
    expect(
      problems({ ...base, tls, resource_servers: [{ name: 'rs', audiences: ['a'], workload: 'spiffe://example.org/rs' }], operators: [{ name: 'a', role: 'admin', spiffe_id: 'spiffe://example.org/rs' }] }),
    ).toEqual(['operators[0].spiffe_id: is also a resource server workload: an operator needs an identity of its own']);
    expect(problems({ ...base, operators: [{ name: 'a', role: 'admin', spiffe_id: 'spiffe://other.org/ops/a' }] })).toEqual([
      'operators[0].spiffe_id: needs a bundle for trust domain other.org in tls.client_ca_bundles (mTLS client authentication)',
    ]);
  });
});

describe('store.global_index', () => {
  it('defaults to true; false loads, with a warning that says what it costs', async () => {
    const { configWarnings } = await import('../../src/config/warnings.js');
    const store = { kind: 'redis', url: 'redis://127.0.0.1:6379' };
    const tokens = { key_publication_secret: 'a-publication-secret-of-32-chars-or-more' };
    const on = parseConfig({ ...attested, store, tokens });
    expect(on.store).toMatchObject({ global_index: true });
    expect(configWarnings(on)).toEqual([]);
    const off = parseConfig({ ...attested, store: { ...store, global_index: false }, tokens });
    expect(configWarnings(off).join('\n')).toMatch(/store\.global_index is false: .*kill switch/);
  });
});
