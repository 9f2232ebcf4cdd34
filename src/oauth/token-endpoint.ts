import { OAUTH_PATHS } from '../protocol/endpoints.js';
import { describeZodError, PolicyDenied, type Broker, type CallContext, type TaskRequest } from '../broker.js';
import { AttestationFailed, BrokerError, InvalidAuthorizationDetails, InvalidClient, InvalidRequest, InvalidScope, InvalidTarget, UnsupportedGrantType } from '../errors.js';
import { TOKEN_TYPE_NOT_APPLICABLE, TOKEN_TYPE_TXN_TOKEN } from '../protocol/txn-token.js';
import { intentSchema, type Intent } from '../protocol/intent.js';
import type { TaskStartResponse } from '../protocol/tasks.js';
import { clip } from '../util/text.js';
import { ActorRefused, actorTokenOf, type ActorToken } from './delegation.js';
import {
  GRANT_TYPE_CLIENT_CREDENTIALS,
  GRANT_TYPE_TOKEN_EXCHANGE,
  REQUESTED_TOKEN_TYPES,
  requestedTaskDetailSchema,
  SUBJECT_TOKEN_TYPES,
  tokenRequestSchema,
  type RequestedTaskDetail,
  type TokenRequest,
  type TokenResponse,
} from '../protocol/token.js';

/**
 * The token endpoint (POST /oauth2/token) over the broker's one task-start pipeline: each grant
 * type reads its evidence and intent from the form, then Broker.issue attests, authorizes,
 * records and mints exactly as POST /v1/tasks does. Refusals are answered in the token
 * endpoint's codes (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 9396 §5), always before anything is written.
 */
export const TOKEN_ROUTE = OAUTH_PATHS.token;

/** Recorded as the task's purpose when the request states none (no `jit_task` detail with a purpose). */
export const UNSTATED_PURPOSE = 'not stated (token exchange)';

/** POST /oauth2/token: dispatches on `grant_type`. */
export async function tokenRequest(broker: Broker, form: unknown, ctx: CallContext): Promise<TokenResponse> {
  const grantType = (form as { grant_type?: unknown } | undefined)?.grant_type;
  if (grantType === undefined) throw new InvalidRequest('grant_type is required');
  if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE && grantType !== GRANT_TYPE_CLIENT_CREDENTIALS) {
    throw new UnsupportedGrantType(`grant_type must be "${GRANT_TYPE_TOKEN_EXCHANGE}" or "${GRANT_TYPE_CLIENT_CREDENTIALS}"`);
  }
  refuseClientSecrets(form, ctx);
  return grantType === GRANT_TYPE_TOKEN_EXCHANGE ? exchangeToken(broker, readRequest(form), ctx) : clientCredentials(broker, readRequest(form), ctx);
}

/**
 * The token endpoint's client authentication is `none` (token exchange) or `tls_client_auth`
 * (client credentials), as its metadata lists. Credentials of another method would go unchecked:
 * ignoring them would accept any secret, so they are a failed client authentication
 * (RFC 6749 §5.2: "unsupported authentication method").
 */
function refuseClientSecrets(form: unknown, ctx: CallContext): void {
  const unsupported = 'the token endpoint authenticates no client by secret or assertion: a token exchange sends none (its subject_token is the evidence), client_credentials a client certificate (tls_client_auth)';
  if (ctx.basic) throw new InvalidClient(unsupported, { challenge: 'Basic' });
  const params = (form ?? {}) as Record<string, unknown>;
  if (['client_secret', 'client_assertion', 'client_assertion_type'].some((p) => params[p] !== undefined)) throw new InvalidClient(unsupported);
}

/**
 * RFC 8693 token exchange: the subject token is a platform token, the same evidence as
 * `{"kind":"oidc"}` at POST /v1/tasks, and the workload's only credential (a public client).
 * Per §2.2.2, a subject token that does not verify is `invalid_request`.
 */
export async function exchangeToken(broker: Broker, req: TokenRequest, ctx: CallContext): Promise<TokenResponse> {
  if (req.subject_token === undefined) throw new InvalidRequest('subject_token is required');
  if (req.subject_token_type === undefined) throw new InvalidRequest('subject_token_type is required');
  if (!(SUBJECT_TOKEN_TYPES as readonly string[]).includes(req.subject_token_type)) {
    throw new InvalidRequest(`subject_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}: the subject token is a platform identity token`);
  }
  // Transaction Tokens refuse an actor token themselves (txnTokenExchange).
  if (req.requested_token_type === TOKEN_TYPE_TXN_TOKEN) return txnTokenExchange(broker, req, ctx);
  // Delegation (RFC 8693 §1.1): an actor token names the workload acting for the subject (oauth/delegation.ts).
  const actor = actorTokenOrRefusal(req);
  const intent = intentOf(req);
  const evidence = { kind: 'oidc' as const, token: req.subject_token };
  const started = await issue(broker, { evidence, intent, ...(actor ? { actor } : {}) }, ctx, (e) => (e instanceof AttestationFailed ? new InvalidRequest(`subject_token: ${e.description}`) : e));
  return tokenResponse(started, req);
}

/**
 * RFC 6749 §4.4 client credentials with RFC 8705 `tls_client_auth`: the client certificate of the
 * connection (or a trusted proxy's header) is the evidence, as at POST /v1/tasks over mTLS.
 * The client is the workload: a `client_id`, when sent, must be the attested workload id.
 */
export async function clientCredentials(broker: Broker, req: TokenRequest, ctx: CallContext): Promise<TokenResponse> {
  if (req.subject_token !== undefined || req.actor_token !== undefined) throw new InvalidRequest('client_credentials takes no subject_token or actor_token');
  if (req.requested_token_type === TOKEN_TYPE_TXN_TOKEN) throw new InvalidRequest('a Transaction Token is requested by token exchange (a subject_token), not client_credentials');
  if (!ctx.certificate) throw new InvalidClient('client_credentials authenticates with tls_client_auth: present the workload\'s client certificate');
  const intent = intentOf(req);
  const started = await issue(broker, { evidence: ctx.certificate, intent, ...(req.client_id !== undefined ? { clientId: req.client_id } : {}) }, ctx, (e) => e);
  return tokenResponse(started, req);
}

function actorTokenOrRefusal(req: TokenRequest): ActorToken | undefined {
  try {
    return actorTokenOf(req.actor_token, req.actor_token_type);
  } catch (e) {
    if (e instanceof ActorRefused) throw new InvalidRequest(`actor_token: ${e.description}`);
    throw e;
  }
}

function readRequest(form: unknown): TokenRequest {
  const parsed = tokenRequestSchema.safeParse(form);
  if (!parsed.success) throw new InvalidRequest(describeZodError(parsed.error));
  const req = parsed.data;
  if (req.requested_token_type !== undefined && !(REQUESTED_TOKEN_TYPES as readonly string[]).includes(req.requested_token_type)) {
    throw new InvalidRequest(`requested_token_type "${req.requested_token_type}" is not supported: this broker issues ${REQUESTED_TOKEN_TYPES.join(', ')}`);
  }
  return req;
}

/**
 * Runs the pipeline and answers a refusal in the token endpoint's terms: a policy refusal of the
 * audience or a resource is `invalid_target` (RFC 8693 §2.2.2), of actions `invalid_scope`
 * (RFC 6749 §5.2); a workload no rule names, or a binding the rule requires, makes the subject
 * unacceptable by policy: `invalid_request` (RFC 8693 §2.2.2). `evidenceError` maps the attestor's refusals.
 */
async function issue(
  broker: Broker,
  req: Omit<TaskRequest, 'route'>,
  ctx: CallContext,
  evidenceError: (e: AttestationFailed) => BrokerError,
): Promise<TaskStartResponse> {
  try {
    return await broker.issue({ ...req, route: TOKEN_ROUTE }, ctx);
  } catch (e) {
    // RFC 8693 §2.2.2: an actor token that is invalid or unacceptable is invalid_request.
    if (e instanceof ActorRefused) throw new InvalidRequest(`actor_token: ${e.description}`);
    if (e instanceof AttestationFailed) throw evidenceError(e);
    if (e instanceof PolicyDenied) throw tokenEndpointDenial(e);
    throw e;
  }
}

function tokenEndpointDenial(e: PolicyDenied): BrokerError {
  const { refused } = e;
  if (e.closestRule === undefined) return new InvalidRequest(e.description);
  if (refused.audience !== undefined || refused.resources.length > 0 || refused.resourcesRequired) return new InvalidTarget(e.description);
  if (refused.actions.length > 0) return new InvalidScope(e.description);
  return new InvalidRequest(e.description);
}

/**
 * The intent a token request names (documented in docs/http-api.md, "Token exchange"):
 * - audience: the one value among `audience` parameters and the detail's `locations`; without
 *   either, the one `resource` (RFC 8707: the token is restricted to it). A task token has one
 *   audience: two different values are `invalid_target`;
 * - resources: the `resource` parameters and the detail's `resources`;
 * - actions: the `scope` tokens and the detail's `actions`;
 * - purpose and task id: the detail's `purpose` and `identifier`.
 */
function intentOf(req: TokenRequest, purpose?: string): Intent {
  const detail = taskDetailOf(req.authorization_details);
  // RFC 8707 §2: a resource parameter is an absolute URI without a fragment.
  const relative = req.resource?.find((r) => !ABSOLUTE_URI.test(r) || r.includes('#'));
  if (relative !== undefined) throw new InvalidTarget(`resource must be an absolute URI without a fragment (RFC 8707): "${clip(relative, 64)}" is not`);
  const resources = unique([...(req.resource ?? []), ...(detail?.resources ?? [])]);
  const named = unique([...(req.audience ?? []), ...(detail?.locations ?? [])]);
  const audiences = named.length > 0 ? named : unique(req.resource ?? []);
  if (audiences.length === 0) throw new InvalidRequest('name the target: an audience or a resource parameter, or locations in authorization_details');
  if (audiences.length > 1) {
    throw new InvalidTarget(`a task token has exactly one audience; the request names ${audiences.length}${named.length > 0 ? '' : ' resources and no audience parameter to choose among them'}`);
  }
  const actions = unique([...(req.scope?.split(' ').filter((a) => a !== '') ?? []), ...(detail?.actions ?? [])]);
  if (actions.length === 0) throw new InvalidScope('name the actions: a scope parameter, or actions in authorization_details');
  const parsed = intentSchema.safeParse({
    audience: audiences[0],
    actions,
    resources,
    purpose: purpose ?? detail?.purpose ?? UNSTATED_PURPOSE,
    ...(detail?.identifier !== undefined ? { task: detail.identifier } : {}),
  });
  if (parsed.success) return parsed.data;
  const field = parsed.error.issues[0]?.path[0];
  const description = describeZodError({ issues: parsed.error.issues.map((i) => ({ ...i, path: [PARAMETER_OF[String(i.path[0])] ?? String(i.path[0]), ...i.path.slice(1)] })) });
  if (field === 'audience' || field === 'resources') throw new InvalidTarget(description);
  if (field === 'actions') throw new InvalidScope(description);
  if (field === 'purpose' || field === 'task') throw new InvalidAuthorizationDetails(description);
  throw new InvalidRequest(description);
}

// --- Transaction Tokens (draft-ietf-oauth-transaction-tokens, "Txn-Token Request") ---

/**
 * A token exchange with `requested_token_type` txn_token: the same subject, pipeline, policy,
 * grant and audit as a task token, but the `audience` is the configured trust domain (REQUIRED),
 * `scope` is the transaction's purpose (REQUIRED), and the actions come from the
 * `authorization_details` jit_task detail. The grant lives as long as the token; never bound.
 */
async function txnTokenExchange(broker: Broker, req: TokenRequest, ctx: CallContext): Promise<TokenResponse> {
  const settings = broker.txnTokens();
  if (!settings) throw new InvalidRequest(`requested_token_type "${TOKEN_TYPE_TXN_TOKEN}" is not enabled on this broker`);
  if (ctx.dpop !== undefined) throw new InvalidRequest('a Transaction Token is never bound: send no DPoP proof');
  // The requester is the subject: a Txn-Token names no actor (req_wl is the subject's workload).
  if (req.actor_token !== undefined || req.actor_token_type !== undefined) throw new InvalidRequest('a Transaction Token request takes no actor_token');
  if (req.audience === undefined) throw new InvalidRequest(`audience is required: the trust domain "${settings.trust_domain}"`);
  if (req.audience.length !== 1 || req.audience[0] !== settings.trust_domain) throw new InvalidTarget(`a Transaction Token's audience is the trust domain "${settings.trust_domain}"`);
  if (req.scope === undefined) throw new InvalidRequest('scope is required: the purpose of the transaction');
  const detail = taskDetailOf(req.authorization_details);
  if (detail?.purpose !== undefined) throw new InvalidAuthorizationDetails('the purpose of a Transaction Token is its scope parameter: send no purpose in authorization_details');
  if (detail?.locations !== undefined) throw new InvalidAuthorizationDetails('the audience of a Transaction Token is the trust domain: send no locations in authorization_details');
  if (!detail?.actions?.length) throw new InvalidAuthorizationDetails('name the actions of the transaction: actions in an authorization_details jit_task detail');
  const intent = intentOf({ ...req, scope: undefined }, req.scope);
  const ttl = Math.floor(Math.min(settings.ttl, broker.maxTtlMs()) / 1000);
  const evidence = { kind: 'oidc' as const, token: req.subject_token! };
  const started = await issue(broker, { evidence, intent, ttl, txnToken: true }, ctx, (e) => (e instanceof AttestationFailed ? new InvalidRequest(`subject_token: ${e.description}`) : e));
  // RFC 8693 §2.2.1: not an OAuth access token, so token_type N_A. The scope (the purpose) is as asked.
  return { access_token: started.access_token, issued_token_type: TOKEN_TYPE_TXN_TOKEN, token_type: TOKEN_TYPE_NOT_APPLICABLE, expires_in: started.expires_in };
}

// --- end Transaction Tokens ---

const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:/;

/** Where each intent field comes from in the request, for error descriptions. */
const PARAMETER_OF: Record<string, string> = { audience: 'audience', actions: 'scope', resources: 'resource', purpose: 'authorization_details.purpose', task: 'authorization_details.identifier' };

/** The one `jit_task` detail of RFC 9396 `authorization_details` (a JSON array), if sent. */
function taskDetailOf(text: string | undefined): RequestedTaskDetail | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidAuthorizationDetails('authorization_details is not valid JSON');
  }
  if (!Array.isArray(value) || value.length !== 1) throw new InvalidAuthorizationDetails('authorization_details must be a JSON array of exactly one jit_task detail');
  const parsed = requestedTaskDetailSchema.safeParse(value[0]);
  if (!parsed.success) throw new InvalidAuthorizationDetails(describeZodError({ issues: parsed.error.issues.map((i) => ({ ...i, path: ['authorization_details', 0, ...i.path] })) }));
  return parsed.data;
}

/** RFC 8693 §2.2.1: `scope` only when it differs from what was asked for; never a refresh token. */
function tokenResponse(started: TaskStartResponse, req: TokenRequest): TokenResponse {
  return {
    access_token: started.access_token,
    issued_token_type: started.issued_token_type,
    token_type: started.token_type,
    expires_in: started.expires_in,
    ...(started.scope !== req.scope ? { scope: started.scope } : {}),
  };
}

const unique = (values: string[]): string[] => [...new Set(values)];
