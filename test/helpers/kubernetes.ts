/**
 * deploy/kubernetes/ rendered by the one renderer the tests use: kubectl 1.35.2's built-in
 * kustomize (v5.7), which .ci/run installs as `kubectl-1.35.2`. No other is tried; a missing one
 * fails the test that renders.
 */
import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { parseAllDocuments } from 'yaml';

/** The renderer: kubectl 1.35.2 (kustomize v5.7), from .ci/run. No other is tried. */
export const KUBECTL = 'kubectl-1.35.2';
export const ROOT = 'deploy/kubernetes';

// The shapes read here: only the fields the checks look at.
export type Labels = Record<string, string>;
export interface LabelSelector {
  matchLabels?: Labels;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}
export interface Probe {
  httpGet?: { path: string; port: string | number; scheme?: string };
  exec?: { command: string[] };
}
export interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  privileged?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
  seccompProfile?: { type: string };
}
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean }; configMapKeyRef?: unknown; fieldRef?: unknown };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { cpu?: string; memory?: string } };
  securityContext?: SecurityContext;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
export interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string };
  emptyDir?: unknown;
  projected?: { sources: { serviceAccountToken?: { audience?: string; expirationSeconds?: number; path: string }; configMap?: unknown }[] };
}
export interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: SecurityContext & { fsGroup?: number };
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  topologySpreadConstraints?: { topologyKey: string; whenUnsatisfiable: string; labelSelector: LabelSelector }[];
}
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  automountServiceAccountToken?: boolean;
}
export type Workload = K8sObject & { spec: { replicas?: number; selector: LabelSelector; template: { metadata: { labels: Labels }; spec: PodSpec } } };
export type NetworkPolicyPeer = { podSelector?: LabelSelector; namespaceSelector?: LabelSelector; ipBlock?: unknown };
export type NetworkPolicyRule = { to?: NetworkPolicyPeer[]; from?: NetworkPolicyPeer[]; ports?: { port: string | number; protocol: string }[] };
export type NetworkPolicy = K8sObject & { spec: { podSelector: LabelSelector; policyTypes: string[]; ingress?: NetworkPolicyRule[]; egress?: NetworkPolicyRule[] } };

/** `kubectl-1.35.2 kustomize DIR`: the objects it prints. Missing renderer: the test fails, naming the install. */
export function render(target: string): K8sObject[] {
  const run = spawnSync(KUBECTL, ['kustomize', `${ROOT}/${target}`], { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (run.error) throw new Error(`${KUBECTL} cannot run (${run.error.message}): .ci/run installs it (kubectl 1.35.2, whose kustomize renders deploy/kubernetes/)`);
  if (run.status !== 0) throw new Error(`${KUBECTL} kustomize ${target} failed: ${run.stderr}`);
  const docs = parseAllDocuments(run.stdout);
  return docs.map((d) => {
    if (d.errors.length > 0) throw new Error(`${target}: unparsable output: ${d.errors[0]!.message}`);
    return d.toJS() as K8sObject;
  });
}

/** The object of this kind and name (the test fails when there is none). */
export const find = <T extends K8sObject = K8sObject>(objects: K8sObject[], kind: string, name: string) => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  expect(found, `${kind}/${name}`).toBeDefined();
  return found as T;
};
