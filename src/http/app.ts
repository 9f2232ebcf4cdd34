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
import type { ClientCertSource } from './client-cert.js';

export interface AppDeps {
  config: Config;
  broker: Broker;
  keyring: Keyring;
  log: Logger;
  readiness: ReadinessCheck[];
  /** Client-certificate evidence (handshake or trusted proxy header), when x509 attestation is on. */
  clientCerts?: ClientCertSource;
  /** Extra routes (dev mode mounts its demo token endpoint here). */
  extend?: (app: Hono) => void;
}

/** Transport facts about the caller: its address and, when enabled, its client certificate. */
function callContext(c: Context, clientCerts: ClientCertSource | undefined): CallContext {
  let remoteAddress: string | undefined;
  try {
    remoteAddress = getConnInfo(c).remote.address;
  } catch {
    remoteAddress = undefined; // not served by node-server (app.request in tests)
  }
  const socket = (c.env as { incoming?: { socket?: unknown } } | undefined)?.incoming?.socket;
  const certificate = clientCerts?.evidence(socket, remoteAddress, (name) => c.req.header(name));
  return { ...(remoteAddress ? { remoteAddress } : {}), ...(certificate ? { certificate } : {}) };
}

export function createApp(deps: AppDeps): Hono {
  const { broker, config, log } = deps;
  const app = new Hono();

  app.onError((err, c) => errorResponse(err, c, log));
  app.notFound((c) => json(404, { error: 'not_found', error_description: `no route for ${c.req.method} ${c.req.path}` }));

  app.post('/v1/tasks', async (c) => {
    const body = await readJson(c, config.http.max_body_bytes);
    const result = await broker.startTask(body, callContext(c, deps.clientCerts));
    return json(201, result);
  });

  wellKnownRoutes(app, { config, keyring: deps.keyring, boundTokens: Boolean(deps.clientCerts) });
  healthRoutes(app, deps.readiness);
  deps.extend?.(app);
  return app;
}
