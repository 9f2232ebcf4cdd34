/**
 * The peer: oidc-provider (v9, the certified Node OAuth server) issuing client_credentials access
 * tokens as JWTs signed ES256, run as its own process so its CPU can be read like the broker's.
 * One confidential client (client_secret_post or basic), one resource server (RFC 8707 resource
 * indicator) whose tokens are JWTs (RFC 9068), the default memory adapter. JWT access tokens are
 * not stored anywhere: issuing one is authenticate the client, resolve the resource, sign.
 *
 * Usage: node --import tsx bench/peer-server.ts <port>   (env PEER_CLIENT_SECRET: the client's secret)
 */
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';
import { PEER_AUDIENCE, PEER_CLIENT_ID, PEER_RESOURCE, PEER_SCOPE } from './peer-shared.js';

const port = Number(process.argv[2]);
const secret = process.env.PEER_CLIENT_SECRET;
if (!Number.isInteger(port) || !secret) throw new Error('usage: peer-server.ts <port> (with PEER_CLIENT_SECRET set)');

// An ES256 signing key made at start, as our broker makes its own.
const { privateKey } = await generateKeyPair('ES256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'peer-es256', alg: 'ES256', use: 'sig' };

const resourceServer = { scope: PEER_SCOPE, audience: PEER_AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 300, jwt: { sign: { alg: 'ES256' } } };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: PEER_CLIENT_ID,
      client_secret: secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: PEER_SCOPE,
    },
  ],
  jwks: { keys: [jwk] },
  // The only key is ES256, so every client signs with it (the default would be RS256).
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: [PEER_SCOPE],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => PEER_RESOURCE,
      useGrantedResource: () => false,
      getResourceServerInfo: (_ctx: unknown, indicator: string) => {
        if (indicator !== PEER_RESOURCE) throw new Error(`unknown resource ${indicator}`);
        return resourceServer;
      },
    },
  },
  ttl: { ClientCredentials: 300 }, // five minutes, our default task-token TTL
  cookies: { keys: ['bench-only-cookie-key'] }, // unused here; set so that it does not warn
});
provider.on('server_error', (_ctx: unknown, err: unknown) => console.error('peer server_error', err));

const server = provider.listen(port, '127.0.0.1', () => console.error(`peer oidc-provider listening on ${port}`));
const close = () => {
  server.close(() => process.exit(0));
  (server as { closeAllConnections?: () => void }).closeAllConnections?.(); // idle keep-alive connections too
};
process.once('SIGTERM', close);
process.once('SIGINT', close);
