import type { Hono } from 'hono';
import type { Config } from '../../config/schema.js';
import { AUTHORIZATION_DETAILS_TYPE } from '../../protocol/intent.js';
import type { Keyring } from '../../tokens/keyring.js';
import { json } from '../errors.js';

/** RFC 8414 metadata: only what this broker actually implements is advertised. */
export function authorizationServerMetadata(config: Config, opts: { boundTokens?: boolean } = {}) {
  return {
    issuer: config.issuer,
    jwks_uri: `${config.issuer}/.well-known/jwks.json`,
    // No authorization endpoint: workloads start tasks at task_endpoint; no user-facing flows.
    response_types_supported: [],
    grant_types_supported: [],
    token_endpoint_auth_methods_supported: [],
    authorization_details_types_supported: [AUTHORIZATION_DETAILS_TYPE],
    // RFC 7662 / RFC 7009, for the resource servers listed in config (mTLS or a bearer credential).
    introspection_endpoint: `${config.issuer}/oauth2/introspect`,
    revocation_endpoint: `${config.issuer}/oauth2/revoke`,
    // RFC 8705 §3.3: tokens issued on client-certificate evidence carry cnf.x5t#S256.
    tls_client_certificate_bound_access_tokens: opts.boundTokens ?? false,
    // jit-broker extension: where a workload starts a task.
    task_endpoint: `${config.issuer}/v1/tasks`,
  };
}

export function wellKnownRoutes(app: Hono, deps: { config: Config; keyring: Keyring; boundTokens?: boolean }): void {
  const metadata = authorizationServerMetadata(deps.config, { boundTokens: deps.boundTokens ?? false });
  // From a store read at most KEY_PUBLICATION_LEAD_MS old (Keyring.jwks: shared, bounded reads), and
  // not to be reused unchecked by HTTP caches: a verifier refetches after meeting a kid it does not
  // know (a replica that has just started) and must find it.
  app.get('/.well-known/jwks.json', async () => {
    const jwks = await deps.keyring.jwks({ recent: true });
    return new Response(JSON.stringify(jwks), {
      headers: { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, no-cache' },
    });
  });
  const serveMetadata = () => json(200, metadata, { 'cache-control': 'public, max-age=300' });
  app.get('/.well-known/oauth-authorization-server', serveMetadata);
  // RFC 8414 §3.1: an issuer with a path has its metadata at the well-known prefix + that path.
  const path = new URL(deps.config.issuer).pathname.replace(/\/+$/, '');
  if (path) app.get(`/.well-known/oauth-authorization-server${path}`, serveMetadata);
}
