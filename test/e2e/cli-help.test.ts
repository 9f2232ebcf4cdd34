/**
 * The CLI's help and version matrix (issue 13 item 6) and the offline `policy check` (item 5), as
 * real processes: every form of help answers on stdout with exit 0, usage errors exit 2 on
 * stderr, config errors 78, a failing policy case 1.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, configDir } from '../helpers/cli.js';

const files = configDir('jit-cli-help-');
afterAll(() => files.cleanup());

const COMMANDS = ['serve', 'check-config', 'dev', 'demo-issuer', 'dev-ca', 'credential', 'grants', 'workloads', 'audit', 'keys', 'policy'];
const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;

describe('help and version', { timeout: 120_000 }, () => {
  it('--help, -h and help list every command (stdout, exit 0); no command at all is a usage error (stderr, exit 2)', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(0);
      for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
      expect(r.stdout).toContain('78 config error');
    }
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toBe('');
    expect(none.stderr).toContain('usage: jit-broker <command>');
  });

  it('--version prints the package.json version (exit 0)', async () => {
    const r = await cli(['--version']);
    expect(r).toMatchObject({ code: 0, stdout: `jit-broker ${version}\n` });
  });

  it('help COMMAND, COMMAND --help and COMMAND SUB -h print that command\'s help (exit 0)', async () => {
    for (const c of COMMANDS) {
      const a = await cli(['help', c]);
      const b = await cli([c, '--help']);
      expect(a.code, c).toBe(0);
      expect(a.stdout).toMatch(new RegExp(`usage: jit-broker ${c}`));
      expect(b).toEqual(a);
    }
    const sub = await cli(['grants', 'revoke', '-h']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain('--reason TEXT');
    // keys rotate says it acts on the instance that answers
    expect((await cli(['keys', 'rotate', '--help'])).stdout).toMatch(/instance that ANSWERS/);
    // the connection help says why the credential belongs in the environment or a file
    expect((await cli(['help', 'grants'])).stdout).toMatch(/visible to every\s+local user/);
  });

  it('unknown commands, subcommands and flags are usage errors (exit 2, stderr)', async () => {
    for (const args of [['nope'], ['help', 'nope'], ['grants'], ['grants', 'rm'], ['keys', 'ls', '--nope'], ['credential', 'new', 'extra'], ['grants', 'revoke', '--reason', 'x']]) {
      const r = await cli(args, { JIT_URL: 'http://127.0.0.1:9', JIT_OPERATOR_CREDENTIAL: 'x' });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/\S/);
    }
  });

  it('an operator command without a URL or without credentials is a usage error; the credential is never echoed', async () => {
    const noUrl = await cli(['keys', 'ls'], { JIT_URL: undefined, JIT_OPERATOR_CREDENTIAL: 'secret-in-env' });
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain('--url URL or JIT_URL');
    const noCred = await cli(['keys', 'ls', '--url', 'https://127.0.0.1:9'], { JIT_OPERATOR_CREDENTIAL: undefined, JIT_OPERATOR_CREDENTIAL_FILE: undefined });
    expect(noCred.code).toBe(2);
    expect(noCred.stderr).toContain('JIT_OPERATOR_CREDENTIAL');
    // plain http to a host that is not loopback would put the credential on the wire
    const plain = await cli(['keys', 'ls', '--url', 'http://broker.example.com'], { JIT_OPERATOR_CREDENTIAL: 'secret-in-env' });
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('refusing to send the operator credential over plain http');
    // a stray positional (perhaps the secret itself) is not echoed back
    const stray = await cli(['keys', 'ls', 'secret-on-argv'], { JIT_URL: 'http://127.0.0.1:9', JIT_OPERATOR_CREDENTIAL: 'secret-in-env' });
    expect(stray.code).toBe(2);
    for (const r of [noUrl, noCred, plain, stray]) expect(r.stdout + r.stderr).not.toMatch(/secret-(in-env|on-argv)/);
    // nothing listens there: a failure (exit 1), named without the credential
    const down = await cli(['keys', 'ls', '--url', 'http://127.0.0.1:9'], { JIT_OPERATOR_CREDENTIAL: 'secret-in-env' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach the broker at http://127.0.0.1:9');
    expect(down.stderr).not.toContain('secret-in-env');
  });
});

const config = (policies: unknown[]) => ({
  issuer: 'https://broker.test',
  store: { kind: 'memory' },
  attestation: { oidc: { issuers: [{ issuer: 'https://issuer.test', audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'prod' } }] } },
  policies,
});
const POLICIES = [
  { name: 'reports-read', workloads: ['k8s://prod/ns/reports/sa/*'], audiences: ['reports-api'], actions: ['read'], resources: ['reports://**'] },
  { name: 'payments-bound', workloads: ['k8s://prod/ns/payments/sa/*'], audiences: ['db.payments'], actions: ['read', 'write'], require_binding: true },
];
const PASSING = [
  { name: 'reports may read', workload: 'k8s://prod/ns/reports/sa/builder', intent: { audience: 'reports-api', actions: ['read'], resources: ['reports://q4'] }, expect: 'allow', rule: 'reports-read' },
  { name: 'reports may not write', workload: 'k8s://prod/ns/reports/sa/builder', intent: { audience: 'reports-api', actions: ['write'], resources: ['reports://q4'] }, expect: 'deny', rule: 'reports-read' },
  { name: 'payments need a bound token', workload: 'k8s://prod/ns/payments/sa/api', evidence_kind: 'oidc', intent: { audience: 'db.payments', actions: ['read'] }, expect: 'deny' },
  { workload: 'k8s://prod/ns/payments/sa/api', evidence_kind: 'x509', intent: { audience: 'db.payments', actions: ['write'] }, expect: 'allow' },
  { name: 'strangers get nothing', workload: 'k8s://prod/ns/other/sa/x', intent: { audience: 'reports-api', actions: ['read'] }, expect: 'deny' },
];

describe('policy check (offline)', { timeout: 120_000 }, () => {
  const path = files.write('policy.yaml', config(POLICIES));

  it('validates the policy and passes every case: one line each, exit 0; --json for scripts', async () => {
    const r = await cli(['policy', 'check', '--config', path, '--cases', files.write('pass.yaml', PASSING)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${path}: policy ok (2 rules)`);
    expect(r.stdout).toMatch(/^ok {4}reports may read: allow by rule reports-read$/m);
    expect(r.stdout).toMatch(/^ok {4}payments need a bound token: deny \(.*bound token is required/m);
    expect(r.stdout).toMatch(/^ok {4}case 4: allow by rule payments-bound$/m);
    expect(r.stdout).toContain('5 cases, 0 failed');
    const json = await cli(['policy', 'check', '--config', path, '--cases', files.write('pass.yaml', PASSING), '--json']);
    const report = JSON.parse(json.stdout) as { rules: number; failed: number; results: { ok: boolean; explanation: { decision: string } }[] };
    expect(report).toMatchObject({ rules: 2, cases: 5, failed: 0 });
    expect(report.results.map((x) => x.explanation.decision)).toEqual(['allow', 'deny', 'deny', 'allow', 'deny']);
  });

  it('exits 1 on a failing case (wrong decision, or the wrong rule), naming it', async () => {
    const failing = [
      ...PASSING,
      { name: 'reports may write', workload: 'k8s://prod/ns/reports/sa/builder', intent: { audience: 'reports-api', actions: ['write'], resources: ['reports://q4'] }, expect: 'allow' },
      { name: 'wrong rule', workload: 'k8s://prod/ns/reports/sa/builder', intent: { audience: 'reports-api', actions: ['read'], resources: ['reports://q4'] }, expect: 'allow', rule: 'payments-bound' },
    ];
    const r = await cli(['policy', 'check', '--config', path, '--cases', files.write('fail.yaml', failing)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL {2}reports may write: expected allow, got deny$/m);
    expect(r.stdout).toMatch(/^FAIL {2}wrong rule: expected rule payments-bound, got reports-read$/m);
    expect(r.stdout).toContain('7 cases, 2 failed');
  });

  it('exits 78 on an invalid policy or cases file, naming each problem by its path; without --cases it validates only', async () => {
    const bad = await cli(['policy', 'check', '--config', files.write('bad.yaml', config([...POLICIES, { ...POLICIES[0], max_ttl: '1h' }]))]);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toMatch(/policies\[2\]\.name: duplicate rule name/);
    expect(bad.stderr).toMatch(/policies\[2\]\.max_ttl/);
    const cases = await cli(['policy', 'check', '--config', path, '--cases', files.write('bad-cases.yaml', [{ workload: 'k8s://x', intent: { audience: 'a', actions: [] }, expect: 'maybe', extra: 1 }])]);
    expect(cases.code).toBe(78);
    expect(cases.stderr).toContain('cases[0].expect');
    expect(cases.stderr).toContain('cases[0].intent.actions');
    expect(cases.stderr).toMatch(/cases\[0\].*extra/);
    const only = await cli(['policy', 'check', '--config', path]);
    expect(only).toMatchObject({ code: 0, stdout: `${path}: policy ok (2 rules)\n` });
  });

  it('policy explain --config explains offline, the same as the cases see it', async () => {
    const r = await cli(['policy', 'explain', '--config', path, '--workload', 'k8s://prod/ns/reports/sa/builder', '--audience', 'reports-api', '--action', 'read', '--action', 'write', '--resource', 'reports://q4']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^decision: +deny$/m);
    expect(r.stdout).toMatch(/^no rule allows: +action write$/m);
    expect(r.stdout).toMatch(/^closest rule: +reports-read/m);
    const json = JSON.parse((await cli(['policy', 'explain', '--config', path, '--json', '--workload', 'k8s://prod/ns/reports/sa/builder', '--audience', 'reports-api', '--action', 'read', '--resource', 'reports://q4'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ decision: 'allow', rule: 'reports-read' });
  });
});
