/**
 * Static checks of deploy/kubernetes/ (no cluster runs here): the base, each overlay and the
 * example workload are rendered by one fixed renderer, kubectl 1.35.2's built-in kustomize
 * (.ci/run installs it as `kubectl-1.35.2`), and every object is checked: the pods' security
 * context, probes, resources and replicas, that selectors select what they are meant to, that the
 * broker's config loads with the broker's own loader and warns about nothing, and that the example
 * workload's projected token and intent are what that config accepts and allows.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { mapClaims } from '../../src/attestation/oidc/mappings.js';
import { applyEnv, parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { configWarnings } from '../../src/config/warnings.js';
import { Policy } from '../../src/policy/evaluate.js';
import { intentSchema } from '../../src/protocol/intent.js';
import {
  find,
  KUBECTL,
  render,
  ROOT,
  type Container,
  type K8sObject,
  type LabelSelector,
  type Labels,
  type NetworkPolicy,
  type Workload,
} from '../helpers/kubernetes.js';
import { freePort } from '../helpers/redis.js';

const TARGETS = ['base', 'overlays/in-cluster-redis', 'overlays/external-redis', 'example-workload'] as const;
/** Every label the broker's pods must carry for the Service, PDB and NetworkPolicies to find them. */
const BROKER = 'jit-broker';
const PKG_VERSION = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;

const rendered = new Map(TARGETS.map((t) => [t, render(t)] as const));
const objectsOf = (target: (typeof TARGETS)[number]) => rendered.get(target)!;
const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);
const workloadsOf = (objects: K8sObject[]) => objects.filter((o) => WORKLOAD_KINDS.has(o.kind)) as Workload[];
const brokerDeployment = (objects: K8sObject[]) => find<Workload>(objects, 'Deployment', BROKER);
const brokerContainer = (objects: K8sObject[]) => brokerDeployment(objects).spec.template.spec.containers.find((c) => c.name === 'broker')!;

/** Whether a label selector selects these labels (matchLabels and the In/NotIn/Exists/DoesNotExist expressions). */
function selects(selector: LabelSelector, labels: Labels): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const ok =
      e.operator === 'In' ? has && e.values!.includes(labels[e.key]!)
      : e.operator === 'NotIn' ? !has || !e.values!.includes(labels[e.key]!)
      : e.operator === 'Exists' ? has
      : e.operator === 'DoesNotExist' ? !has
      : false;
    if (!ok) return false;
  }
  return true;
}

/** The env a container's Secret references would give it: a test value for each; optional ones as `optional` says. */
function containerEnv(c: Container, secretValues: Record<string, string>, withOptional: boolean): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.secretKeyRef;
    if (!ref) continue;
    if (ref.optional && !withOptional) continue;
    const v = secretValues[`${ref.name}/${ref.key}`];
    expect(v, `a test value for Secret ${ref.name} key ${ref.key}`).toBeDefined();
    env[e.name] = v!;
  }
  return env;
}

/** Test values for every Secret key the manifests reference (docs/kubernetes.md tells how to create each). */
const SECRET_VALUES: Record<string, string> = {
  'jit-broker-redis/url': 'rediss://jit-broker:0123456789abcdef@redis.example.internal:6380',
  'jit-broker-redis/password': '0123456789abcdef',
  'jit-broker-keys/publication-secret': 'p'.repeat(64),
  'jit-broker-clients/resource-servers': JSON.stringify([{ name: 'reports-api', audiences: ['reports-api'], credential_sha256: 'a'.repeat(64) }]),
  'jit-broker-clients/operators': JSON.stringify([{ name: 'alice', role: 'admin', credential_sha256: 'b'.repeat(64) }]),
};

/** The broker's config as its pods load it: the ConfigMap's file at JIT_CONFIG, with the env the Deployment gives. */
function brokerConfig(objects: K8sObject[], withOptional = true): { config: Config; raw: Record<string, unknown> } {
  const c = brokerContainer(objects);
  const pod = brokerDeployment(objects).spec.template.spec;
  const env = containerEnv(c, SECRET_VALUES, withOptional);
  const path = env.JIT_CONFIG!;
  expect(path, 'JIT_CONFIG').toBeDefined();
  const mount = c.volumeMounts!.find((m) => path.startsWith(`${m.mountPath}/`))!;
  expect(mount, `a volume mounted over ${path}`).toBeDefined();
  const volume = pod.volumes!.find((v) => v.name === mount.name)!;
  const cm = find(objects, 'ConfigMap', volume.configMap!.name);
  const text = cm.data![path.slice(mount.mountPath.length + 1)];
  expect(text, `${cm.metadata.name} holds ${path}`).toBeDefined();
  const raw = parseYaml(text!) as Record<string, unknown>;
  return { config: parseConfig(applyEnv(raw, env)), raw };
}

describe('the renderer', () => {
  it(`is kubectl v1.35.2 (kustomize v5.7), installed by .ci/run as ${KUBECTL}`, () => {
    const run = spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8' });
    expect(run.error, `${KUBECTL}: .ci/run installs it`).toBeUndefined();
    expect(run.stdout).toContain('Client Version: v1.35.2');
    expect(run.stdout).toMatch(/Kustomize Version: v5\.7\./);
  });
});

describe.each(TARGETS)('deploy/kubernetes/%s', (target) => {
  const objects = objectsOf(target);

  it('holds no Secret (the manifests reference Secrets, and never carry their values)', () => {
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
    expect(objects.length).toBeGreaterThan(0);
  });

  it('runs every pod and container non-root with no privilege, a read-only root filesystem, RuntimeDefault seccomp and resources', () => {
    const workloads = workloadsOf(objects);
    expect(workloads.length).toBeGreaterThan(0);
    for (const w of workloads) {
      const where = `${w.kind}/${w.metadata.name}`;
      const pod = w.spec.template.spec;
      expect(pod.automountServiceAccountToken, `${where}: automountServiceAccountToken`).toBe(false);
      const psc = pod.securityContext!;
      expect(psc, `${where}: pod securityContext`).toBeDefined();
      expect(psc.runAsNonRoot, where).toBe(true);
      expect(Number.isInteger(psc.runAsUser) && psc.runAsUser! > 0, `${where}: numeric non-root runAsUser`).toBe(true);
      expect(psc.seccompProfile, where).toEqual({ type: 'RuntimeDefault' });
      for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
        const at = `${where} container ${c.name}`;
        const sc = c.securityContext!;
        expect(sc, `${at}: securityContext`).toBeDefined();
        expect(sc.runAsNonRoot, at).toBe(true);
        expect(sc.runAsUser, `${at}: the pod's numeric uid`).toBe(psc.runAsUser);
        expect(sc.allowPrivilegeEscalation, at).toBe(false);
        expect(sc.readOnlyRootFilesystem, at).toBe(true);
        expect(sc.privileged ?? false, at).toBe(false);
        expect(sc.capabilities, at).toEqual({ drop: ['ALL'] });
        expect(sc.seccompProfile, at).toEqual({ type: 'RuntimeDefault' });
        for (const kind of ['requests', 'limits'] as const) {
          expect(c.resources?.[kind]?.cpu, `${at}: resources.${kind}.cpu`).toBeTruthy();
          expect(c.resources?.[kind]?.memory, `${at}: resources.${kind}.memory`).toBeTruthy();
        }
        // The broker's image runs as its `node` user (deploy/Dockerfile: USER node, uid 1000).
        if (c.image.startsWith('jit-broker:')) {
          expect(c.image, `${at}: the image of this version`).toBe(`jit-broker:${PKG_VERSION}`);
          expect(sc.runAsUser, `${at}: the image's node user`).toBe(1000);
        }
        expect(c.image, `${at}: a tagged image`).toMatch(/:[\w.-]+$/);
      }
    }
  });

  it('gives no service account a Kubernetes API token', () => {
    for (const sa of objects.filter((o) => o.kind === 'ServiceAccount')) expect(sa.automountServiceAccountToken, sa.metadata.name).toBe(false);
    for (const w of workloadsOf(objects)) {
      const name = w.spec.template.spec.serviceAccountName;
      if (name) find(objects, 'ServiceAccount', name);
    }
  });

  it('selects with every workload selector, Service, PodDisruptionBudget and NetworkPolicy the pods it is meant for', () => {
    const pods = workloadsOf(objects).map((w) => ({ w, labels: w.spec.template.metadata.labels }));
    for (const { w, labels } of pods) expect(selects(w.spec.selector, labels), `${w.kind}/${w.metadata.name} selects its own pods`).toBe(true);
    const selecting = (selector: LabelSelector) => pods.filter((p) => selects(selector, p.labels)).map((p) => p.w.metadata.name);
    for (const svc of objects.filter((o) => o.kind === 'Service')) {
      const spec = svc.spec as { selector: Labels; ports: { targetPort: string | number }[] };
      const [name, ...more] = selecting({ matchLabels: spec.selector });
      expect([name, ...more], `Service ${svc.metadata.name} selects exactly its own workload`).toEqual([svc.metadata.name]);
      const containers = pods.find((p) => p.w.metadata.name === name)!.w.spec.template.spec.containers;
      for (const p of spec.ports) expect(containers.some((c) => c.ports?.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort)), `Service ${svc.metadata.name} port ${p.targetPort}`).toBe(true);
    }
    for (const pdb of objects.filter((o) => o.kind === 'PodDisruptionBudget'))
      expect(selecting((pdb.spec as { selector: LabelSelector }).selector), `PodDisruptionBudget ${pdb.metadata.name}`).toEqual([pdb.metadata.name]);
    for (const np of objects.filter((o) => o.kind === 'NetworkPolicy') as NetworkPolicy[]) {
      expect(selecting(np.spec.podSelector), `NetworkPolicy ${np.metadata.name}`).toEqual([np.metadata.name]);
      expect(np.spec.policyTypes.sort(), `NetworkPolicy ${np.metadata.name} governs both directions`).toEqual(['Egress', 'Ingress']);
    }
  });

  it('mounts only ConfigMaps it renders, or those Kubernetes or docs/kubernetes.md provide', () => {
    const external = new Set(['kube-root-ca.crt', 'jit-broker-ca']);
    for (const w of workloadsOf(objects)) {
      for (const v of w.spec.template.spec.volumes ?? []) {
        if (v.configMap && !external.has(v.configMap.name)) find(objects, 'ConfigMap', v.configMap.name);
      }
    }
  });
});

describe('the broker', () => {
  const withBroker = TARGETS.filter((t) => t !== 'example-workload');

  it.each(withBroker)('%s: 3 replicas spread over hosts and zones, probes on /healthz and /readyz at the port the config listens on', (target) => {
    const objects = objectsOf(target);
    const d = brokerDeployment(objects);
    const pod = d.spec.template.spec;
    const c = brokerContainer(objects);
    const { config } = brokerConfig(objects);
    expect(d.spec.replicas).toBe(3);
    const port = c.ports!.find((p) => p.name === 'https')!;
    expect(port.containerPort).toBe(config.listen.port);
    const scheme = config.tls?.cert ? 'HTTPS' : 'HTTP';
    expect(c.livenessProbe!.httpGet).toEqual({ path: '/healthz', port: 'https', scheme });
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'https', scheme });
    const spread = pod.topologySpreadConstraints!;
    expect(spread.map((s) => s.topologyKey).sort()).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
    for (const s of spread) expect(selects(s.labelSelector, d.spec.template.metadata.labels), s.topologyKey).toBe(true);
    // Zones are spread where nodes carry the label; a node without it must not leave pods pending.
    expect(spread.find((s) => s.topologyKey === 'topology.kubernetes.io/zone')!.whenUnsatisfiable).toBe('ScheduleAnyway');
    expect(find(objects, 'PodDisruptionBudget', BROKER).spec).toMatchObject({ maxUnavailable: 1 });
  });

  it.each(withBroker)('%s: its config loads with the broker\'s own loader, with and without the optional Secrets, and warns about nothing', (target) => {
    const objects = objectsOf(target);
    for (const withOptional of [true, false]) {
      const { config } = brokerConfig(objects, withOptional);
      expect(configWarnings(config)).toEqual([]);
      expect(config.store).toMatchObject({ kind: 'redis', url: SECRET_VALUES['jit-broker-redis/url'] });
      expect(config.tokens.key_publication_secret).toBe(SECRET_VALUES['jit-broker-keys/publication-secret']);
      expect(config.resource_servers.map((r) => r.name)).toEqual(withOptional ? ['reports-api'] : []);
      expect(config.operators.map((o) => o.name)).toEqual(withOptional ? ['alice'] : []);
    }
  });

  it('reads its files from the volumes it mounts: config, serving certificate, the cluster CA', () => {
    const objects = objectsOf('base');
    const c = brokerContainer(objects);
    const pod = brokerDeployment(objects).spec.template.spec;
    const { config } = brokerConfig(objects);
    const env = containerEnv(c, SECRET_VALUES, true);
    const volumeAt = (path: string) => {
      const m = c.volumeMounts!.find((v) => path.startsWith(`${v.mountPath}/`));
      expect(m, `a volume mounted over ${path}`).toBeDefined();
      return pod.volumes!.find((v) => v.name === m!.name)!;
    };
    expect(volumeAt(config.tls!.cert!).secret!.secretName).toBe('jit-broker-tls');
    expect(volumeAt(config.tls!.key!).secret!.secretName).toBe('jit-broker-tls');
    expect(volumeAt(env.NODE_EXTRA_CA_CERTS!).configMap!.name).toBe('kube-root-ca.crt');
    for (const m of c.volumeMounts!) expect(m.readOnly, m.mountPath).toBe(true);
  });

  it('is its own issuer at the Service\'s name, and attests the cluster\'s service-account tokens', () => {
    const objects = objectsOf('base');
    const { config } = brokerConfig(objects);
    const svc = find(objects, 'Service', BROKER);
    const url = new URL(config.issuer);
    expect(url.host).toBe(`${svc.metadata.name}.${svc.metadata.namespace}.svc`);
    expect((svc.spec as { ports: { port: number }[] }).ports.map((p) => p.port)).toEqual([443]);
    const issuers = config.attestation.oidc!.issuers;
    expect(issuers.map((i) => i.issuer)).toEqual(['https://kubernetes.default.svc.cluster.local']);
    expect(issuers[0]!.audiences).toEqual(['jit-broker']);
    // The broker has no API token: the issuer's keys are readable by unauthenticated callers.
    const binding = find(objects, 'ClusterRoleBinding', 'jit-broker-service-account-issuer-discovery') as K8sObject & { roleRef: { name: string }; subjects: { kind: string; name: string }[] };
    expect(binding.roleRef.name).toBe('system:service-account-issuer-discovery');
    expect(binding.subjects).toEqual([expect.objectContaining({ kind: 'Group', name: 'system:unauthenticated' })]);
  });

  it('NetworkPolicy: admits its namespace and namespaces labelled jit-broker-client=true on the broker port; lets out DNS, the issuers and Redis', () => {
    const objects = objectsOf('base');
    const np = find<NetworkPolicy>(objects, 'NetworkPolicy', BROKER);
    expect(np.spec.ingress).toEqual([
      { from: [{ podSelector: {} }, { namespaceSelector: { matchLabels: { 'jit-broker-client': 'true' } } }], ports: [{ port: 'https', protocol: 'TCP' }] },
    ]);
    const egress = np.spec.egress!;
    const dns = egress.find((r) => r.ports?.some((p) => p.port === 53))!;
    expect(dns.ports!.map((p) => p.protocol).sort()).toEqual(['TCP', 'UDP']);
    expect(egress.find((r) => r.ports?.some((p) => p.port === 6443))).toBeDefined();
    expect(egress.find((r) => r.ports?.some((p) => p.port === 6379))).toBeDefined();
  });
});

describe('Redis', () => {
  it('in-cluster-redis: one Redis with AOF on a volume, the shipped ACL file and the broker\'s password; reachable from the broker only', () => {
    const objects = objectsOf('overlays/in-cluster-redis');
    const redis = find<Workload>(objects, 'StatefulSet', 'jit-redis');
    const c = redis.spec.template.spec.containers[0]!;
    const script = c.command!.join(' ');
    expect(script).toContain('--appendonly yes');
    expect(script).toContain('--dir /data');
    expect(script).toMatch(/--aclfile \/run\/redis\/users\.acl/);
    expect(script).toContain('@JIT_BROKER_PASSWORD_SHA256@');
    expect(c.volumeMounts!.find((m) => m.mountPath === '/data')!.name).toBe('data');
    expect((redis.spec as unknown as { volumeClaimTemplates: { metadata: { name: string } }[] }).volumeClaimTemplates[0]!.metadata.name).toBe('data');
    expect(c.env).toEqual([{ name: 'JIT_REDIS_PASSWORD', valueFrom: { secretKeyRef: { name: 'jit-broker-redis', key: 'password' } } }]);
    // The ACL is deploy/redis/users.acl, byte for byte (kustomize reads no file outside its folder).
    const acl = find(objects, 'ConfigMap', redis.spec.template.spec.volumes!.find((v) => v.name === 'acl')!.configMap!.name);
    expect(acl.data!['users.acl']).toBe(readFileSync('deploy/redis/users.acl', 'utf8'));
    expect(readFileSync(`${ROOT}/components/in-cluster-redis/users.acl`, 'utf8')).toBe(readFileSync('deploy/redis/users.acl', 'utf8'));
    // Only the broker reaches it, and the broker's egress rule selects it.
    const np = find<NetworkPolicy>(objects, 'NetworkPolicy', 'jit-redis');
    const brokerLabels = brokerDeployment(objects).spec.template.metadata.labels;
    expect(np.spec.ingress!.length).toBe(1);
    expect(np.spec.ingress![0]!.from!.length).toBe(1);
    expect(selects(np.spec.ingress![0]!.from![0]!.podSelector!, brokerLabels)).toBe(true);
    expect(np.spec.egress).toEqual([]);
    const toRedis = find<NetworkPolicy>(objects, 'NetworkPolicy', BROKER).spec.egress!.find((r) => r.ports?.some((p) => p.port === 6379))!;
    expect(selects(toRedis.to![0]!.podSelector!, redis.spec.template.metadata.labels)).toBe(true);
  });

  it('external-redis: no Redis in the cluster; the broker may reach the Redis ports at any address', () => {
    const objects = objectsOf('overlays/external-redis');
    expect(workloadsOf(objects).map((w) => w.metadata.name)).toEqual([BROKER]);
    const egress = find<NetworkPolicy>(objects, 'NetworkPolicy', BROKER).spec.egress!;
    const toRedis = egress.filter((r) => r.ports?.some((p) => p.port === 6379 || p.port === 6380));
    expect(toRedis).toEqual([{ ports: [{ port: 6379, protocol: 'TCP' }, { port: 6380, protocol: 'TCP' }] }]);
  });
});

/** Kubernetes' expansion of a container's command: `$(NAME)` is the env var's value (left as is when undefined), `$$` a literal `$`. */
function expandCommand(arg: string, env: Record<string, string>): string {
  return arg.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => (name === undefined ? '$' : (env[name] ?? m)));
}

describe('the in-cluster Redis container\'s command, run on a real redis-server', () => {
  const objects = objectsOf('overlays/in-cluster-redis');
  const redis = find<Workload>(objects, 'StatefulSet', 'jit-redis');
  const c = redis.spec.template.spec.containers[0]!;
  const aclText = find(objects, 'ConfigMap', redis.spec.template.spec.volumes!.find((v) => v.name === 'acl')!.configMap!.name).data!['users.acl']!;
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let client: Redis | undefined;

  afterEach(async () => {
    client?.disconnect();
    client = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    }
    child = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /**
   * Runs the container's command as the kubelet would, with its mounts at private directories and
   * a loopback port: the ConfigMap's ACL file at its mount, an empty /run/redis and /data.
   */
  async function start(password: string): Promise<{ port: number; exit: Promise<number | null> }> {
    dir = mkdtempSync(join(tmpdir(), 'jit-k8s-redis-'));
    const mounts = Object.fromEntries(c.volumeMounts!.map((m) => [m.name, m.mountPath]));
    for (const name of ['acl', 'run', 'data']) mkdirSync(join(dir, name));
    writeFileSync(join(dir, 'acl', 'users.acl'), aclText);
    const port = await freePort();
    const env = { JIT_REDIS_PASSWORD: password };
    const [shell, ...args] = c.command!.map((a) => expandCommand(a, env));
    const script = args
      .pop()!
      .replaceAll(mounts.acl!, join(dir, 'acl'))
      .replaceAll(mounts.run!, join(dir, 'run'))
      .replaceAll(`--dir ${mounts.data!}`, `--dir ${join(dir, 'data')}`)
      .replace('--port 6379', `--port ${port} --bind 127.0.0.1`);
    expect(script).toContain(`--port ${port} --bind 127.0.0.1`);
    child = spawn(shell!, [...args, script], { env: { PATH: process.env.PATH, ...env }, stdio: 'ignore' });
    const exit = once(child, 'exit').then(([code]) => code as number | null);
    return { port, exit };
  }

  /** Connects as the broker's user, waiting for the server to come up (or to exit). */
  async function connect(port: number, password: string, exit: Promise<number | null>): Promise<Redis> {
    for (;;) {
      const r = new Redis({ host: '127.0.0.1', port, username: 'jit-broker', password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => undefined);
      const up = await Promise.race([r.connect().then(() => true, () => false), exit.then(() => 'exited' as const)]);
      if (up === true) return r;
      r.disconnect();
      if (up === 'exited') throw new Error('redis-server exited');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('starts Redis with the ACL file under the password given, appends to the AOF, and the probe answers', async () => {
    const password = 'f'.repeat(64);
    const { port, exit } = await start(password);
    client = await connect(port, password, exit);
    expect(await client.set('jit:k8s-test', 'v')).toBe('OK');
    expect(await client.get('jit:k8s-test')).toBe('v');
    // The broker's user is limited to its keys; the default user is off.
    await expect(client.get('other:key')).rejects.toThrow(/NOPERM/);
    const anonymous = spawnSync('redis-cli', ['-p', String(port), 'get', 'jit:k8s-test'], { encoding: 'utf8' });
    expect(anonymous.stdout + anonymous.stderr).toMatch(/NOAUTH/);
    expect(existsSync(join(dir!, 'data', 'appendonlydir'))).toBe(true);
    // The readiness and liveness probes, as the kubelet runs them in the container (its env).
    for (const probe of [c.readinessProbe!, c.livenessProbe!]) {
      const [sh, flag, cmd] = probe.exec!.command;
      const local = cmd!.replace('redis-cli ', `redis-cli -p ${port} `);
      expect(spawnSync(sh!, [flag!, local], { env: { PATH: process.env.PATH, JIT_REDIS_PASSWORD: password } }).status).toBe(0);
      expect(spawnSync(sh!, [flag!, local], { env: { PATH: process.env.PATH, JIT_REDIS_PASSWORD: 'wrong' } }).status).not.toBe(0);
    }
  });

  it('refuses to start without a password (fails closed: no user with the empty password)', async () => {
    const { port, exit } = await start('');
    const outcome = await Promise.race([
      exit.then((code) => ({ exitCode: code })),
      connect(port, '', exit).then(
        (r) => {
          client = r;
          return { connected: 'as jit-broker with the empty password' };
        },
        () => ({ exitCode: 'exited' }),
      ),
    ]);
    expect(outcome).not.toHaveProperty('connected');
    expect(outcome).not.toEqual({ exitCode: 0 });
  });
});

describe('the example workload', () => {
  const objects = objectsOf('example-workload');
  const d = find<Workload>(objects, 'Deployment', 'report-builder');
  const pod = d.spec.template.spec;
  const c = pod.containers[0]!;
  const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value!]));
  const { config } = brokerConfig(objectsOf('base'));

  it('gets a projected service-account token with the audience and a lifetime the broker accepts, at the path it reads', () => {
    const tokens = pod.volumes!.flatMap((v) => (v.projected?.sources ?? []).filter((s) => s.serviceAccountToken).map((s) => ({ v, t: s.serviceAccountToken! })));
    expect(tokens.length).toBe(1);
    const { v, t } = tokens[0]!;
    const issuer = config.attestation.oidc!.issuers[0]!;
    expect(issuer.audiences).toContain(t.audience);
    expect(t.audience).toBe('jit-broker');
    // Kubernetes' minimum is 10 minutes; the broker refuses tokens valid for longer than its cap.
    expect(t.expirationSeconds).toBeGreaterThanOrEqual(600);
    expect(t.expirationSeconds! * 1000).toBeLessThanOrEqual(issuer.max_token_lifetime);
    const mount = c.volumeMounts!.find((m) => m.name === v.name)!;
    expect(`${mount.mountPath}/${t.path}`).toBe(env.JIT_TOKEN_FILE);
  });

  it('calls the broker at its issuer URL, trusting the CA it mounts, from a namespace the broker\'s NetworkPolicy admits', () => {
    expect(env.JIT_URL).toBe(config.issuer);
    const ca = c.volumeMounts!.find((m) => env.JIT_CA!.startsWith(`${m.mountPath}/`))!;
    expect(pod.volumes!.find((v) => v.name === ca.name)!.configMap!.name).toBe('jit-broker-ca');
    const ns = find(objects, 'Namespace', d.metadata.namespace!);
    const admitted = find<NetworkPolicy>(objectsOf('base'), 'NetworkPolicy', BROKER).spec.ingress!.some((r) =>
      r.from!.some((peer) => peer.namespaceSelector && !peer.podSelector && selects(peer.namespaceSelector, ns.metadata.labels ?? {})),
    );
    expect(admitted).toBe(true);
    expect(ns.metadata.labels).toMatchObject({ 'pod-security.kubernetes.io/enforce': 'restricted' });
  });

  it('asks for an intent the broker\'s policy allows to its service account', () => {
    const issuer = config.attestation.oidc!.issuers[0]!;
    const ns = d.metadata.namespace!;
    const sa = pod.serviceAccountName!;
    const claims = { sub: `system:serviceaccount:${ns}:${sa}`, 'kubernetes.io': { namespace: ns, serviceaccount: { name: sa } } };
    const { id, attributes } = mapClaims(claims, issuer.mapping, issuer.issuer);
    const intent = intentSchema.parse(JSON.parse(env.TASK_INTENT!));
    const decision = new Policy(config.policies).evaluate({ id, kind: 'oidc', issuer: issuer.issuer, attributes, evidenceExpiresAt: Date.now() + 3_600_000 }, intent);
    expect(decision).toMatchObject({ allowed: true, rule: 'example-report-builder' });
    const script = find(objects, 'ConfigMap', pod.volumes!.find((v) => v.name === 'task')!.configMap!.name).data!['task.mjs']!;
    expect(c.command).toEqual(['node', `${c.volumeMounts!.find((m) => m.name === 'task')!.mountPath}/task.mjs`]);
    for (const name of ['JIT_URL', 'JIT_CA', 'JIT_TOKEN_FILE', 'TASK_INTENT']) expect(script).toContain(`env('${name}')`);
  });
});

describe('docs/kubernetes.md', () => {
  const doc = () => readFileSync('docs/kubernetes.md', 'utf8');

  it('tells how to create every Secret and key the manifests reference, and the example workload\'s CA ConfigMap', () => {
    const refs = new Set<string>();
    for (const objects of rendered.values())
      for (const w of workloadsOf(objects))
        for (const c of w.spec.template.spec.containers) for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) refs.add(`${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}`);
    refs.add('jit-broker-tls/tls.crt');
    expect([...refs].sort()).toEqual([...Object.keys(SECRET_VALUES), 'jit-broker-tls/tls.crt'].sort());
    for (const ref of refs) {
      const [name, key] = ref.split('/') as [string, string];
      expect(doc(), ref).toContain(name);
      expect(doc(), ref).toContain(key);
    }
    expect(doc()).toContain('jit-broker-ca');
  });

  it('names every kustomization it documents as `kubectl apply -k` targets', () => {
    for (const target of ['overlays/in-cluster-redis', 'overlays/external-redis', 'example-workload']) expect(doc()).toContain(`kubectl apply -k ${ROOT}/${target}`);
  });
});
