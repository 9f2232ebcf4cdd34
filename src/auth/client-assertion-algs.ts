/**
 * The JWS algorithms a resource server's private_key_jwt client assertion may be signed with:
 * asymmetric only (RFC 8725 §3.1; client_secret_jwt's HMAC would need the secret in clear here).
 * Advertised as the endpoints' `*_auth_signing_alg_values_supported` (RFC 8414 §2).
 */
export const CLIENT_ASSERTION_ALGS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA'] as const;
