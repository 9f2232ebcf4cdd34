import { z } from 'zod';
import { AUTHORIZATION_DETAILS_TYPE } from './intent.js';
import { TOKEN_TYPE_NOT_APPLICABLE, TOKEN_TYPE_TXN_TOKEN } from './txn-token.js';

/**
 * The token endpoint, POST /oauth2/token: RFC 8693 token exchange (a workload presents its
 * platform token as the subject token) and RFC 6749 §4.4 client credentials with RFC 8705
 * `tls_client_auth` (a workload whose evidence is its client certificate). Both run the same
 * pipeline as POST /v1/tasks; these are the wire shapes only.
 */

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const GRANT_TYPE_CLIENT_CREDENTIALS = 'client_credentials';
export const TOKEN_GRANT_TYPES = [GRANT_TYPE_TOKEN_EXCHANGE, GRANT_TYPE_CLIENT_CREDENTIALS] as const;

/** RFC 8693 §3 token type identifiers. */
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TOKEN_TYPE_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

/** Subject tokens the broker accepts: platform identity tokens (attested as `{"kind":"oidc"}` evidence). */
export const SUBJECT_TOKEN_TYPES = [TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN] as const;
/** Token types the broker issues on request (RFC 8693 `requested_token_type`); Txn-Tokens only when configured. */
export const REQUESTED_TOKEN_TYPES = [TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN] as const;

/** Several `audience` or `resource` parameters may be sent (RFC 8693 §2.1, RFC 8707 §2): bounded. */
const many = (max: number) => z.array(z.string().min(1).max(1024)).min(1).max(max);

/**
 * The form parameters of POST /oauth2/token as they arrive (every value a string; `audience` and
 * `resource` as lists). Unknown parameters are ignored (RFC 6749 §3.1); each grant then reads its own.
 */
export const tokenRequestSchema = z.object({
  grant_type: z.string().min(1).max(128).describe(`\`${GRANT_TYPE_TOKEN_EXCHANGE}\` or \`${GRANT_TYPE_CLIENT_CREDENTIALS}\``),
  subject_token: z.string().min(1).optional().describe('Token exchange: the platform token (the workload\'s evidence)'),
  subject_token_type: z.string().min(1).max(128).optional().describe(`Token exchange: \`${TOKEN_TYPE_JWT}\` or \`${TOKEN_TYPE_ID_TOKEN}\``),
  requested_token_type: z.string().min(1).max(128).optional().describe(`\`${TOKEN_TYPE_ACCESS_TOKEN}\` (the default), or \`${TOKEN_TYPE_TXN_TOKEN}\` for a Transaction Token (token exchange, when enabled)`),
  audience: many(16).optional().describe('The intent audience (a task token has exactly one)'),
  resource: many(64).optional().describe('RFC 8707: resources of the intent; without `audience`, the one resource is the audience too'),
  scope: z.string().min(1).max(8192).optional().describe('The actions, space-separated; for a Transaction Token, its purpose'),
  authorization_details: z.string().min(1).optional().describe(`RFC 9396: a JSON array with one \`${AUTHORIZATION_DETAILS_TYPE}\` detail`),
  actor_token: z.string().min(1).optional().describe('Token exchange, delegation: the acting workload\'s platform token, or its own task token (with its proof of possession when bound)'),
  actor_token_type: z.string().min(1).max(128).optional().describe(`With actor_token: \`${TOKEN_TYPE_JWT}\` or \`${TOKEN_TYPE_ID_TOKEN}\` (a platform token), or \`${TOKEN_TYPE_ACCESS_TOKEN}\` (a task token)`),
  client_id: z.string().min(1).max(2048).optional().describe('Client credentials: the workload id, if sent, must be the certificate\'s'),
});
export type TokenRequest = z.infer<typeof tokenRequestSchema>;

/**
 * One RFC 9396 `jit_task` detail in a request: the members of the token's own
 * authorization_details, each optional. `locations` names the audience (one), `identifier` the task id.
 */
export const requestedTaskDetailSchema = z
  .object({
    type: z.literal(AUTHORIZATION_DETAILS_TYPE),
    locations: z.array(z.string()).min(1).max(16).optional(),
    actions: z.array(z.string()).max(64).optional(),
    resources: z.array(z.string()).max(64).optional(),
    purpose: z.string().optional(),
    identifier: z.string().optional(),
  })
  .strict();
export type RequestedTaskDetail = z.infer<typeof requestedTaskDetailSchema>;

/** RFC 8693 §2.2.1 / RFC 6749 §5.1 success response. Never a refresh token. */
export const tokenResponseSchema = z.object({
  access_token: z.string().describe('The task token (a JWT, RFC 9068), or the Transaction Token'),
  issued_token_type: z.enum([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_TXN_TOKEN]),
  token_type: z
    .enum(['Bearer', 'DPoP', TOKEN_TYPE_NOT_APPLICABLE])
    .describe(`DPoP when a \`DPoP\` proof bound the token (RFC 9449 §5), ${TOKEN_TYPE_NOT_APPLICABLE} for a Transaction Token (RFC 8693 §2.2.1), else Bearer`),
  expires_in: z.number().int().nonnegative(),
  scope: z.string().optional().describe('The granted actions, when they differ from the requested scope (RFC 6749 §5.1)'),
});
export type TokenResponse = z.infer<typeof tokenResponseSchema>;
