/**
 * Config that passes but cannot work (issue 15, item 1): each case gives its error (the config is
 * refused) or its warning (printed by check-config, logged by serve). README "Config checks".
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyEnv, loadConfig, parseConfig } from '../../src/config/load.js';
import { configWarnings } from '../../src/config/warnings.js';
import { ConfigError } from '../../src/errors.js';
import { configProblems } from '../helpers/config.js';

const SECRET = 'k'.repeat(32);
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const k8s = (cluster: string) => ({ issuer: ISSUER, audiences: ['jit-broker'], jwks: { keys: [] }, mapping: { preset: 'kubernetes', cluster } });

/** A config that attests platform tokens of cluster prod and grants them `api`. */
const base = {
  issuer: 'https://broker.example.com',
  store: { kind: 'memory' },
  attestation: { oidc: { issuers: [k8s('prod')] } },
  policies: [{ name: 'r', workloads: ['k8s://prod/ns/payments/sa/*'], audiences: ['api'], actions: ['read'] }],
};
const rule = (over: Record<string, unknown>) => ({ name: 'r', workloads: ['k8s://prod/ns/payments/sa/*'], audiences: ['api'], actions: ['read'], ...over });
const warnings = (raw: unknown) => configWarnings(parseConfig(raw));

describe('config checks: the cases that used to pass', () => {
  it('a config that can work has no problem and no warning', () => {
    expect(configProblems(base)).toEqual([]);
    expect(warnings(base)).toEqual([]);
  });

  it('no attestation section: a warning (and serve is not ready)', () => {
    const { attestation: _, ...none } = base;
    expect(configProblems(none)).toEqual([]);
    expect(warnings(none)).toEqual([expect.stringMatching(/^attestation: no attestation source is configured .*every request is refused/)]);
  });

  it('policies: []: a warning', () => {
    expect(warnings({ ...base, policies: [] })).toEqual([expect.stringMatching(/^policies: no rule: every request is denied/)]);
  });

  it('a rule for spiffe:// ids with no X.509 attestation: a warning naming the rule and the sources', () => {
    const w = warnings({ ...base, policies: [rule({ workloads: ['spiffe://example.org/ns/*'] })] });
    expect(w).toEqual([
      expect.stringMatching(/^policies\[0\]\.workloads\[0\] \(spiffe:\/\/example\.org\/ns\/\*\) matches no workload id that an attestation source can produce/),
    ]);
    expect(w[0]).toContain('"k8s://prod/"');
  });

  it('a rule for k8s://staging/… when the only issuer maps cluster prod: a warning; a rule matching both is fine', () => {
    const w = warnings({ ...base, policies: [rule({ workloads: ['k8s://staging/ns/a/sa/b', 'k8s://prod/**'] })] });
    expect(w).toEqual([expect.stringMatching(/^policies\[0\]\.workloads\[0\] \(k8s:\/\/staging\/ns\/a\/sa\/b\) matches no workload id/)]);
    expect(warnings({ ...base, policies: [rule({ workloads: ['k8s://*/ns/a/sa/b'] })] })).toEqual([]);
  });

  it('a resource server whose audience no rule grants: a warning', () => {
    const rs = [{ name: 'billing', audiences: ['api', 'billing'], credential_sha256: 'a'.repeat(64) }];
    expect(warnings({ ...base, resource_servers: rs })).toEqual([
      expect.stringMatching(/^resource_servers\[0\]\.audiences\[1\] \(billing\) is granted by no policy rule/),
    ]);
  });

  it('workloads: ["**"]: an error', () => {
    expect(configProblems({ ...base, policies: [rule({ workloads: ['**'] })] })).toEqual([
      expect.stringMatching(/^policies\[0\]\.workloads\[0\]: "\*\*" matches every workload of every attestation source/),
    ]);
  });

  it('a resource pattern containing "..": an error (no request can name such a resource)', () => {
    expect(configProblems({ ...base, policies: [rule({ resources: ['s3://bucket/../other/*', 's3://bucket/ok/**', 'db://x/./y'] })] })).toEqual([
      expect.stringMatching(/^policies\[0\]\.resources\[0\]: can never match: .*"\.\."/),
      expect.stringMatching(/^policies\[0\]\.resources\[2\]: can never match: .*"\."/),
    ]);
  });
});

describe('config checks: durations need a unit', () => {
  it('refuses a bare number, in settings and in rules', () => {
    expect(configProblems({ ...base, tokens: { default_ttl: 300 }, policies: [rule({ max_ttl: 60 })] })).toEqual([
      'tokens.default_ttl: a duration needs a unit: "300s", "5m" (a bare number is not a duration)',
      'policies[0].max_ttl: a duration needs a unit: "60s", "1m" (a bare number is not a duration)',
    ]);
  });
});

describe('config checks: every problem once, by path', () => {
  it('a field refused by its own check is not refused again by a cross-field one', () => {
    expect(configProblems({ ...base, policies: [rule({ max_ttl: '20m' })] })).toEqual(['policies[0].max_ttl: must be <= 15m']);
  });

  it('names an unrecognized key by its path with a "did you mean"', () => {
    expect(configProblems({ ...base, tokens: { defualt_ttl: '5m' }, policies: [rule({ worklods: ['x'] })] })).toEqual([
      'tokens.defualt_ttl: unrecognized key (did you mean "default_ttl"?)',
      'policies[0].worklods: unrecognized key (did you mean "workloads"?)',
    ]);
    expect(configProblems({ ...base, zzz: 1 })).toEqual(['zzz: unrecognized key']);
  });
});

describe('config checks: env overrides take the type of the field they set', () => {
  // Made in beforeAll, not while collecting: a run filtered by -t skips this block's hooks.
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'jit-config-checks-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const redis = { ...base, store: { kind: 'redis', url: 'redis://127.0.0.1:6379' }, tokens: { key_publication_secret: SECRET } };

  it('a string field takes the text as it is', () => {
    const env = { JIT__STORE__KEY_PREFIX: 'jitdeploy:', JIT__ISSUER: 'https://b.example', JIT__LOG__LEVEL: 'debug' };
    const cfg = parseConfig(applyEnv(redis, env));
    expect(cfg.store).toMatchObject({ key_prefix: 'jitdeploy:' });
    expect(cfg.issuer).toBe('https://b.example');
    expect(parseConfig(applyEnv(redis, { JIT__STORE__KEY_PREFIX: '123' })).store).toMatchObject({ key_prefix: '123' });
    expect(parseConfig(applyEnv(redis, { JIT__TOKENS__KEY_PUBLICATION_SECRET: '1'.repeat(40) })).tokens.key_publication_secret).toBe('1'.repeat(40));
  });

  it('numbers, booleans and durations', () => {
    const cfg = parseConfig(applyEnv(redis, { JIT__LISTEN__PORT: '9090', JIT__STORE__GLOBAL_INDEX: 'false', JIT__TOKENS__DEFAULT_TTL: '2m' }));
    expect(cfg.listen.port).toBe(9090);
    expect(cfg.store).toMatchObject({ global_index: false });
    expect(cfg.tokens.default_ttl).toBe(120_000);
    expect(configProblems(applyEnv(redis, { JIT__LISTEN__PORT: 'eighty' }))).toEqual(['listen.port: JIT__LISTEN__PORT: not a number: "eighty"']);
    expect(configProblems(applyEnv(redis, { JIT__STORE__GLOBAL_INDEX: 'yes' }))).toEqual(['store.global_index: JIT__STORE__GLOBAL_INDEX: must be true or false']);
  });

  it('structured values in JSON', () => {
    const cfg = parseConfig(applyEnv(redis, { JIT__HTTP__TRUSTED_PROXIES: '["10.0.0.0/8"]', JIT__POLICIES: JSON.stringify([rule({ name: 'env' })]) }));
    expect(cfg.http.trusted_proxies).toEqual(['10.0.0.0/8']);
    expect(cfg.policies.map((r) => r.name)).toEqual(['env']);
    expect(configProblems(applyEnv(redis, { JIT__HTTP__TRUSTED_PROXIES: '10.0.0.0/8' }))).toEqual([
      expect.stringMatching(/^http\.trusted_proxies: JIT__HTTP__TRUSTED_PROXIES: must be JSON/),
    ]);
  });

  it('through loadConfig as serve reads it', () => {
    const file = join(dir, 'c.json.yaml');
    writeFileSync(file, JSON.stringify(redis));
    const cfg = loadConfig(file, { JIT__STORE__KEY_PREFIX: 'jitdeploy:' });
    expect(cfg.store).toMatchObject({ key_prefix: 'jitdeploy:' });
  });
});

describe('config checks: the YAML error', () => {
  it('shows the whole snippet with its line and caret', () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-config-yaml-'));
    try {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, 'issuer: https://b.example\nstore:\n  kind: memory\npolicies: []\nstore:\n  kind: redis\n');
      let problems: string[] = [];
      try {
        loadConfig(file, {});
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        problems = e.problems;
      }
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/^\S*bad\.yaml: invalid YAML: Map keys must be unique at line 5, column 1:\n/);
      expect(problems[0]).toContain('policies: []\nstore:\n^');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
