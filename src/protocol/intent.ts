import { z } from 'zod';

/** Bounded strings: every field a workload sends is length-limited at the boundary. */
const name = (max: number) => z.string().min(1).max(max);
// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;
const text = (max: number) => name(max).regex(NO_CONTROL, 'must not contain control characters');

/** RFC 6749 §3.3 scope-token characters: actions travel space-separated in the `scope` claim. */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const action = text(128).regex(SCOPE_TOKEN, 'must be a scope token: printable ASCII without spaces, " or \\');

/**
 * A resource a workload names. Anything a resource server might normalise into another path is
 * refused, so the glob match against a rule sees the same path the resource server will:
 * no `.` or `..` segments, no empty segment inside the path, no backslash, no percent-encoded
 * `.`, `/` or `\`.
 */
export function resourceProblem(resource: string): string | undefined {
  if (resource.includes('\\')) return 'must not contain a backslash';
  if (/%(2e|2f|5c)/i.test(resource)) return 'must not percent-encode ".", "/" or "\\"';
  const path = resource.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const segments = path.split('/');
  if (segments.some((s) => s === '.' || s === '..')) return 'must not contain "." or ".." path segments';
  if (segments.slice(1, -1).some((s) => s === '')) return 'must not contain an empty path segment ("//")';
  return undefined;
}

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
export type GrantedIntent = Required<Intent>;

/** RFC 9396 authorization_details type used for task intents. */
export const AUTHORIZATION_DETAILS_TYPE = 'jit_task';

export interface TaskAuthorizationDetail {
  type: typeof AUTHORIZATION_DETAILS_TYPE;
  locations: string[];
  actions: string[];
  resources: string[];
  purpose: string;
  identifier: string;
}
