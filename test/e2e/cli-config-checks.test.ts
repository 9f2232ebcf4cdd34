/**
 * `check-config` as an operator runs it (issue 15, item 1): warnings for a config that loads but
 * grants no one anything (exit 0, on stderr), errors for one that cannot be meant (exit 78, every
 * problem once by its path), and env overrides typed by their setting. Real processes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { cli, configDir } from '../helpers/cli.js';

const files = configDir('jit-cli-config-checks-');
afterAll(() => files.cleanup());

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const base = {
  issuer: 'https://broker.test',
  store: { kind: 'redis', url: 'redis://127.0.0.1:6379' },
  attestation: { oidc: { issuers: [{ issuer: ISSUER, audiences: ['jit-broker'], jwks: { keys: [] }, mapping: { preset: 'kubernetes', cluster: 'prod' } }] } },
  policies: [{ name: 'prod', workloads: ['k8s://prod/ns/a/sa/*'], audiences: ['api'], actions: ['read'] }],
};
const env = { JIT_KEY_PUBLICATION_SECRET: 'p'.repeat(32), JIT_CONFIG: undefined };

describe('check-config', () => {
  it('warns, and still says ok, for a rule no source can attest for and an audience no rule grants', async () => {
    const path = files.write('warn.yaml', {
      ...base,
      policies: [...base.policies, { name: 'staging', workloads: ['k8s://staging/ns/a/sa/*'], audiences: ['api'], actions: ['read'] }],
      resource_servers: [{ name: 'billing', audiences: ['billing'], credential_sha256: 'b'.repeat(64) }],
    });
    const r = await cli(['check-config', '--config', path], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${path}: ok\n`);
    const warnings = r.stderr.trim().split('\n');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(new RegExp(`^${path}: warning: policies\\[1\\]\\.workloads\\[0\\] \\(k8s://staging/ns/a/sa/\\*\\) matches no workload id`));
    expect(warnings[1]).toMatch(/warning: resource_servers\[0\]\.audiences\[0\] \(billing\) is granted by no policy rule/);
  });

  it('refuses (exit 78) ** for workloads, a .. resource, a bare-number duration and a misspelt key, each once by its path', async () => {
    const path = files.write('bad.yaml', {
      ...base,
      tokens: { default_ttl: 300 },
      policies: [{ ...base.policies[0], workloads: ['**'], resources: ['db://x/../y'], max_ttl: '20m', requre_binding: true }],
    });
    const r = await cli(['check-config', '--config', path], env);
    expect(r.code).toBe(78);
    expect(r.stdout).toBe('');
    const lines = r.stderr.split('\n').map((l) => l.trim());
    for (const expected of [
      'tokens.default_ttl: a duration needs a unit: "300s", "5m" (a bare number is not a duration)',
      'policies[0].requre_binding: unrecognized key (did you mean "require_binding"?)',
      'policies[0].max_ttl: must be <= 15m',
    ])
      expect(lines).toContain(expected);
    expect(lines.filter((l) => l.startsWith('policies[0].workloads[0]: "**" matches every workload'))).toHaveLength(1);
    expect(lines.filter((l) => l.startsWith('policies[0].resources[0]: can never match'))).toHaveLength(1);
    expect(lines.filter((l) => l.startsWith('policies[0].max_ttl:'))).toHaveLength(1);
  });

  it('takes an env override as its setting types it: JIT__STORE__KEY_PREFIX=jitdeploy: is text', async () => {
    const path = files.write('ok.yaml', base);
    expect(await cli(['check-config', '--config', path], { ...env, JIT__STORE__KEY_PREFIX: 'jitdeploy:' })).toMatchObject({ code: 0, stderr: '' });
    const r = await cli(['check-config', '--config', path], { ...env, JIT__LISTEN__PORT: '80a' });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('listen.port: JIT__LISTEN__PORT: not a number: "80a"');
  });
});
