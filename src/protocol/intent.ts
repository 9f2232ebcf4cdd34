import { z } from 'zod';
import { isWellFormed, NOT_WELL_FORMED } from './unicode.js';

/**
 * Bounded strings: every field a workload sends is length-limited at the boundary, and
 * well-formed Unicode (a lone surrogate makes a grant record Redis cannot read back).
 */
const name = (max: number) => z.string().min(1).max(max).refine(isWellFormed, NOT_WELL_FORMED);
// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;
const text = (max: number) => name(max).regex(NO_CONTROL, 'must not contain control characters');

/** RFC 6749 §3.3 scope-token characters: actions travel space-separated in the `scope` claim. */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const action = text(128).regex(SCOPE_TOKEN, 'must be a scope token: printable ASCII without spaces, " or \\');

/**
 * A resource a workload names. The glob match against a rule must see the path a resource server
 * will act on, so anything that some server normalises into another path is refused rather than
 * guessed at:
 * - printable ASCII only, no backslash, no raw `?` or `#` (a query or fragment is not a resource);
 * - `%XX` only for bytes that must be encoded (never unreserved characters, `.`, `/`, `\`, `%`
 *   or `;`), only as valid UTF-8, and only in NFKC form (no fullwidth dots, slashes, ...);
 * - no segment of dots and spaces alone, raw or decoded, before or after `;params` (`..;`, `.. `);
 * - no empty segment inside the path (`//`).
 */
export function resourceProblem(resource: string): string | undefined {
  if (!/^[\x21-\x7e]+$/.test(resource)) return 'must be printable ASCII without spaces (percent-encode other characters)';
  if (resource.includes('\\')) return 'must not contain a backslash';
  if (/[?#]/.test(resource)) return 'must not contain "?" or "#" (percent-encode them as data)';
  let encoded = false;
  for (const m of resource.matchAll(/%(.{0,2})/g)) {
    if (!/^[0-9a-fA-F]{2}$/.test(m[1]!)) return 'must use "%" only as %XX with two hex digits';
    const byte = parseInt(m[1]!, 16);
    if (byte < 0x80 && !NEEDS_ENCODING.test(String.fromCharCode(byte))) return `must not percent-encode "${String.fromCharCode(byte)}"`;
    encoded = true;
  }
  let decoded = resource;
  if (encoded) {
    try {
      decoded = decodeURIComponent(resource);
    } catch {
      return 'must percent-encode valid UTF-8 only';
    }
    if (decoded.normalize('NFKC') !== decoded) return 'must percent-encode NFKC-normalised text only';
  }
  for (const path of [resource, decoded]) {
    const segments = path.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/');
    if (segments.some((seg) => /^[. ]*\.[. ]*$/.test(seg.split(';')[0]!))) return 'must not contain "." or ".." path segments';
    if (segments.slice(1, -1).some((seg) => seg === '')) return 'must not contain an empty path segment ("//")';
  }
  return undefined;
}

/** ASCII characters that may appear percent-encoded: space and the delimiters a URI cannot carry as data. Never control characters. */
const NEEDS_ENCODING = /^[ "<>^`{|}#?[\]@!$&'()*+,=:]$/;

const resource = text(1024).superRefine((value, ctx) => {
  const problem = resourceProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** What the task will do. */
export const intentSchema = z
  .object({
    audience: text(512),
    actions: z.array(action).min(1).max(64),
    resources: z.array(resource).max(64).default([]),
    purpose: text(1024),
    task: text(256).regex(/^[A-Za-z0-9._:\-/]+$/, 'may contain only letters, digits and . _ : - /').optional(),
  })
  .strict();
export type IntentRequest = z.input<typeof intentSchema>;
export type Intent = z.output<typeof intentSchema>;

/** A granted intent always has a task id (the broker assigns one when the request has none). */
export type GrantedIntent = z.infer<typeof grantedIntentSchema>;

/** RFC 9396 authorization_details type used for task intents. */
export const AUTHORIZATION_DETAILS_TYPE = 'jit_task';

/** One RFC 9396 authorization detail of a task token: the granted intent. */
export const taskAuthorizationDetailSchema = z.object({
  type: z.literal(AUTHORIZATION_DETAILS_TYPE),
  locations: z.array(z.string()),
  actions: z.array(z.string()),
  resources: z.array(z.string()),
  purpose: z.string(),
  identifier: z.string(),
});
export type TaskAuthorizationDetail = z.infer<typeof taskAuthorizationDetailSchema>;

/** The intent as granted (answers, records): the request's intersection with the rule, with its task id. */
export const grantedIntentSchema = z.object({
  audience: z.string(),
  actions: z.array(z.string()),
  resources: z.array(z.string()),
  purpose: z.string(),
  task: z.string(),
});
