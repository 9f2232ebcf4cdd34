/**
 * The OAuth endpoints' paths, relative to the issuer (an issuer with a path serves them under
 * it): the routes, the RFC 8414 metadata and the `aud` of client assertions use the same ones.
 */
export const OAUTH_PATHS = {
  introspection: '/oauth2/introspect',
  revocation: '/oauth2/revoke',
  token: '/oauth2/token',
  jwks: '/.well-known/jwks.json',
  metadata: '/.well-known/oauth-authorization-server',
} as const;

/** An endpoint's URL under `issuer` (which has no trailing slash: config checks it). */
export const endpointUrl = (issuer: string, path: string): string => `${issuer}${path}`;
