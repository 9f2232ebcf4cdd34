/**
 * Platform-token attestation: Kubernetes projected service-account tokens, GitHub Actions OIDC
 * tokens, or any OIDC issuer's ID tokens.
 *
 * Validation follows the shared inbound checklist (STANDARDS §2.13, RFC 8725): issuer picked by
 * exact `iss` from an unverified decode, then `typ` (never a token of ours: `at+jwt`, `txntoken+jwt`,
 * …), the `alg` allow-list, a `kid` in the header (unless the issuer sets `require_kid: false`),
 * then jose `jwtVerify` with the issuer's asymmetric `alg` allow-list, exact `iss`, `aud`,
 * required `exp` (and `iat` while `max_token_age` is set), leeway ≤ 30 s, and the injected clock.
 *
 * Keys come from a small per-issuer cache with bounded staleness (not jose's remote JWKS set):
 * refreshed after `ttl`, kept while a refresh fails up to `max_stale`, refetched at most once per
 * `refresh_cooldown` on an unknown `kid`, and missing keys fail closed with a 503.
 */
import { isExpired, timeClaimsProblem, type TimeProblem } from '../tokens/time-claims.js';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type ProtectedHeaderParameters,
} from 'jose';
import { z } from 'zod';
import { AttestationFailed, BrokerError, ConfigError, Unavailable } from '../errors.js';
import { durationField, parseDuration } from '../util/duration.js';
import { parseSecureUrl } from '../util/url.js';
import type { Attestor, AttestorDeps, AttestorModule, Workload } from './attestor.js';

// ---------------------------------------------------------------------------------------------
// Config schema

/** Asymmetric JWS algorithms a platform token may be signed with. Never `none`, never HS*. */
export const PLATFORM_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
export type PlatformAlgorithm = (typeof PLATFORM_ALGORITHMS)[number];

export const MAX_OIDC_LEEWAY_MS = 30_000;
/** Attribute values longer than this make the token unacceptable (never silently truncated). */
export const MAX_ATTRIBUTE_LENGTH = 512;
const MAX_WORKLOAD_ID_LENGTH = 2048;
const MAX_JWKS_BYTES = 512 * 1024;
const MAX_JWKS_KEYS = 100;
const MAX_TOKEN_LENGTH = 16_384;

/** JWK members that only private or symmetric keys carry. */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'] as const;

const jwkSchema = z
  .looseObject({
    kty: z.string().min(1).max(16),
    kid: z.string().max(256).optional(),
    use: z.string().max(16).optional(),
    alg: z.string().max(32).optional(),
    key_ops: z.array(z.string().max(32)).max(16).optional(),
  })
  .superRefine((jwk, ctx) => {
    for (const member of PRIVATE_JWK_MEMBERS) {
      if (Object.hasOwn(jwk, member))
        ctx.addIssue({ code: 'custom', message: `must be a public key: it contains the private/secret member "${member}"` });
    }
    if (jwk.kty === 'oct') ctx.addIssue({ code: 'custom', message: 'symmetric ("oct") keys are not allowed' });
  });

/** A public JSON Web Key Set: at most 100 keys, no private or symmetric members. */
export const publicJwksSchema = z.looseObject({ keys: z.array(jwkSchema).max(MAX_JWKS_KEYS) });

const discoveryDocSchema = z.looseObject({ issuer: z.string(), jwks_uri: z.string() });

/** Why a URL we fetch keys from is unacceptable, or undefined when it is fine. */
function fetchUrlProblem(raw: string): string | undefined {
  const checked = parseSecureUrl(raw);
  if (checked.ok) return undefined;
  return checked.reason === 'not_absolute' ? 'must be an absolute URL' : 'must use https (http is allowed only for loopback hosts)';
}

const fetchUrl = z
  .string()
  .max(2048)
  .superRefine((v, ctx) => {
    const problem = fetchUrlProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

const issuerUrl = z
  .string()
  .min(1)
  .max(2048)
  .superRefine((v, ctx) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be a URL (the exact "iss" value of the tokens)' });
      return;
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') ctx.addIssue({ code: 'custom', message: 'must be an http(s) URL' });
    if (url.search || url.hash || v.includes('?') || v.includes('#'))
      ctx.addIssue({ code: 'custom', message: 'must not have a query or fragment' });
    if (url.username || url.password) ctx.addIssue({ code: 'custom', message: 'must not contain credentials' });
  });

const algorithmSchema = z.string().transform((alg, ctx) => {
  if (!(PLATFORM_ALGORITHMS as readonly string[]).includes(alg)) {
    ctx.addIssue({
      code: 'custom',
      message: `algorithm "${alg}" is not allowed: only asymmetric algorithms (${PLATFORM_ALGORITHMS.join(', ')}) may verify platform tokens`,
    });
    return z.NEVER;
  }
  return alg as PlatformAlgorithm;
});

/** A claim name, or a dotted path into nested claims (`kubernetes.io.namespace`). */
const claimPath = z
  .string()
  .regex(/^[A-Za-z0-9_:$-]+(\.[A-Za-z0-9_:$-]+)*$/, 'must be a claim name or dotted claim path');

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const GITHUB_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** A literal piece of a template, or a placeholder naming a claim path (or `iss_host`). */
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
 * `{iss_host}` is the configured issuer's host[:port], inserted as is (it comes from our config).
 */
export type OidcMapping =
  | { type: 'kubernetes'; cluster: string }
  | { type: 'github' }
  | { type: 'template'; template: string; parts: TemplatePart[]; attributes: string[] };

const mappingSchema = z
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
    return { type: 'template', template: m.template, parts: parsed.parts, attributes: m.attributes ?? [] };
  });

export type OidcKeySource =
  | { source: 'discovery' }
  | { source: 'jwks_uri'; url: string }
  | { source: 'jwks'; jwks: JSONWebKeySet }
  | { source: 'jwks_file'; path: string };

const KEY_SOURCES = ['discovery', 'jwks_uri', 'jwks', 'jwks_file'] as const;

const keyCacheSchema = z
  .object({
    ttl: durationField('10m'),
    refresh_cooldown: durationField('30s'),
    max_stale: durationField('1h'),
    fetch_timeout: durationField('2s'),
  })
  .strict()
  .prefault({})
  .superRefine((c, ctx) => {
    if (c.ttl <= 0) ctx.addIssue({ code: 'custom', path: ['ttl'], message: 'must be > 0' });
    if (c.max_stale < c.ttl) ctx.addIssue({ code: 'custom', path: ['max_stale'], message: 'must be >= key_cache.ttl' });
    if (c.fetch_timeout <= 0 || c.fetch_timeout > 30_000)
      ctx.addIssue({ code: 'custom', path: ['fetch_timeout'], message: 'must be > 0 and <= 30s' });
  });

const issuerSchema = z
  .object({
    issuer: issuerUrl,
    audiences: z.array(z.string().min(1).max(512)).min(1, 'must list at least one audience').max(16),
    algorithms: z.array(algorithmSchema).min(1).max(PLATFORM_ALGORITHMS.length).default(['RS256', 'ES256']),
    discovery: z.boolean().optional(),
    jwks_uri: fetchUrl.optional(),
    jwks: publicJwksSchema.optional(),
    jwks_file: z.string().min(1).max(4096).optional(),
    /**
     * Refuse tokens whose header names no `kid` (§2.13 "kid present and known"). `false` is for
     * issuers that omit it; jose then accepts only when exactly one published key fits.
     */
    require_kid: z.boolean().default(true),
    /** `false` disables the age check (then `iat` is optional but must not be in the future). */
    max_token_age: z
      .union([z.literal(false), z.string(), z.number()])
      .default('24h')
      .transform((v, ctx) => {
        if (v === false) return undefined;
        try {
          const ms = parseDuration(v);
          if (ms < 1000) throw new RangeError('must be >= 1s (or false to disable)');
          return ms;
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
          return z.NEVER;
        }
      }),
    leeway: durationField('30s').refine((ms) => ms <= MAX_OIDC_LEEWAY_MS, 'must be <= 30s'),
    key_cache: keyCacheSchema,
    mapping: mappingSchema,
  })
  .strict()
  .transform((c, ctx) => {
    const given = KEY_SOURCES.filter((k) => (k === 'discovery' ? c.discovery === true : c[k] !== undefined));
    if (given.length > 1) {
      ctx.addIssue({
        code: 'custom',
        message: `set exactly one key source (discovery, jwks_uri, jwks or jwks_file); got ${given.join(' and ')}`,
      });
      return z.NEVER;
    }
    let keys: OidcKeySource;
    if (c.jwks_uri !== undefined) keys = { source: 'jwks_uri', url: c.jwks_uri };
    else if (c.jwks !== undefined) keys = { source: 'jwks', jwks: c.jwks as JSONWebKeySet };
    else if (c.jwks_file !== undefined) keys = { source: 'jwks_file', path: c.jwks_file };
    else if (c.discovery === false) {
      ctx.addIssue({ code: 'custom', message: 'no key source: set discovery: true, jwks_uri, jwks or jwks_file' });
      return z.NEVER;
    } else {
      const problem = fetchUrlProblem(c.issuer);
      if (problem) {
        ctx.addIssue({ code: 'custom', path: ['issuer'], message: `${problem} to be used for discovery` });
        return z.NEVER;
      }
      keys = { source: 'discovery' };
    }
    return {
      issuer: c.issuer,
      audiences: c.audiences,
      algorithms: [...new Set(c.algorithms)],
      keys,
      require_kid: c.require_kid,
      max_token_age: c.max_token_age,
      leeway: c.leeway,
      key_cache: c.key_cache,
      mapping: c.mapping,
    };
  });

export const oidcConfigSchema = z
  .object({ issuers: z.array(issuerSchema).max(64).default([]) })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.issuers.forEach((i, n) => {
      if (seen.has(i.issuer)) ctx.addIssue({ code: 'custom', path: ['issuers', n, 'issuer'], message: `issuer ${i.issuer} is listed twice` });
      seen.add(i.issuer);
    });
  });

export type OidcConfig = z.output<typeof oidcConfigSchema>;
export type OidcIssuerConfig = OidcConfig['issuers'][number];

// ---------------------------------------------------------------------------------------------
// Key cache

type Resolver = ReturnType<typeof createLocalJWKSet>;

interface IssuerState {
  cfg: OidcIssuerConfig;
  remote: boolean;
  set?: Resolver;
  keys: number;
  fetchedAt?: number;
  lastAttemptAt?: number;
  lastError?: string;
  inflight?: Promise<void>;
}

export interface OidcIssuerStatus {
  issuer: string;
  keys: number;
  fetched_at?: number;
  error?: string;
}

export type OidcAttestor = Attestor<{ kind: 'oidc'; token: string }> & {
  /** Fetches every remote issuer's keys once; failures are recorded (see status()), never thrown. */
  warm(): Promise<void>;
  status(): OidcIssuerStatus[];
  /** Entries in the verified-token cache (for tests and metrics). */
  cacheSize(): number;
};

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads a response body up to `max` bytes. */
async function readBounded(res: Response, max: number, what: string): Promise<string> {
  const length = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(length) && length > max) throw new Error(`${what} is larger than ${max} bytes`);
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`${what} is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function validateJwks(value: unknown, what: string): JSONWebKeySet {
  const parsed = publicJwksSchema.safeParse(value);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length ? ` at ${first.path.join('.')}` : '';
    throw new Error(`${what} is not a valid public JWKS${where}: ${first?.message ?? 'invalid'}`);
  }
  if (parsed.data.keys.length === 0) throw new Error(`${what} has no keys`);
  return parsed.data as JSONWebKeySet;
}

// ---------------------------------------------------------------------------------------------
// Claims → workload

type Claims = JWTPayload & Record<string, unknown>;

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

function mapTemplate(
  claims: Claims,
  mapping: Extract<OidcMapping, { type: 'template' }>,
  issuerHost: string,
): { id: string; attributes: Record<string, string> } {
  let id = '';
  for (const part of mapping.parts) {
    if ('literal' in part) {
      id += part.literal;
      continue;
    }
    if (part.claim === 'iss_host') {
      id += issuerHost;
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

// ---------------------------------------------------------------------------------------------
// The attestor

const ACCEPTED_TYP = new Set(['jwt', 'application/jwt']);
const TASK_TOKEN_TYPS = new Set(['at+jwt', 'application/at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'dpop+jwt']);

/** Maps a jose verification failure to the public error (detail stays operator-only). */
function fromJose(e: unknown, cfg: OidcIssuerConfig): BrokerError {
  if (e instanceof BrokerError) return e;
  const detail = describeError(e);
  const fail = (description: string) => new AttestationFailed(description, { detail, cause: e });
  if (e instanceof joseErrors.JWTExpired) return fail(e.claim === 'iat' ? 'platform token is too old' : 'platform token has expired');
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return fail(`platform token lacks the required "${e.claim}" claim`);
    switch (e.claim) {
      case 'aud':
        return new AttestationFailed('platform token audience is not accepted', {
          detail: `aud ${JSON.stringify(e.payload.aud)?.slice(0, 300)} contains none of ${cfg.audiences.join(', ')}`,
          cause: e,
        });
      case 'iss':
        return fail('token issuer is not trusted');
      case 'nbf':
        return fail('platform token is not yet valid');
      case 'iat':
        return fail('platform token was issued in the future');
      default:
        return fail(`platform token claim ${e.claim} is invalid`);
    }
  }
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return fail('platform token signature is invalid');
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return fail('platform token algorithm is not allowed');
  if (e instanceof joseErrors.JWKSNoMatchingKey) return fail('platform token signing key is not known');
  if (e instanceof joseErrors.JWKSMultipleMatchingKeys) return fail('platform token does not identify its signing key (kid)');
  if (e instanceof joseErrors.JWSInvalid || e instanceof joseErrors.JWTInvalid) return fail('platform token is malformed');
  if (e instanceof joseErrors.JOSENotSupported) return fail('platform token algorithm or key type is not supported');
  return fail('platform token could not be verified');
}

/** jose's `exp` rule (`exp <= now - tolerance` is expired); also used to prune the cache. */
const hasExpired = (exp: unknown, cfg: OidcIssuerConfig, nowMs: number) => isExpired(exp, nowMs, cfg.leeway);

const TIME_PROBLEMS: Record<TimeProblem, string> = {
  not_yet_valid: 'platform token is not yet valid',
  expired: 'platform token has expired',
  too_old: 'platform token is too old',
  issued_in_future: 'platform token was issued in the future',
};

/**
 * The time rules of a verified token (src/tokens/time-claims.ts), re-applied on every use (also
 * to cached verifications) exactly as jose applies them, so that a cache hit is never looser.
 */
function timeProblem(claims: Claims, cfg: OidcIssuerConfig, nowMs: number): AttestationFailed | undefined {
  const problem = timeClaimsProblem(claims, nowMs, cfg.leeway, cfg.max_token_age);
  if (!problem) return undefined;
  const { exp, nbf, iat } = claims;
  return new AttestationFailed(TIME_PROBLEMS[problem], { detail: `exp ${String(exp)}, nbf ${String(nbf)}, iat ${String(iat)}, max_token_age ${String(cfg.max_token_age)}` });
}

/**
 * Verified platform tokens, by SHA-256 of the token. Workloads reuse one token for its whole
 * life (Kubernetes refreshes projected tokens hourly), so caching the signature check saves an
 * ECDSA/RSA verify per request. An entry answers only while the issuer's key set is the very one
 * that verified it (a refresh or rotation invalidates it), and the time rules are re-checked on
 * every hit. Bounded: oldest entries leave first.
 */
export const VERIFIED_CACHE_MAX = 10_000;
/**
 * Expired entries of tokens that are never presented again would otherwise stay until the size cap
 * pushes them out: each insert examines this many entries of a sweep in insertion order (oldest
 * first) and drops the expired ones, so pruning costs O(1) per insert and reaches every entry.
 */
const VERIFIED_PRUNE_STEP = 8;

interface VerifiedToken {
  state: IssuerState;
  set: Resolver;
  claims: Claims;
  workload: Workload;
}

export function createOidcAttestor(config: OidcConfig, deps: AttestorDeps): OidcAttestor {
  const { clock, log } = deps;
  const doFetch = deps.fetch ?? fetch;
  const closing = new AbortController();

  const states = new Map<string, IssuerState>();
  const verified = new Map<string, VerifiedToken>();
  // A Map iterator stays valid across inserts and deletes (deleted entries are skipped, new ones
  // visited), so the sweep resumes where the previous insert left off.
  let sweep = verified.entries();

  function pruneExpired(nowMs: number): void {
    for (let step = 0; step < VERIFIED_PRUNE_STEP; step++) {
      const next = sweep.next();
      if (next.done) {
        sweep = verified.entries(); // a finished iterator never yields again: start a new pass
        continue;
      }
      const [digest, entry] = next.value;
      if (hasExpired(entry.claims.exp, entry.state.cfg, nowMs)) verified.delete(digest);
    }
  }
  config.issuers.forEach((cfg, n) => {
    const state: IssuerState = { cfg, remote: cfg.keys.source === 'discovery' || cfg.keys.source === 'jwks_uri', keys: 0 };
    if (cfg.keys.source === 'jwks' || cfg.keys.source === 'jwks_file') {
      const where = `attestation.oidc.issuers.${n}.${cfg.keys.source}`;
      try {
        const jwks =
          cfg.keys.source === 'jwks'
            ? validateJwks(cfg.keys.jwks, 'inline JWKS')
            : validateJwks(JSON.parse(readFileSync(cfg.keys.path, 'utf8')) as unknown, `JWKS file ${cfg.keys.path}`);
        state.set = createLocalJWKSet(jwks);
        state.keys = jwks.keys.length;
        state.fetchedAt = clock();
      } catch (e) {
        throw new ConfigError([`${where}: ${describeError(e)}`]);
      }
    }
    states.set(cfg.issuer, state);
  });

  async function fetchJson(url: string, what: string, timeoutMs: number): Promise<unknown> {
    // An explicit controller and timer, not AbortSignal.any([AbortSignal.timeout(ms), …]): on
    // Node 20 a timeout signal inside any() can be garbage-collected before it fires
    // (nodejs/node#57736), and any() would keep every per-fetch signal tied to the long-lived one.
    const ctrl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort(new Error(`timed out after ${timeoutMs}ms`));
    }, timeoutMs);
    const onClose = () => ctrl.abort(new Error('attestor closed'));
    if (closing.signal.aborted) onClose();
    else closing.signal.addEventListener('abort', onClose, { once: true });
    try {
      const res = await doFetch(url, { signal: ctrl.signal, redirect: 'error', headers: { accept: 'application/json' } });
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw new Error(`${what} ${url} returned HTTP ${res.status}`);
      }
      const text = await readBounded(res, MAX_JWKS_BYTES, `${what} ${url}`);
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new Error(`${what} ${url} is not valid JSON`);
      }
    } catch (e) {
      if (ctrl.signal.aborted) {
        throw new Error(`${what} ${url} ${timedOut ? `timed out after ${timeoutMs}ms` : 'was aborted (attestor closed)'}`, { cause: e });
      }
      if (e instanceof Error && e.message.startsWith(what)) throw e;
      const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : '';
      throw new Error(`${what} ${url} failed: ${describeError(e)}${cause}`, { cause: e });
    } finally {
      clearTimeout(timer);
      closing.signal.removeEventListener('abort', onClose);
    }
  }

  async function loadRemote(cfg: OidcIssuerConfig): Promise<JSONWebKeySet> {
    const timeout = cfg.key_cache.fetch_timeout;
    let jwksUri: string;
    if (cfg.keys.source === 'jwks_uri') jwksUri = cfg.keys.url;
    else {
      const url = `${cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
      const doc = discoveryDocSchema.safeParse(await fetchJson(url, 'OIDC discovery document', timeout));
      if (!doc.success) throw new Error(`OIDC discovery document ${url} lacks issuer or jwks_uri`);
      if (doc.data.issuer !== cfg.issuer)
        throw new Error(`OIDC discovery document ${url} names issuer ${doc.data.issuer.slice(0, 300)}, not ${cfg.issuer}`);
      const problem = fetchUrlProblem(doc.data.jwks_uri);
      if (problem) throw new Error(`OIDC discovery document ${url} has jwks_uri that ${problem}`);
      jwksUri = doc.data.jwks_uri;
    }
    return validateJwks(await fetchJson(jwksUri, 'JWKS', timeout), `JWKS ${jwksUri}`);
  }

  /** Starts (or joins) this issuer's one in-flight fetch. Never rejects. */
  function refresh(state: IssuerState): Promise<void> {
    if (state.inflight) return state.inflight;
    state.lastAttemptAt = clock();
    state.inflight = (async () => {
      try {
        const jwks = await loadRemote(state.cfg);
        state.set = createLocalJWKSet(jwks);
        state.keys = jwks.keys.length;
        state.fetchedAt = clock();
        state.lastError = undefined;
        log.info({ issuer: state.cfg.issuer, keys: jwks.keys.length, kids: jwks.keys.map((k) => k.kid) }, 'oidc issuer keys fetched');
      } catch (e) {
        state.lastError = describeError(e);
        log.warn({ issuer: state.cfg.issuer, err: state.lastError }, 'oidc issuer keys could not be fetched');
      } finally {
        state.inflight = undefined;
      }
    })();
    return state.inflight;
  }

  const coolingDown = (state: IssuerState, now: number) =>
    state.lastAttemptAt !== undefined && now - state.lastAttemptAt < state.cfg.key_cache.refresh_cooldown;

  const usable = (state: IssuerState, now: number) =>
    state.set !== undefined && (!state.remote || (state.fetchedAt !== undefined && now - state.fetchedAt <= state.cfg.key_cache.max_stale));

  /**
   * The issuer's key resolver; Unavailable when none is usable. Keys older than ttl but within
   * max_stale are used at once while a refresh runs in the background, so a slow or failing
   * issuer delays no request while its cached keys may still be used; only keys past max_stale
   * (or none yet) make the request wait for the fetch.
   */
  async function currentKeys(state: IssuerState): Promise<Resolver> {
    if (!state.remote) return state.set as Resolver;
    const { ttl } = state.cfg.key_cache;
    const now = clock();
    if (state.set && state.fetchedAt !== undefined && now - state.fetchedAt <= ttl) return state.set;
    if (usable(state, now)) {
      if (!state.inflight && !coolingDown(state, now)) void refresh(state);
      return state.set as Resolver;
    }
    if (state.inflight) await state.inflight;
    else if (!coolingDown(state, now)) await refresh(state);
    if (usable(state, clock())) return state.set as Resolver;
    throw new Unavailable(`signing keys of issuer ${state.cfg.issuer} are unavailable`, {
      detail: state.lastError ?? `keys are older than max_stale (${state.cfg.key_cache.max_stale}ms)`,
    });
  }

  /** A jose key resolver that refetches once per cooldown when the token names an unknown key. */
  function resolverFor(state: IssuerState, initial: Resolver): JWTVerifyGetKey {
    return async (header, token) => {
      try {
        return await initial(header, token);
      } catch (e) {
        if (!(e instanceof joseErrors.JWKSNoMatchingKey) || !state.remote) throw e;
        if (state.inflight) await state.inflight;
        else if (!coolingDown(state, clock())) {
          await refresh(state);
          if (state.lastError !== undefined)
            throw new Unavailable(`signing keys of issuer ${state.cfg.issuer} are unavailable`, {
              detail: `token names an unknown key and the refresh failed: ${state.lastError}`,
            });
        } else throw e;
        if (!state.set || state.set === initial) throw e;
        return state.set(header, token);
      }
    };
  }

  async function attest(evidence: { kind: 'oidc'; token: string }): Promise<Workload> {
    const token = evidence.token;
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH)
      throw new AttestationFailed('platform token is malformed', { detail: 'empty or longer than 16384 characters' });

    const digest = createHash('sha256').update(token).digest('base64url');
    const hit = verified.get(digest);
    if (hit) {
      const keys = await currentKeys(hit.state);
      if (keys === hit.set) {
        const problem = timeProblem(hit.claims, hit.state.cfg, clock());
        if (problem) {
          verified.delete(digest);
          throw problem;
        }
        return hit.workload;
      }
      verified.delete(digest); // the key set changed since: verify again
    }

    // 1. Unverified decode, only to choose the issuer's configuration.
    let header: ProtectedHeaderParameters;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch (e) {
      throw new AttestationFailed('platform token is malformed', { detail: describeError(e) });
    }
    if (typeof unverified.iss !== 'string')
      throw new AttestationFailed('token issuer is not trusted', { detail: 'token has no iss claim' });
    const state = states.get(unverified.iss);
    if (!state) throw new AttestationFailed('token issuer is not trusted', { detail: `iss ${unverified.iss.slice(0, 300)}` });
    const cfg = state.cfg;

    // 2. Explicit typing (RFC 8725 §3.11/§3.12): our own task tokens are never platform evidence.
    if (header.typ !== undefined) {
      const typ = typeof header.typ === 'string' ? header.typ.toLowerCase() : '';
      if (!ACCEPTED_TYP.has(typ)) {
        const shown = typeof header.typ === 'string' && /^[\w.+/-]{1,64}$/.test(header.typ) ? ` "${header.typ}"` : '';
        const hint = TASK_TOKEN_TYPS.has(typ) ? ' (access, transaction and workload tokens are never accepted as platform evidence)' : '';
        throw new AttestationFailed(`platform token type${shown} is not accepted${hint}`, {
          detail: `typ ${JSON.stringify(header.typ)?.slice(0, 100)}; accepted: absent, JWT, application/jwt`,
        });
      }
    }

    // 3. Algorithm allow-list before any key lookup (jose enforces it again below).
    if (typeof header.alg !== 'string' || !(cfg.algorithms as string[]).includes(header.alg))
      throw new AttestationFailed('platform token algorithm is not allowed', {
        detail: `alg ${JSON.stringify(header.alg)?.slice(0, 40)} is not in [${cfg.algorithms.join(', ')}] for issuer ${cfg.issuer}`,
      });

    // 3b. A named key (§2.13), before any key lookup: without a kid, jose would accept a
    // signature by whichever published key happens to fit the alg.
    if (cfg.require_kid && typeof header.kid !== 'string')
      throw new AttestationFailed('platform token does not name its signing key (kid)', {
        detail: `issuer ${cfg.issuer} requires a kid header (require_kid)`,
      });

    // 4. Signature and claims.
    const keys = await currentKeys(state);
    const nowMs = clock();
    let claims: Claims;
    try {
      const result = await jwtVerify(token, resolverFor(state, keys), {
        algorithms: cfg.algorithms,
        issuer: cfg.issuer,
        audience: cfg.audiences,
        requiredClaims: cfg.max_token_age !== undefined ? ['exp', 'iat'] : ['exp'],
        clockTolerance: cfg.leeway / 1000,
        ...(cfg.max_token_age !== undefined ? { maxTokenAge: Math.floor(cfg.max_token_age / 1000) } : {}),
        currentDate: new Date(nowMs),
      });
      claims = result.payload as Claims;
    } catch (e) {
      throw fromJose(e, cfg);
    }
    const problem = timeProblem(claims, cfg, nowMs);
    if (problem) throw problem;
    const exp = claims.exp as number;

    // 5. Claims → workload id and attributes.
    const mapping = cfg.mapping;
    const mapped =
      mapping.type === 'kubernetes'
        ? mapKubernetes(claims, mapping.cluster)
        : mapping.type === 'github'
          ? mapGitHub(claims)
          : mapTemplate(claims, mapping, new URL(cfg.issuer).host);
    const workload: Workload = Object.freeze({
      id: checkWorkloadId(mapped.id),
      kind: 'oidc',
      issuer: cfg.issuer,
      attributes: Object.freeze(mapped.attributes),
      evidenceExpiresAt: exp * 1000,
    });
    // Cache only what the current key set verified; after a refresh mid-verify, the next use
    // verifies again under the new set and is cached then.
    if (state.set === keys) {
      pruneExpired(clock());
      if (verified.size >= VERIFIED_CACHE_MAX) verified.delete(verified.keys().next().value as string);
      verified.set(digest, { state, set: state.set, claims, workload });
    }
    return workload;
  }

  function status(): OidcIssuerStatus[] {
    return [...states.values()].map((s) => ({
      issuer: s.cfg.issuer,
      keys: s.set ? s.keys : 0,
      ...(s.fetchedAt !== undefined ? { fetched_at: s.fetchedAt } : {}),
      ...(s.lastError !== undefined ? { error: s.lastError } : {}),
    }));
  }

  function notReady(): string | undefined {
    if (states.size === 0) return undefined;
    const now = clock();
    const problems: string[] = [];
    for (const s of states.values()) {
      if (usable(s, now)) return undefined;
      problems.push(`${s.cfg.issuer}: ${s.lastError ?? (s.set ? 'keys are older than max_stale' : 'keys not fetched yet')}`);
    }
    // Readiness probes drive recovery: retry in the background (shared, cooldown-bounded).
    for (const s of states.values()) if (s.remote && !s.inflight && !coolingDown(s, now)) void refresh(s);
    return `no OIDC issuer has usable signing keys (${problems.join('; ')})`;
  }

  return {
    kind: 'oidc',
    attest,
    notReady,
    status,
    cacheSize: () => verified.size,
    async warm() {
      await Promise.all([...states.values()].filter((s) => s.remote).map((s) => refresh(s)));
    },
    close() {
      closing.abort();
    },
  };
}

export const oidcAttestor: AttestorModule<OidcConfig, { kind: 'oidc'; token: string }> = {
  kind: 'oidc',
  configSchema: oidcConfigSchema,
  create: createOidcAttestor,
};
