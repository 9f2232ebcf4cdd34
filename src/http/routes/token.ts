import type { Hono } from 'hono';
import { json } from '../errors.js';
import { readFormWith } from '../body.js';
import type { RouteDeps } from '../call-context.js';
import { TOKEN_ROUTE, tokenRequest } from '../../oauth/token-endpoint.js';
import { dpopHeader } from './tasks.js';

/** The OAuth token endpoint: RFC 8693 token exchange and client credentials over mTLS (oauth/token-endpoint.ts). */
export function tokenRoutes(app: Hono, deps: RouteDeps): void {
  const { broker, maxBodyBytes } = deps;

  // Every answer, errors included, carries the current nonce when nonces are on (RFC 9449 §8).
  app.use(TOKEN_ROUTE, async (c, next) => {
    await next();
    const nonce = broker.dpopNonce();
    if (nonce !== undefined) c.res.headers.set('DPoP-Nonce', nonce);
  });

  app.post(TOKEN_ROUTE, async (c) => {
    const proof = dpopHeader(c);
    const form = await readFormWith(c, maxBodyBytes, ['audience', 'resource']);
    const ctx = { ...deps.callContext(c), ...(proof !== undefined ? { dpop: proof } : {}) };
    // RFC 6749 §5.1: token responses are never cached (json() sets Cache-Control: no-store).
    return json(200, await tokenRequest(broker, form, ctx), { Pragma: 'no-cache' });
  });
}
