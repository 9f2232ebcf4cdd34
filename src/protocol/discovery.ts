import { z } from 'zod';

/**
 * What verifiers and the platform read without credentials: the JWKS, the RFC 8414 metadata and
 * the health answers.
 */

/** One public key of the JWKS (RFC 7517 §4): never a private member. */
export const publicJwkSchema = z.looseObject({
  kty: z.string(),
  kid: z.string(),
  alg: z.string().optional(),
  use: z.string().optional(),
  crv: z.string().optional(),
  x: z.string().optional(),
  y: z.string().optional(),
});

/** GET /.well-known/jwks.json: every published key of every broker instance. */
export const jwksSchema = z.object({ keys: z.array(publicJwkSchema) });

/** GET /.well-known/oauth-authorization-server (RFC 8414 §2): only what the broker implements; no empty arrays (§3.2). */
export const authorizationServerMetadataSchema = z.object({
  issuer: z.string(),
  jwks_uri: z.string(),
  token_endpoint: z.string().optional(),
  grant_types_supported: z.array(z.string()).optional(),
  token_endpoint_auth_methods_supported: z.array(z.string()).optional(),
  authorization_details_types_supported: z.array(z.string()).optional(),
  introspection_endpoint: z.string(),
  introspection_endpoint_auth_methods_supported: z.array(z.string()).optional(),
  introspection_endpoint_auth_signing_alg_values_supported: z.array(z.string()).optional(),
  revocation_endpoint: z.string(),
  revocation_endpoint_auth_methods_supported: z.array(z.string()).optional(),
  revocation_endpoint_auth_signing_alg_values_supported: z.array(z.string()).optional(),
  tls_client_certificate_bound_access_tokens: z.boolean(),
  dpop_signing_alg_values_supported: z.array(z.string()).optional(),
  task_endpoint: z.string().describe('jit-broker extension: where a workload starts a task'),
});
export type AuthorizationServerMetadata = z.infer<typeof authorizationServerMetadataSchema>;

/** GET /healthz: the process answers. */
export const livenessSchema = z.object({ status: z.literal('ok') });

/** GET /readyz: ready, or the names of the failing checks (why goes to the log, not to an anonymous caller). */
export const readinessSchema = z.union([
  z.object({ status: z.literal('ready') }),
  z.object({ status: z.literal('not_ready'), failing: z.array(z.string()) }),
]);
