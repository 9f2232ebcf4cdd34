/**
 * The `attestation.oidc` config schema: trusted issuers, their algorithms, audiences, key source,
 * key cache bounds and claim mapping (mappings.ts).
 */
import type { JSONWebKeySet } from 'jose';
import { z } from 'zod';
import { bareNumberDuration, durationField, parseDuration } from '../../util/duration.js';
import { parseSecureUrl } from '../../util/url.js';
import { idSpaceCollisions, type IdSpace } from '../id-spaces.js';
import { mappingIdSpace, mappingSchema } from './mappings.js';

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

/** The largest per-issuer leeway (STANDARDS §2.13: at most 60 s; the default is 30 s). */
export const MAX_OIDC_LEEWAY_MS = 60_000;
/** The default platform-token size limit (`attestation.oidc.max_token_bytes`). */
export const DEFAULT_MAX_PLATFORM_TOKEN_BYTES = 16_384;
/** Bounds of `max_token_bytes`: a real platform token is a few KiB; anything above this is not one. */
export const PLATFORM_TOKEN_BYTES_RANGE = { min: 1_024, max: 65_536 } as const;
const MAX_JWKS_KEYS = 100;

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

/** Why a URL we fetch keys from is unacceptable, or undefined when it is fine. */
export function fetchUrlProblem(raw: string): string | undefined {
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
        if (typeof v === 'number') {
          ctx.addIssue({ code: 'custom', message: bareNumberDuration(v) });
          return z.NEVER;
        }
        try {
          const ms = parseDuration(v);
          if (ms < 1000) throw new RangeError('must be >= 1s (or false to disable)');
          return ms;
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
          return z.NEVER;
        }
      }),
    leeway: durationField('30s').refine((ms) => ms <= MAX_OIDC_LEEWAY_MS, 'must be <= 60s'),
    /**
     * The longest a token may be valid: `exp - iat`, else `exp - nbf`, else `exp - now`; exactly
     * this much is accepted. Always on (a token valid for years is not a workload's evidence).
     */
    max_token_lifetime: durationField('24h').refine((ms) => ms >= 1000, 'must be >= 1s'),
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
      max_token_lifetime: c.max_token_lifetime,
      key_cache: c.key_cache,
      mapping: c.mapping,
    };
  });

export const oidcConfigSchema = z
  .object({
    issuers: z.array(issuerSchema).max(64).default([]),
    /**
     * The one size limit of a platform token, in bytes, wherever one is read (start and renewal):
     * longer is a 401 before any parsing. Task tokens have their own bound (MAX_TASK_TOKEN_BYTES).
     */
    max_token_bytes: z
      .number()
      .int()
      .min(PLATFORM_TOKEN_BYTES_RANGE.min)
      .max(PLATFORM_TOKEN_BYTES_RANGE.max)
      .default(DEFAULT_MAX_PLATFORM_TOKEN_BYTES),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.issuers.forEach((i, n) => {
      if (seen.has(i.issuer)) ctx.addIssue({ code: 'custom', path: ['issuers', n, 'issuer'], message: `issuer ${i.issuer} is listed twice` });
      seen.add(i.issuer);
    });
    if (seen.size < c.issuers.length) return; // a repeated issuer would also collide with itself: said once is enough
    for (const issue of idSpaceCollisions(oidcIdSpaces(c.issuers))) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message });
  });

export type OidcConfig = z.output<typeof oidcConfigSchema>;
export type OidcIssuerConfig = OidcConfig['issuers'][number];

/** Each issuer's workload id space (../id-spaces.ts), at `issuers[n].mapping`. */
export function oidcIdSpaces(issuers: readonly Pick<OidcIssuerConfig, 'issuer' | 'mapping'>[]): IdSpace[] {
  return issuers.map((i, n) => {
    const space = mappingIdSpace(i.mapping, i.issuer);
    return { path: ['issuers', n, 'mapping'], source: `issuer ${i.issuer} (${space.describe})`, prefix: space.prefix };
  });
}
