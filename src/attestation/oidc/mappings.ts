/**
 * How verified platform-token claims become a `Workload` id and attributes: the Kubernetes and
 * GitHub Actions presets, and templates (parsed and checked at config load).
 */
import type { JWTPayload } from 'jose';
import { z } from 'zod';
import { AttestationFailed } from '../../errors.js';
import { isWellFormed, NOT_WELL_FORMED } from '../../protocol/unicode.js';

/** Attribute values longer than this make the token unacceptable (never silently truncated). */
export const MAX_ATTRIBUTE_LENGTH = 512;
const MAX_WORKLOAD_ID_LENGTH = 2048;

/** A claim name, or a dotted path into nested claims (`kubernetes.io.namespace`). */
const claimPath = z
  .string()
  .regex(/^[A-Za-z0-9_:$-]+(\.[A-Za-z0-9_:$-]+)*$/, 'must be a claim name or dotted claim path');

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const GITHUB_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** A literal piece of a template, or a placeholder naming a claim path (or the issuer: `iss_host`, `iss_path`). */
type TemplatePart = { literal: string } | { claim: string };

function parseTemplate(template: string): { parts: TemplatePart[] } | { error: string } {
  const parts: TemplatePart[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(template); m; m = re.exec(template)) {
    const literal = template.slice(last, m.index);
    if (/[{}]/.test(literal)) return { error: 'has an unbalanced "{" or "}"' };
    if (literal) parts.push({ literal });
    const name = m[1] ?? '';
    if (!claimPath.safeParse(name).success) return { error: `placeholder "{${name}}" must name a claim or dotted claim path` };
    parts.push({ claim: name });
    last = m.index + m[0].length;
  }
  const tail = template.slice(last);
  if (/[{}]/.test(tail)) return { error: 'has an unbalanced "{" or "}"' };
  if (tail) parts.push({ literal: tail });
  const first = parts[0];
  if (!first || !('literal' in first) || !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(first.literal))
    return { error: 'must start with a URI scheme, e.g. "ci://{iss_host}/{sub}"' };
  return { parts };
}

/**
 * How verified claims become `Workload.id`. Template placeholders name claims (dotted paths allowed;
 * a key containing dots such as `kubernetes.io` wins over nesting) and are percent-encoded;
 * `{iss_host}` and `{iss_path}` name the configured issuer (see issuerPlaceholders). `spiffe://`
 * is reserved for X.509-SVIDs: no template may produce it.
 */
export type OidcMapping =
  | { type: 'kubernetes'; cluster: string }
  | { type: 'github' }
  | { type: 'template'; template: string; parts: TemplatePart[]; attributes: string[] };

export const mappingSchema = z
  .object({
    preset: z.enum(['kubernetes', 'github']).optional(),
    cluster: z.string().max(253).regex(DNS_SUBDOMAIN, 'must be a lowercase DNS name (e.g. "prod" or "eu-1.prod")').optional(),
    template: z.string().min(1).max(1024).optional(),
    attributes: z.array(claimPath).max(32).optional(),
  })
  .strict()
  .transform((m, ctx): OidcMapping => {
    const fail = (message: string, path: string[] = []) => {
      ctx.addIssue({ code: 'custom', message, path });
      return z.NEVER;
    };
    if (m.preset !== undefined && m.template !== undefined) return fail('set either preset or template, not both');
    if (m.preset === 'kubernetes') {
      if (m.attributes !== undefined) return fail('attributes is only for template mappings', ['attributes']);
      if (m.cluster === undefined) return fail('preset kubernetes requires cluster (the name in k8s://<cluster>/ns/NS/sa/SA)', ['cluster']);
      return { type: 'kubernetes', cluster: m.cluster };
    }
    if (m.cluster !== undefined) return fail('cluster is only for preset kubernetes', ['cluster']);
    if (m.preset === 'github') {
      if (m.attributes !== undefined) return fail('attributes is only for template mappings', ['attributes']);
      return { type: 'github' };
    }
    if (m.template === undefined) return fail('set preset (kubernetes or github) or template');
    const parsed = parseTemplate(m.template);
    if ('error' in parsed) return fail(parsed.error, ['template']);
    if (/^spiffe:/i.test(m.template))
      return fail('must not produce a spiffe:// id: spiffe:// is reserved for X.509-SVIDs (attestation.x509), whose trust domain vouches for it', ['template']);
    return { type: 'template', template: m.template, parts: parsed.parts, attributes: m.attributes ?? [] };
  });

export type Claims = JWTPayload & Record<string, unknown>;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Resolves a claim name or dotted path; keys that themselves contain dots (`kubernetes.io`) win. */
function lookupClaim(obj: unknown, path: string): unknown {
  if (!isRecord(obj)) return undefined;
  if (Object.hasOwn(obj, path)) return obj[path];
  const parts = path.split('.');
  for (let i = parts.length - 1; i >= 1; i--) {
    const head = parts.slice(0, i).join('.');
    if (Object.hasOwn(obj, head)) {
      const found = lookupClaim(obj[head], parts.slice(i).join('.'));
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** A scalar claim as a bounded string; undefined when absent or not a scalar. */
function scalar(value: unknown, name: string): string | undefined {
  let s: string;
  if (typeof value === 'string') s = value;
  else if (typeof value === 'number' && Number.isFinite(value)) s = String(value);
  else if (typeof value === 'boolean') s = String(value);
  else return undefined;
  if (s.length > MAX_ATTRIBUTE_LENGTH)
    throw new AttestationFailed(`platform token claim ${name} is too long`, { detail: `${s.length} > ${MAX_ATTRIBUTE_LENGTH} characters` });
  // Refused here, before encodeURIComponent (which throws on it) or a record (which could not be read back).
  if (!isWellFormed(s)) throw new AttestationFailed(`platform token claim ${name} ${NOT_WELL_FORMED}`);
  return s;
}

function requireString(value: unknown, name: string, detail?: string): string {
  if (typeof value !== 'string' || value === '')
    throw new AttestationFailed(`platform token lacks claim ${name} required by the mapping`, detail ? { detail } : undefined);
  return scalar(value, name) as string;
}

function checkWorkloadId(id: string): string {
  if (id.length > MAX_WORKLOAD_ID_LENGTH)
    throw new AttestationFailed('platform token maps to a workload id that is too long', { detail: `${id.length} characters` });
  let url: URL;
  try {
    url = new URL(id);
  } catch {
    throw new AttestationFailed('platform token maps to a workload id that is not a valid URI', { detail: id.slice(0, 300) });
  }
  if (!url.protocol) throw new AttestationFailed('platform token maps to a workload id without a URI scheme', { detail: id.slice(0, 300) });
  return id;
}

const K8S_SUB = /^system:serviceaccount:([^:]+):([^:]+)$/;

function mapKubernetes(claims: Claims, cluster: string): { id: string; attributes: Record<string, string> } {
  const sub = requireString(claims.sub, 'sub');
  const m = K8S_SUB.exec(sub);
  if (!m) throw new AttestationFailed('platform token is not a Kubernetes service-account token', { detail: `sub ${sub.slice(0, 300)}` });
  const [, ns = '', sa = ''] = m;
  const k8s = claims['kubernetes.io'];
  if (!isRecord(k8s)) throw new AttestationFailed('platform token lacks claim kubernetes.io required by the mapping');
  const serviceAccount = k8s.serviceaccount;
  if (k8s.namespace !== ns || !isRecord(serviceAccount) || serviceAccount.name !== sa)
    throw new AttestationFailed('platform token kubernetes.io claim does not match its sub', {
      detail: `sub names ${ns}/${sa}; kubernetes.io names ${String(k8s.namespace).slice(0, 80)}/${isRecord(serviceAccount) ? String(serviceAccount.name).slice(0, 260) : '?'}`,
    });
  if (ns.length > 63 || !DNS_LABEL.test(ns) || sa.length > 253 || !DNS_SUBDOMAIN.test(sa))
    throw new AttestationFailed('platform token names an invalid Kubernetes namespace or service account', { detail: `${ns}/${sa}`.slice(0, 320) });
  const attributes: Record<string, string> = { namespace: ns, service_account: sa };
  const add = (key: string, value: unknown) => {
    const s = scalar(value, key);
    if (s !== undefined && s !== '') attributes[key] = s;
  };
  add('service_account_uid', serviceAccount.uid);
  if (isRecord(k8s.pod)) {
    add('pod_name', k8s.pod.name);
    add('pod_uid', k8s.pod.uid);
  }
  if (isRecord(k8s.node)) add('node_name', k8s.node.name);
  return { id: `k8s://${cluster}/ns/${ns}/sa/${sa}`, attributes };
}

const GITHUB_ATTRIBUTES = [
  'repository',
  'repository_id',
  'repository_owner',
  'repository_owner_id',
  'repository_visibility',
  'ref',
  'ref_type',
  'ref_protected',
  'sha',
  'head_ref',
  'base_ref',
  'environment',
  'event_name',
  'workflow',
  'workflow_ref',
  'workflow_sha',
  'job_workflow_ref',
  'job_workflow_sha',
  'run_id',
  'run_number',
  'run_attempt',
  'actor',
  'actor_id',
  'runner_environment',
] as const;

function mapGitHub(claims: Claims): { id: string; attributes: Record<string, string> } {
  const repository = requireString(claims.repository, 'repository');
  const sub = requireString(claims.sub, 'sub');
  const [owner = '', repo = '', extra] = repository.split('/');
  if (extra !== undefined || !GITHUB_NAME.test(owner) || !GITHUB_NAME.test(repo))
    throw new AttestationFailed('platform token repository claim is not "owner/repo"', { detail: repository.slice(0, 300) });
  if (claims.repository_owner !== undefined && claims.repository_owner !== owner)
    throw new AttestationFailed('platform token repository_owner claim does not match repository', { detail: repository });
  const prefix = `repo:${repository}:`;
  if (!sub.startsWith(prefix) || sub.length === prefix.length)
    throw new AttestationFailed('platform token sub does not match its repository claim', {
      detail: `sub ${sub.slice(0, 300)} does not start with ${prefix}`,
    });
  const segments = sub
    .slice(prefix.length)
    .split(':')
    .flatMap((part) => part.split('/'));
  if (segments.some((s) => s === ''))
    throw new AttestationFailed('platform token sub has an empty component', { detail: sub.slice(0, 300) });
  const attributes: Record<string, string> = {};
  for (const name of GITHUB_ATTRIBUTES) {
    const s = scalar(claims[name], name);
    if (s !== undefined && s !== '') attributes[name] = s;
  }
  return { id: `github://${owner}/${repo}/${segments.map(encodeURIComponent).join('/')}`, attributes };
}

/**
 * Placeholders that name the configured issuer, not a claim of the token, so their values are
 * known at config load: `{iss_host}` is its host[:port] and `{iss_path}` its path without a
 * trailing "/" (both inserted as is: they come from our config); `{iss}` is the whole issuer URL,
 * percent-encoded (what the verified `iss` claim holds, exactly).
 */
function issuerPlaceholders(issuer: string): Record<string, string> {
  const url = new URL(issuer);
  return { iss_host: url.host, iss_path: url.pathname.replace(/\/+$/, ''), iss: encodeURIComponent(issuer) };
}

function mapTemplate(
  claims: Claims,
  mapping: Extract<OidcMapping, { type: 'template' }>,
  issuer: string,
): { id: string; attributes: Record<string, string> } {
  const fromIssuer = issuerPlaceholders(issuer);
  let id = '';
  for (const part of mapping.parts) {
    if ('literal' in part) {
      id += part.literal;
      continue;
    }
    if (Object.hasOwn(fromIssuer, part.claim)) {
      id += fromIssuer[part.claim];
      continue;
    }
    const value = lookupClaim(claims, part.claim);
    const s =
      (typeof value === 'string' && value !== '') || (typeof value === 'number' && Number.isFinite(value)) ? scalar(value, part.claim) : undefined;
    if (s === undefined)
      throw new AttestationFailed(`platform token lacks claim ${part.claim} required by the mapping`, {
        detail: value === undefined ? 'absent' : `not a non-empty string or number (${typeof value})`,
      });
    id += encodeURIComponent(s);
  }
  const attributes: Record<string, string> = {};
  for (const name of mapping.attributes) {
    const s = scalar(lookupClaim(claims, name), name);
    if (s !== undefined) attributes[name] = s;
  }
  return { id, attributes };
}

/** The workload id and attributes the issuer's mapping makes of verified claims. */
export function mapClaims(claims: Claims, mapping: OidcMapping, issuer: string): { id: string; attributes: Record<string, string> } {
  const mapped =
    mapping.type === 'kubernetes'
      ? mapKubernetes(claims, mapping.cluster)
      : mapping.type === 'github'
        ? mapGitHub(claims)
        : mapTemplate(claims, mapping, issuer);
  return { id: checkWorkloadId(mapped.id), attributes: mapped.attributes };
}

/**
 * What config load knows of every workload id an issuer's mapping can produce: the fixed start
 * they all share (its id space; kept apart from every other source's, see ../id-spaces.ts), and
 * how to name the mapping in a message.
 */
export function mappingIdSpace(mapping: OidcMapping, issuer: string): { prefix: string; describe: string } {
  if (mapping.type === 'kubernetes') return { prefix: `k8s://${mapping.cluster}/`, describe: `preset kubernetes, cluster ${mapping.cluster}` };
  if (mapping.type === 'github') return { prefix: 'github://', describe: 'preset github' };
  const fromIssuer = issuerPlaceholders(issuer);
  let prefix = '';
  for (const part of mapping.parts) {
    if ('literal' in part) prefix += part.literal;
    else if (Object.hasOwn(fromIssuer, part.claim)) prefix += fromIssuer[part.claim];
    else break; // a claim: anything may follow
  }
  return { prefix, describe: `template "${mapping.template}"` };
}
