import type { Hono } from 'hono';
import { json } from '../errors.js';
import { readForm } from '../body.js';
import type { RouteDeps } from '../call-context.js';
import { OAUTH_PATHS } from '../../protocol/endpoints.js';

/** RFC 7662 introspection and RFC 7009 revocation, for resource servers (and a token's holder). */
export function oauthRoutes(app: Hono, deps: RouteDeps): void {
  const { broker, maxBodyBytes, callContext } = deps;

  app.post(OAUTH_PATHS.introspection, async (c) => {
    const params = await readForm(c, maxBodyBytes);
    return json(200, await broker.introspect(params, callContext(c)));
  });

  app.post(OAUTH_PATHS.revocation, async (c) => {
    const params = await readForm(c, maxBodyBytes);
    await broker.revoke(params, callContext(c));
    // RFC 7009 §2.2: 200 whether or not the token was known; the body carries nothing.
    return json(200, {});
  });
}
