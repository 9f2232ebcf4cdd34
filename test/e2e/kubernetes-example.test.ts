/**
 * The Kubernetes example workload (deploy/kubernetes/example-workload/) runs its task as it would
 * in its pod: its script, with the env its Deployment gives, a service-account token as the
 * kubelet would project it (the manifest's audience and lifetime, from a real local OIDC issuer),
 * against a real broker with the base config's issuer mapping and policy rules (plain HTTP here;
 * the cluster's broker speaks TLS). Only the SDK import changes: the image's built SDK becomes
 * the source it is built from.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { startTestBroker } from '../helpers/broker.js';
import { find, render, type K8sObject, type Workload } from '../helpers/kubernetes.js';

/** Where the image holds the SDK the script imports (deploy/Dockerfile: WORKDIR /app, dist/ copied). */
const IMAGE_SDK = '/app/dist/sdk/index.js';

const example = render('example-workload');
const deployment = find<Workload>(example, 'Deployment', 'report-builder');
const pod = deployment.spec.template.spec;
const container = pod.containers[0]!;
const manifestEnv = Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value!]));
const projection = pod.volumes!.flatMap((v) => v.projected?.sources ?? []).find((s) => s.serviceAccountToken)!.serviceAccountToken!;
const scriptMap = find(example, 'ConfigMap', pod.volumes!.find((v) => v.name === 'task')!.configMap!.name);
const brokerConfigMap = render('base').find((o: K8sObject) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('jit-broker-config-'))!;

let issuer: OidcIssuer;
let broker: BrokerRuntime;
let dir: string;
let child: ChildProcess | undefined;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256' });
  // The base config's issuer entry (audiences, token age and lifetime caps, mapping) and its
  // policy rules, with the local issuer standing in for the cluster's.
  const raw = parseYaml(brokerConfigMap.data!['broker.yaml']!) as {
    attestation: { oidc: { issuers: Record<string, unknown>[] } };
    policies: unknown[];
  };
  const { jwks_uri: _jwksUri, ...cluster } = raw.attestation.oidc.issuers[0]!;
  broker = await startTestBroker(issuer, {
    attestation: { oidc: { issuers: [{ ...cluster, issuer: issuer.issuer, algorithms: ['ES256'] } as never] } },
    policies: raw.policies as never,
  });
  dir = mkdtempSync(join(tmpdir(), 'jit-k8s-example-'));
});

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    process.kill(child.pid!, 'SIGTERM');
    await exited;
  }
  await broker?.close();
  await issuer?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('deploy/kubernetes/example-workload', () => {
  it('imports the SDK the image holds', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { exports: Record<string, { default: string }> };
    expect(`/app/${pkg.exports['./sdk']!.default.replace(/^\.\//, '')}`).toBe(IMAGE_SDK);
    const dockerfile = readFileSync('deploy/Dockerfile', 'utf8');
    expect(dockerfile).toMatch(/^WORKDIR \/app$/m);
    expect(dockerfile).toMatch(/^COPY --from=build \/app\/dist \.\/dist$/m);
    expect(scriptMap.data!['task.mjs']).toContain(`from '${IMAGE_SDK}'`);
  });

  it('starts a task with its projected token and ends it, logging the grant and never the token', async () => {
    const namespace = deployment.metadata.namespace!;
    const token = await issuer.mintServiceAccountToken({
      namespace,
      serviceAccount: pod.serviceAccountName!,
      pod: 'report-builder-7d9f8-abcde',
      audience: projection.audience!,
      ttlSeconds: projection.expirationSeconds!,
    });
    const tokenFile = join(dir, 'jit-broker');
    writeFileSync(tokenFile, token);
    const caFile = join(dir, 'ca.crt');
    writeFileSync(caFile, '# not used: this test broker speaks plain HTTP\n');
    const script = join(dir, 'task.mts');
    writeFileSync(script, scriptMap.data!['task.mjs']!.replace(IMAGE_SDK, resolve('src/sdk/index.ts')));

    const env = { ...manifestEnv, JIT_URL: broker.url, JIT_CA: caFile, JIT_TOKEN_FILE: tokenFile };
    child = spawn(process.execPath, ['--import', 'tsx', script], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = once(child, 'exit');
    // The script loops (a task a minute): one start and end is what this checks.
    await Promise.race([
      new Promise<void>((done) => child!.stdout!.on('data', () => stdout.includes('task ended') && done())),
      new Promise<void>((done) => child!.stderr!.on('data', () => stderr.includes('task failed') && done())),
      exited,
    ]);
    expect(stderr).toBe('');
    expect(stdout).toMatch(/^task started: grant (g_[\w-]+), token valid until \d{4}-\d\d-\d\dT[\d:.]+Z\ntask ended: grant \1\n$/);
    expect(stdout).not.toContain(token);
    expect(stdout).not.toContain('eyJ');
    const grant = /grant (g_[\w-]+)/.exec(stdout)![1]!;
    expect(await broker.store.getGrant(grant)).toMatchObject({ status: 'ended', workload: `k8s://prod/ns/${namespace}/sa/${pod.serviceAccountName}` });
  });
});
