import { z } from 'zod';

/** Bounded strings: every field a workload sends is length-limited at the boundary. */
const name = (max: number) => z.string().min(1).max(max);
// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const NO_CONTROL = /^[^\u0000-\u001f\u007f]*$/;
const text = (max: number) => name(max).regex(NO_CONTROL, 'must not contain control characters');

/** What the task will do. */
export const intentSchema = z
  .object({
    audience: text(512),
    actions: z.array(text(128)).min(1).max(64),
    resources: z.array(text(1024)).max(64).default([]),
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
