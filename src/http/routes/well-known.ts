import type { Hono } from 'hono';
import { methodsOf } from '../../auth/resource-servers.js';
import { CLIENT_ASSERTION_ALGS } from '../../auth/client-assertion-algs.js';
import { CLIENT_AUTH_METHODS } from '../../auth/client-auth.js';
import type { Config } from '../../config/schema.js';
import type { AuthorizationServerMetadata } from '../../protocol/discovery.js';
import { DPOP_ALGORITHMS } from '../../protocol/dpop.js';
import { AUTHORIZATION_DETAILS_TYPE } from '../../protocol/intent.js';
import { GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_TOKEN_EXCHANGE } from '../../protocol/token.js';
import { endpointUrl, OAUTH_PATHS } from '../../protocol/endpoints.js';
import type { Keyring } from '../../tokens/keyring.js';
import { json } from '../errors.js';

/**
 * RFC 8414 metadata: only what this broker implements and accepts, built from what is
 * registered (the resource servers' auth methods), and no member whose value would be an empty
 * array (§3.2).
 *
 * Not advertised, on purpose:
 * - `authorization_endpoint` and `response_types_supported`: there is no authorization endpoint
 *   (no user-facing flow), and a response type is a parameter of that endpoint alone (RFC 6749
 *   §3.1.1). §2 makes the member REQUIRED, but the only true value is an empty list, which §3.2
 *   says MUST be omitted; advertising `none` or `code` would promise an endpoint that does not exist.
 *
 * The token endpoint's grant types follow the attestation sources: the token exchange needs an
 * OIDC issuer for its subject tokens, client credentials a client certificate (RFC 8705
 * tls_client_auth). The exchange's client is public (`none`): its subject token is the credential.
 */
export function authorizationServerMetadata(config: Config, opts: { boundTokens?: boolean } = {}): AuthorizationServerMetadata {
  const mtls = opts.boundTokens ?? false;
  const registered = new Set(config.resource_servers.flatMap((rs) => methodsOf(rs, mtls)));
  // In the registry's spelling and a stable order; the bearer credential is the access-token type `Bearer`.
  const methods = CLIENT_AUTH_METHODS.filter((m) => registered.has(m) && m !== 'bearer');
  const introspection = [...methods, ...(registered.has('bearer') ? ['Bearer'] : [])];
  // Revocation: a token's holder needs no client authentication (the token and, when bound, its
  // certificate are the proof): `none`. Listing it also keeps the member from defaulting to
  // client_secret_basic (§2) when no resource server is registered.
  const revocation = [...methods, 'none'];
  const jwtAlgs = methods.includes('private_key_jwt') ? [...CLIENT_ASSERTION_ALGS] : [];
  const exchange = (config.attestation.oidc?.issuers.length ?? 0) > 0;
  const grantTypes = [...(exchange ? [GRANT_TYPE_TOKEN_EXCHANGE] : []), ...(mtls ? [GRANT_TYPE_CLIENT_CREDENTIALS] : [])];
  const tokenAuth = [...(exchange ? ['none'] : []), ...(mtls ? ['tls_client_auth'] : [])];
  return {
    issuer: config.issuer,
    jwks_uri: endpointUrl(config.issuer, OAUTH_PATHS.jwks),
    // RFC 8693 token exchange and RFC 8705 client credentials, on the task-start pipeline.
    ...(grantTypes.length > 0 ? { token_endpoint: endpointUrl(config.issuer, OAUTH_PATHS.token) } : {}),
    ...nonEmpty('grant_types_supported', grantTypes),
    ...nonEmpty('token_endpoint_auth_methods_supported', tokenAuth),
    ...(grantTypes.length > 0 ? { authorization_details_types_supported: [AUTHORIZATION_DETAILS_TYPE] } : {}),
    // RFC 7662 / RFC 7009, for the resource servers listed in config.
    introspection_endpoint: endpointUrl(config.issuer, OAUTH_PATHS.introspection),
    ...nonEmpty('introspection_endpoint_auth_methods_supported', introspection),
    ...nonEmpty('introspection_endpoint_auth_signing_alg_values_supported', jwtAlgs),
    revocation_endpoint: endpointUrl(config.issuer, OAUTH_PATHS.revocation),
    ...nonEmpty('revocation_endpoint_auth_methods_supported', revocation),
    ...nonEmpty('revocation_endpoint_auth_signing_alg_values_supported', jwtAlgs),
    // RFC 8705 §3.3: tokens issued on client-certificate evidence carry cnf.x5t#S256.
    tls_client_certificate_bound_access_tokens: mtls,
    // RFC 9449 §5.1: DPoP proofs on the task routes and the token endpoint bind the token to their key.
    dpop_signing_alg_values_supported: [...DPOP_ALGORITHMS],
    // jit-broker extension: where a workload starts a task.
    task_endpoint: endpointUrl(config.issuer, '/v1/tasks'),
  };
}

/** `{ [name]: values }`, or nothing when there are none (RFC 8414 §3.2). */
const nonEmpty = <K extends string>(name: K, values: readonly string[]): Partial<Record<K, string[]>> =>
  values.length > 0 ? ({ [name]: [...values] } as Record<K, string[]>) : {};

/**
 * GET the JWKS and the metadata, on `app` (mounted under the issuer's path). An issuer with a
 * path also has its metadata at the root, at the well-known prefix + that path (RFC 8414 §3.1):
 * `root` is the app at the root, for that route.
 */
export function wellKnownRoutes(app: Hono, deps: { config: Config; keyring: Keyring; boundTokens?: boolean; root?: Hono }): void {
  const metadata = authorizationServerMetadata(deps.config, { boundTokens: deps.boundTokens ?? false });
  // From a store read at most KEY_PUBLICATION_LEAD_MS old (Keyring.jwks: shared, bounded reads), and
  // not to be reused unchecked by HTTP caches: a verifier refetches after meeting a kid it does not
  // know (a replica that has just started) and must find it.
  app.get(OAUTH_PATHS.jwks, async () => {
    const jwks = await deps.keyring.jwks({ recent: true });
    return new Response(JSON.stringify(jwks), {
      headers: { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, no-cache' },
    });
  });
  const serveMetadata = () => json(200, metadata, { 'cache-control': 'public, max-age=300' });
  app.get(OAUTH_PATHS.metadata, serveMetadata);
  const path = issuerPath(deps.config.issuer);
  if (path && deps.root) deps.root.get(`${OAUTH_PATHS.metadata}${path}`, serveMetadata);
}

/** The issuer's path without a trailing slash: '' for an issuer at the root. */
export const issuerPath = (issuer: string): string => new URL(issuer).pathname.replace(/\/+$/, '');
