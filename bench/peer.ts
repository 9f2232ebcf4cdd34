/**
 * The peer under the same load: oidc-provider's POST /token, client_credentials, answering a JWT
 * access token signed ES256 (bench/peer-server.ts in its own process). One token is checked
 * before the load: a JWT whose header says ES256 and at+jwt, for our audience.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { freePort } from '../src/util/net.js';
import { requestJson, withNodeChild } from './child.js';
import { CONNECTION_LEVELS, atLevel } from './config.js';
import { fixed, load, type Measured } from './load.js';
import { PEER_AUDIENCE, PEER_CLIENT_ID, PEER_RESOURCE, PEER_SCOPE } from './peer-shared.js';

export const PEER_VERSION = (JSON.parse(readFileSync('node_modules/oidc-provider/package.json', 'utf8')) as { version: string }).version;

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function checkToken(url: string, body: string): Promise<void> {
  const res = await requestJson(`${url}/token`, { method: 'POST', headers: FORM, body });
  const token = res.json.access_token;
  if (res.status !== 200 || typeof token !== 'string') throw new Error(`peer token request failed: ${res.status} ${res.text}`);
  const header = decodeProtectedHeader(token);
  const claims = decodeJwt(token);
  if (header.alg !== 'ES256' || header.typ !== 'at+jwt' || claims.aud !== PEER_AUDIENCE) {
    throw new Error(`peer token is not the JWT the bench expects: header ${JSON.stringify(header)}, aud ${JSON.stringify(claims.aud)}`);
  }
}

/** The peer's token endpoint at each of CONNECTION_LEVELS in turn (keys "peer@1", ..., "peer"), one peer process. */
export async function peerScenario(): Promise<Measured[]> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const secret = randomBytes(24).toString('base64url');
  const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: PEER_CLIENT_ID, client_secret: secret, scope: PEER_SCOPE, resource: PEER_RESOURCE }).toString();
  const child = { name: 'peer (oidc-provider)', url, readyPath: '/.well-known/openid-configuration', args: ['bench/peer-server.ts', String(port)], env: { PEER_CLIENT_SECRET: secret } };
  return withNodeChild(child, async (peer) => {
    await checkToken(url, body);
    const measured: Measured[] = [];
    for (const c of CONNECTION_LEVELS) {
      measured.push(
        await load({
          key: atLevel('peer', c),
          label: `peer: oidc-provider ${PEER_VERSION} POST /token (client_credentials, client_secret_post; JWT access token, ES256)`,
          connections: c,
          servers: [peer],
          cpu: [{ who: 'oidc-provider', pids: [peer.pid] }],
          traffic: fixed({ method: 'POST', path: '/token', headers: FORM, body, verifyBody: (b) => b.includes('"access_token"') }),
        }),
      );
    }
    return measured;
  });
}
