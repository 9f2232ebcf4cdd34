/**
 * docker-compose.yml's services as real processes, outside a container (no Docker engine here or
 * in CI): redis-server with the compose file's own flags and ACL, the demo issuer with its compose
 * command, `serve` with the compose environment and the shipped deploy/compose/broker.yaml, and the
 * "examples" profile's two commands. Host names and container paths are mapped to loopback ports
 * and a scratch directory; nothing else is changed. The image's HEALTHCHECK, parsed out of
 * deploy/Dockerfile, exits non-zero before the broker listens, 0 once it is ready, and non-zero
 * again when Redis goes away; the demo credentials the config documents work as documented.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, configDir, spawnCli, stopChildren, type CliChild } from '../helpers/cli.js';
import { healthcheckCommand, mount, readCompose, serviceEnv, type ComposeService } from '../helpers/compose.js';
import { freePort, startRedisServer, type RedisProcess } from '../helpers/redis.js';

const compose = readCompose();
const service = (name: string): ComposeService => {
  const s = compose.services[name];
  if (!s) throw new Error(`docker-compose.yml has no service ${name}`);
  return s;
};
const scratch = configDir('jit-compose-');
const groups: ChildProcess[] = [];
let redis: RedisProcess | undefined;

/** Container paths of named volumes → directories in the scratch dir; service:port → 127.0.0.1:port. */
const paths = new Map<string, string>();
const hosts = new Map<string, string>();
const replaceAll = (value: string, map: Map<string, string>): string => [...map].reduce((out, [from, to]) => out.split(from).join(to), value);
/** Container paths only: for the config and the issuer's command, where host names are identifiers (iss). */
const toPath = (value: string): string => replaceAll(value, paths);
/** Paths and addresses: for the URLs a service reaches the others at. */
const toHost = (value: string): string => replaceAll(toPath(value), hosts);

for (const s of Object.values(compose.services)) {
  for (const v of s.volumes ?? []) {
    const m = mount(v);
    if (!m.named || paths.has(m.target)) continue;
    const dir = join(scratch.dir, m.source);
    mkdirSync(dir, { recursive: true });
    paths.set(m.target, dir);
  }
}

/** The demo credentials deploy/compose/broker.yaml documents in its header, checked against its hashes. */
const configText = readFileSync(mount(service('broker').volumes!.find((v) => v.includes(':/etc/jit-broker/'))!).source, 'utf8');
const documented = (label: string) => new RegExp(`^#\\s+${label}[^:]*:\\s+(\\S+)$`, 'm').exec(configText)?.[1];

function healthcheck(port: number): number | null {
  const [bin, ...args] = healthcheckCommand();
  // `node` in the image; here the node running the tests.
  const r = spawnSync(bin === 'node' ? process.execPath : bin!, args, { env: { ...process.env, PORT: String(port) }, timeout: 15_000 });
  return r.status;
}

/** A compose service's own healthcheck (`CMD` form), run here with its container port mapped to the local one. */
function serviceHealthcheck(name: string, containerPort: string, port: number): number | null {
  const [form, bin, ...args] = service(name).healthcheck!.test;
  expect(form).toBe('CMD');
  const mapped = args.map((a) => a.split(`127.0.0.1:${containerPort}/`).join(`127.0.0.1:${port}/`));
  expect(mapped).not.toEqual(args);
  return spawnSync(bin === 'node' ? process.execPath : bin!, mapped, { timeout: 15_000 }).status;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 45_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A compose service's command run as a shell command line (its own process group), output collected. */
function shell(command: string[], env: Record<string, string>) {
  const child = spawn(command[0]!, command.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  groups.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

let broker: CliChild;
let brokerUrl = '';
let issuerUrl = '';
let issuerChild: CliChild;

beforeAll(async () => {
  // Redis: the compose command's redis-server flags, with the ACL file's placeholder written over as compose does.
  const redisService = service('redis');
  const script = redisService.command!.join(' ');
  const password = serviceEnv(redisService).JIT_REDIS_PASSWORD!;
  const acl = readFileSync('deploy/redis/users.acl', 'utf8').replaceAll('@JIT_BROKER_PASSWORD_SHA256@', createHash('sha256').update(password).digest('hex'));
  const aclPath = scratch.write('users.acl', acl);
  const flags = script
    .slice(script.indexOf('redis-server ') + 'redis-server '.length)
    .trim()
    .split(/\s+/)
    .map((f) => (f === "''" ? '' : f === '/tmp/users.acl' ? aclPath : toPath(f)));
  const dataDir = join(scratch.dir, 'redis-data');
  expect(flags).toContain(dataDir); // --dir is the redis-data volume
  redis = await startRedisServer({ args: flags });
  hosts.set('redis:6379', `127.0.0.1:${redis.port}`);

  // The demo issuer: its compose command, on a free loopback port.
  const issuerPort = await freePort();
  const issuerArgs = service('demo-issuer').command!.map(toPath);
  issuerArgs[issuerArgs.indexOf('--host') + 1] = '127.0.0.1';
  const containerIssuerPort = issuerArgs[issuerArgs.indexOf('--port') + 1]!;
  issuerArgs[issuerArgs.indexOf('--port') + 1] = String(issuerPort);
  hosts.set(`demo-issuer:${containerIssuerPort}`, `127.0.0.1:${issuerPort}`);
  issuerUrl = `http://127.0.0.1:${issuerPort}`;
  issuerChild = await spawnCli(issuerArgs, { label: 'compose-demo-issuer', readyUrl: `${issuerUrl}/jwks.json`, timeoutMs: 40_000 });
  expect(serviceHealthcheck('demo-issuer', containerIssuerPort, issuerPort)).toBe(0);
}, 90_000);

afterAll(async () => {
  for (const c of groups) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(-c.pid, 'SIGTERM');
  stopChildren();
  await redis?.stop();
  scratch.cleanup();
});

describe('docker-compose.yml run as processes', { timeout: 120_000 }, () => {
  it("the image's HEALTHCHECK fails before the broker listens and passes once `serve` with the shipped compose config is ready", async () => {
    const port = await freePort();
    expect(healthcheck(port)).not.toBe(0);

    // The broker: the image's command (serve) with the compose environment; the mounted config
    // with its container paths mapped to the scratch dir.
    const b = service('broker');
    const env = Object.fromEntries(Object.entries(serviceEnv(b)).map(([k, v]) => [k, toHost(v)]));
    const configMount = mount(b.volumes!.find((v) => v.endsWith(`:${env.JIT_CONFIG}:ro`))!);
    env.JIT_CONFIG = scratch.write('broker.yaml', toPath(readFileSync(configMount.source, 'utf8')));
    env.PORT = String(port);
    broker = await spawnCli(['serve'], { label: 'compose-broker', env });
    brokerUrl = `http://127.0.0.1:${port}`;
    hosts.set('broker:8080', `127.0.0.1:${port}`);

    await until('the HEALTHCHECK passes', () => healthcheck(port) === 0);
    const ready = await fetch(`${brokerUrl}/readyz`);
    expect(ready.status, broker.output()).toBe(200);
  });

  it('works out of the box: a demo token from the demo issuer gets a task token; the documented demo credentials introspect and list grants', async () => {
    const platform = await (await fetch(`${issuerUrl}/token?namespace=demo&service_account=report-builder`)).text();
    const start = await fetch(`${brokerUrl}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        attestation: { kind: 'oidc', token: platform },
        intent: { audience: 'reports-api', actions: ['read'], resources: ['reports://demo/2026-q4'], purpose: 'build the quarterly report' },
        ttl: '5m',
      }),
    });
    const body = (await start.json()) as { access_token: string; grant: string; error_description?: string };
    expect(start.status, body.error_description).toBe(201);

    const rsCredential = documented('demo resource server');
    expect(rsCredential).toBe(serviceEnv(service('reports-api')).JIT_RS_CREDENTIAL);
    const introspect = await fetch(`${brokerUrl}/oauth2/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${rsCredential}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: body.access_token }),
    });
    expect(await introspect.json()).toMatchObject({ active: true, sub: 'k8s://demo/ns/demo/sa/report-builder', iss: 'http://localhost:8080' });

    const operator = documented('demo operator');
    expect(operator).toBeDefined();
    const grants = await fetch(`${brokerUrl}/v1/grants/${body.grant}`, { headers: { authorization: `Bearer ${operator}` } });
    expect(grants.status).toBe(200);
    // and the operator CLI as docs/compose.md runs it (plain HTTP to loopback)
    const ls = await cli(['grants', 'ls'], { JIT_URL: brokerUrl, JIT_OPERATOR_CREDENTIAL: operator });
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toContain(body.grant);
  });

  it('the "examples" profile: reports-api and report-builder, with their compose commands and environment, run a task end to end', async () => {
    const rsService = service('reports-api');
    expect(rsService.profiles).toEqual(['examples']);
    const rsEnv = { ...Object.fromEntries(Object.entries(serviceEnv(rsService)).map(([k, v]) => [k, toHost(v)])), HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn' };
    const rs = shell(rsService.command!, rsEnv);
    await until('reports-api listening', () => /listening on http:\/\/127\.0\.0\.1:\d+/.test(rs.output()) || rs.child.exitCode !== null);
    const rsUrl = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(rs.output())?.[1];
    expect(rsUrl, rs.output()).toBeDefined();
    hosts.set(`reports-api:${serviceEnv(rsService).PORT}`, rsUrl!.slice('http://'.length));
    // its compose healthcheck passes (what report-builder waits for)
    expect(serviceHealthcheck('reports-api', serviceEnv(rsService).PORT!, Number(new URL(rsUrl!).port))).toBe(0);

    const wService = service('report-builder');
    expect(wService.depends_on).toEqual({ 'reports-api': { condition: 'service_healthy' } });
    const workload = shell(wService.command!, Object.fromEntries(Object.entries(serviceEnv(wService)).map(([k, v]) => [k, toHost(v)])));
    const code = await workload.exited;
    const out = workload.output();
    expect(code, out).toBe(0);
    const answer = /reports-api answered 200: (.*)/.exec(out)?.[1];
    expect(answer, out).toBeDefined();
    expect(JSON.parse(answer!)).toMatchObject({ report: '2026-q4', for: 'k8s://demo/ns/demo/sa/report-builder' });
    expect(out).toMatch(/after the end, reports-api answered 401/);
  });

  it('the HEALTHCHECK fails again when Redis goes away (the broker is not ready without its store)', async () => {
    const port = Number(new URL(brokerUrl).port);
    expect(healthcheck(port)).toBe(0);
    await redis!.stop();
    await until('the HEALTHCHECK fails', () => healthcheck(port) !== 0);
    expect((await fetch(`${brokerUrl}/readyz`)).status).toBe(503);
    expect(await broker.stop()).toBe(0);
    expect(await issuerChild.stop()).toBe(0);
  });
});
