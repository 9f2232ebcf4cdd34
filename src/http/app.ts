import { Hono, type Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Broker, CallContext } from '../broker.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { errorResponse, json } from './errors.js';
import { readJson } from './body.js';
import { wellKnownRoutes } from './routes/well-known.js';
import { healthRoutes, type ReadinessCheck } from './routes/health.js';
import type { Keyring } from '../tokens/keyring.js';

export interface AppDeps {
  config: Config;
  broker: Broker;
  keyring: Keyring;
  log: Logger;
  readiness: ReadinessCheck[];
  /** Extra routes (dev mode mounts its demo token endpoint here). */
  extend?: (app: Hono) => void;
}

/** Transport facts about the caller; mTLS evidence joins here in the x509 issue. */
function callContext(c: Context): CallContext {
  let remoteAddress: string | undefined;
  try {
    remoteAddress = getConnInfo(c).remote.address;
  } catch {
    remoteAddress = undefined; // not served by node-server (app.request in tests)
  }
  return remoteAddress ? { remoteAddress } : {};
}

export function createApp(deps: AppDeps): Hono {
  const { broker, config, log } = deps;
  const app = new Hono();

  app.onError((err, c) => errorResponse(err, c, log));
  app.notFound((c) => json(404, { error: 'not_found', error_description: `no route for ${c.req.method} ${c.req.path}` }));

  app.post('/v1/tasks', async (c) => {
    const body = await readJson(c, config.http.max_body_bytes);
    const result = await broker.startTask(body, callContext(c));
    return json(201, result);
  });

  wellKnownRoutes(app, { config, keyring: deps.keyring });
  healthRoutes(app, deps.readiness);
  deps.extend?.(app);
  return app;
}
