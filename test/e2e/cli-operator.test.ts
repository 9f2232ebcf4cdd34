/**
 * The operator CLI against a real broker (issue 13 item 6): `jit-broker serve` as its own process
 * over real TLS with the harness's Redis, and each operator command as its own process, by bearer
 * credential (env or file) and by mTLS client certificate. A table and --json for every command,
 * the kill switch's loop until done (more than one call: over 1,000 matching grants), the SSE tail
 * receiving an issuance made after it connected, and no credential in any output or log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCredential } from '../../src/auth/credential.js';
import { issueCertificate } from '../../src/dev/dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { newGrantId } from '../../src/grants/ids.js';
import { createRedisGrantStore, type RedisGrantStore } from '../../src/grants/redis-store.js';
import type { NewGrant } from '../../src/grants/store.js';
import { silentLogger } from '../../src/log.js';
import { freePort } from '../../src/util/net.js';
import { cli, configDir, spawnCli, stopChildren, type CliChild, type CliResult } from '../helpers/cli.js';
import { createTestPki, httpsJson, type TestPki } from '../helpers/pki.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, TEST_KEY_PUBLICATION_SECRETS, uniquePrefix } from '../helpers/redis.js';

const files = configDir('jit-cli-operator-');
const admin = newCredential();
const auditor = newCredential();
const prefix = uniquePrefix('cli-op');
const BULK = 1_100; // more than one call's bounded work (MAX_EXAMINED = 1000)
const MIN = 60_000;

let issuer: OidcIssuer;
let pki: TestPki;
let broker: CliChild;
let store: RedisGrantStore;
let url: string;
let caFile: string;
const runnerGrants: string[] = [];
/** Every CLI result, checked for credentials at the end. */
const seen: CliResult[] = [];

/** The CLI as the admin (credential in the environment, the broker's CA from JIT_CA). */
const op = async (args: string[], env: Record<string, string | undefined> = {}) => {
  const r = await cli(args, { JIT_URL: url, JIT_CA: caFile, JIT_OPERATOR_CREDENTIAL: admin.credential, ...env }, { timeoutMs: 60_000 });
  seen.push(r);
  return r;
};
const json = <T = Record<string, any>>(r: CliResult): T => {
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
};

async function startTask(serviceAccount: string, task?: string) {
  const token = await issuer.mintServiceAccountToken({ cluster: 'ops', namespace: 'ops', serviceAccount, audience: 'jit-broker', ttlSeconds: 600 });
  const res = await httpsJson(`${url}/v1/tasks`, {
    ca: pki.example.certPem,
    body: { attestation: { kind: 'oidc', token }, intent: { audience: 'api.ops', actions: ['read'], purpose: 'cli test', ...(task ? { task } : {}) } },
  });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.grant as string;
}

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  pki = await createTestPki();
  const alice = await issueCertificate(pki.example, { uris: ['spiffe://example.org/ops/alice'] });
  caFile = files.write('ca.pem', pki.example.certPem);
  files.write('alice.pem', alice.chainPem);
  files.write('alice-key.pem', alice.keyPem);
  files.write('auditor.credential', `${auditor.credential}\n`);
  const port = await freePort();
  url = `https://127.0.0.1:${port}`;
  const config = files.write('broker.yaml', {
    issuer: url,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'redis', url: redisUrl(), key_prefix: prefix },
    tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRET },
    tls: { cert: files.write('server.pem', pki.server.chainPem), key: files.write('server-key.pem', pki.server.keyPem), client_ca_bundles: { 'example.org': caFile } },
    attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'ops' } }] } },
    limits: { issuance: { rate: 1_000_000, burst: 1_000_000 } },
    policies: [{ name: 'ops', workloads: ['k8s://ops/ns/ops/sa/*'], audiences: ['api.ops'], actions: ['read'] }],
    operators: [
      { name: 'root', role: 'admin', credential_sha256: admin.sha256 },
      { name: 'viewer', role: 'auditor', credential_sha256: auditor.sha256 },
      { name: 'alice', role: 'admin', spiffe_id: 'spiffe://example.org/ops/alice' },
    ],
  });
  broker = await spawnCli(['serve', '--config', config], {
    label: 'cli-operator-serve',
    env: { LOG_LEVEL: 'info' },
    ready: () => httpsJson(`${url}/readyz`, { ca: pki.example.certPem }).then((r) => r.status === 200, () => false),
    timeoutMs: 40_000,
  });
  for (let i = 0; i < 3; i++) runnerGrants.push(await startTask('runner', `nightly-${i}`));
  await startTask('batch');
  // Over a thousand live grants of other workloads, written through the same store code the broker uses.
  store = createRedisGrantStore({ keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, url: redisUrl(), keyPrefix: prefix, log: silentLogger });
  const now = Date.now();
  const bulk: NewGrant[] = Array.from({ length: BULK }, (_, i) => {
    const workload = `k8s://bulk/ns/load/sa/svc-${i % 50}`;
    return {
      id: newGrantId(workload),
      workload,
      workload_kind: 'oidc',
      issuer: issuer.issuer,
      rule: 'bulk',
      audience: 'api.bulk',
      actions: ['read'],
      resources: [],
      purpose: 'load',
      task: `bulk-${i}`,
      created_at: now - BULK + i,
      expires_at: now + 60 * MIN,
      token_jti: `jti-bulk-${i}`,
      token_exp: now + 5 * MIN,
    };
  });
  for (let i = 0; i < bulk.length; i += 500) await Promise.all(bulk.slice(i, i + 500).map((g) => store.createGrant(g, { now, maxActive: 100, retentionMs: 60 * MIN })));
}, 180_000);

afterAll(async () => {
  await broker?.stop();
  stopChildren();
  await store?.close();
  await issuer?.close();
  files.cleanup();
});

describe('jit-broker operator commands against a real broker', { timeout: 120_000 }, () => {
  it('keys ls and keys rotate: a table naming the instance that answered, and --json', async () => {
    const table = await op(['keys', 'ls']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^instance that answered: \S+/m);
    expect(table.stdout).toMatch(/^KID +ALG +CREATED +RETIRES +UNPUBLISHED +THIS INSTANCE$/m);
    expect(table.stdout).toMatch(/ ES256 .* current$/m);
    const listed = json<{ instance: string; keys: { kid: string; state?: string }[] }>(await op(['keys', 'ls', '--json']));
    const current = listed.keys.find((k) => k.state === 'current')!.kid;

    const rotated = await op(['keys', 'rotate']);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toContain(`rotated instance ${listed.instance}: ${current} -> `);
    expect(rotated.stdout).toContain('other instances keep their own keys');
    const again = json<{ instance: string; rotated: boolean; previous_kid?: string; note: string }>(await op(['keys', 'rotate', '--json']));
    expect(again.instance).toBe(listed.instance);
    expect(again.note).toMatch(/instance/);
  });

  it('grants ls (filters, table and --json) and grants show (the grant and its events)', async () => {
    const table = await op(['grants', 'ls', '--workload', 'k8s://ops/ns/ops/sa/runner']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^GRANT +WORKLOAD +AUDIENCE +ACTIONS +RULE +STATUS +EXPIRES +TASK$/m);
    for (const g of runnerGrants) expect(table.stdout).toMatch(new RegExp(`^${g} +k8s://ops/ns/ops/sa/runner +api\\.ops +read +ops +active `, 'm'));
    expect(table.stdout).not.toContain('sa/batch');
    const page = json<{ grants: { grant: string; status: string; task: string }[] }>(await op(['grants', 'ls', '--workload', 'k8s://ops/ns/ops/sa/runner', '--json']));
    expect(page.grants.map((g) => g.grant).sort()).toEqual([...runnerGrants].sort());
    const byTask = json<{ grants: { grant: string }[] }>(await op(['grants', 'ls', '--task', 'nightly-1', '--audience', 'api.ops', '--json']));
    expect(byTask.grants.map((g) => g.grant)).toEqual([runnerGrants[1]]);
    // one page of two, the next page's cursor on stderr
    const paged = await op(['grants', 'ls', '--rule', 'ops', '--limit', '2']);
    expect(paged.stderr).toMatch(/^more: add --cursor \S+/m);

    const show = await op(['grants', 'show', runnerGrants[0]!]);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(new RegExp(`^grant: +${runnerGrants[0]}$`, 'm'));
    expect(show.stdout).toMatch(/^status: +active$/m);
    expect(show.stdout).toMatch(/^evidence: +oidc from http/m);
    expect(show.stdout).toMatch(/^events:\nAT +TYPE/m);
    expect(show.stdout).toMatch(/ grant\.issued /);
    const detail = json<{ grant: string; events: { type: string }[] }>(await op(['grants', 'show', runnerGrants[0]!, '--json']));
    expect(detail.grant).toBe(runnerGrants[0]);
    expect(detail.events.map((e) => e.type)).toContain('grant.issued');
    // a broker error prints its error_description and exits 1
    const missing = await op(['grants', 'show', 'not-a-grant']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^jit-broker: the broker refused: .*\(invalid_request, HTTP 400\)$/m);
  });

  it('workloads ls: live grant counts and last activity, table and --json', async () => {
    const table = await op(['workloads', 'ls', '--limit', '1000']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^WORKLOAD +LIVE +LAST ACTIVITY$/m);
    expect(table.stdout).toMatch(/^k8s:\/\/ops\/ns\/ops\/sa\/runner +3 +\d{4}-/m);
    const all = json<{ workloads: { workload: string; live_grants: number }[] }>(await op(['workloads', 'ls', '--all', '--json']));
    expect(all.workloads.find((w) => w.workload === 'k8s://ops/ns/ops/sa/batch')?.live_grants).toBe(1);
  });

  it('audit ls: the event log as a table, --json and --ndjson; policy explain asks the broker', async () => {
    const table = await op(['audit', 'ls', '--workload', 'k8s://ops/ns/ops/sa/runner']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^AT +TYPE +WORKLOAD +GRANT +BY +DETAIL$/m);
    expect(table.stdout).toMatch(new RegExp(` grant\\.issued +k8s://ops/ns/ops/sa/runner +${runnerGrants[2]} `));
    const page = json<{ events: { type: string; grant?: string }[] }>(await op(['audit', 'ls', '--type', 'issued', '--workload', 'k8s://ops/ns/ops/sa/runner', '--json']));
    expect(page.events.map((e) => e.grant).sort()).toEqual([...runnerGrants].sort());
    const operators = json<{ events: { action?: string; operator?: string }[] }>(await op(['audit', 'ls', '--type', 'operator', '--json']));
    expect(operators.events).toContainEqual(expect.objectContaining({ action: 'keys.rotate', operator: 'root' }));
    const ndjson = await op(['audit', 'ls', '--ndjson', '--grant', runnerGrants[0]!]);
    expect(ndjson.code, ndjson.stderr).toBe(0);
    const lines = ndjson.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; grant: string });
    expect(lines[0]).toMatchObject({ type: 'grant.issued', grant: runnerGrants[0] });

    const allow = await op(['policy', 'explain', '--workload', 'k8s://ops/ns/ops/sa/runner', '--audience', 'api.ops', '--action', 'read']);
    expect(allow.code, allow.stderr).toBe(0);
    expect(allow.stdout).toMatch(/^decision: +allow$/m);
    expect(allow.stdout).toMatch(/^rule: +ops$/m);
    const deny = json(await op(['policy', 'explain', '--json', '--workload', 'k8s://ops/ns/ops/sa/runner', '--audience', 'api.ops', '--action', 'write']));
    expect(deny).toMatchObject({ decision: 'deny', closest_rule: { name: 'ops' }, not_allowed: { actions: ['write'] } });
  });

  it('an mTLS operator (--cert/--key/--ca, no bearer) and an auditor from --credential-file; the auditor cannot revoke (exit 1, the broker\'s error_description)', async () => {
    const mtls = await op(['keys', 'ls', '--json', '--cert', `${files.dir}/alice.pem`, '--key', `${files.dir}/alice-key.pem`, '--ca', caFile], {
      JIT_OPERATOR_CREDENTIAL: undefined,
      JIT_CA: undefined,
    });
    expect(json<{ keys: unknown[] }>(mtls).keys.length).toBeGreaterThan(0);
    const asAuditor = { JIT_OPERATOR_CREDENTIAL: undefined, JIT_OPERATOR_CREDENTIAL_FILE: `${files.dir}/auditor.credential` };
    expect((await op(['grants', 'ls', '--limit', '1'], asAuditor)).code).toBe(0);
    const refused = await op(['grants', 'revoke', '--workload', 'k8s://ops/ns/ops/sa/runner', '--reason', 'test'], asAuditor);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^jit-broker: the broker refused: .*role auditor.*needs role admin.*\(access_denied, HTTP 403\)$/m);
    // on argv it still works, with a warning that names the risk (not the secret)
    const argv = await op(['keys', 'ls', '--credential', auditor.credential], { JIT_OPERATOR_CREDENTIAL: undefined });
    expect(argv.code, argv.stderr).toBe(0);
    expect(argv.stderr).toContain('warning: --credential puts the secret on the command line');
    const wrong = await op(['keys', 'ls'], { JIT_OPERATOR_CREDENTIAL: newCredential().credential });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('(invalid_client, HTTP 401)');
  });

  it('grants revoke: a dry run, then the kill switch looping until done with progress; table and --json', async () => {
    const selector = ['--workload', 'k8s://bulk/ns/load/sa/*', '--reason', 'incident 42'];
    const dry = await op(['grants', 'revoke', ...selector, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`^would revoke ${BULK} grants matching workload "k8s://bulk/ns/load/sa/\\*" \\(dry run: nothing changed\\) in [2-9] calls$`, 'm'));
    expect(dry.stderr).toMatch(/^would revoke \d+ grants so far \(1 call\), continuing…$/m);
    expect(json<{ grants: unknown[] }>(await op(['grants', 'ls', '--workload', 'k8s://bulk/ns/load/sa/svc-7', '--status', 'active', '--json'])).grants).toHaveLength(BULK / 50);

    const real = await op(['grants', 'revoke', ...selector]);
    expect(real.code, real.stderr).toBe(0);
    expect(real.stdout).toMatch(new RegExp(`^revoked ${BULK} grants matching workload "k8s://bulk/ns/load/sa/\\*" in [2-9] calls$`, 'm'));
    expect(real.stderr).toMatch(/^revoked \d+ grants so far \(1 call\), continuing…$/m);
    const after = json<{ grants: { status: string; closed_by?: string }[] }>(await op(['grants', 'ls', '--workload', 'k8s://bulk/ns/load/sa/svc-7', '--json']));
    expect(after.grants).toHaveLength(BULK / 50);
    for (const g of after.grants) expect(g).toMatchObject({ status: 'revoked', closed_by: 'operator:root' });
    // the others stand
    expect(json<{ grants: { status: string }[] }>(await op(['grants', 'ls', '--workload', 'k8s://ops/ns/ops/sa/runner', '--json'])).grants.map((g) => g.status)).toEqual(['active', 'active', 'active']);

    const one = json(await op(['grants', 'revoke', '--grant', runnerGrants[0]!, '--reason', 'one', '--json']));
    expect(one).toMatchObject({ selector: { grant: runnerGrants[0] }, dry_run: false, revoked: 1, done: true, calls: 1 });
    // usage: exactly one selector, and a reason
    expect((await op(['grants', 'revoke', '--grant', 'x', '--task', 'y', '--reason', 'r'])).code).toBe(2);
    expect((await op(['grants', 'revoke', '--grant', runnerGrants[1]!])).code).toBe(2);
  });

  it('audit tail receives an issuance made after it connected', async () => {
    const tail = await spawnCli(['audit', 'tail', '--type', 'issued', '--workload', 'k8s://ops/ns/ops/sa/tail', '--count', '1'], {
      label: 'cli-operator-tail',
      env: { JIT_URL: url, JIT_CA: caFile, JIT_OPERATOR_CREDENTIAL: admin.credential },
    });
    const exited = new Promise<number | null>((resolve) => tail.child.once('exit', (code) => resolve(code)));
    // It says so on stderr once the broker accepted the stream (after its ready event).
    const deadline = Date.now() + 30_000;
    while (!tail.output().includes('following the audit log')) {
      if (Date.now() > deadline || tail.child.exitCode !== null) throw new Error(`audit tail did not connect:\n${tail.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const grant = await startTask('tail');
    expect(await exited).toBe(0);
    expect(tail.output()).toMatch(new RegExp(`grant\\.issued  k8s://ops/ns/ops/sa/tail  ${grant}`));
    seen.push({ code: 0, stdout: tail.output(), stderr: '' });
  });

  it('no credential appears in any command\'s output or in the broker\'s logs', () => {
    const everything = [...seen.map((r) => r.stdout + r.stderr), broker.output()].join('\n');
    expect(seen.length).toBeGreaterThan(30);
    for (const secret of [admin.credential, auditor.credential]) expect(everything).not.toContain(secret);
  });
});
