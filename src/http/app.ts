import { Hono } from 'hono';
import type { Broker } from '../broker.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { errorResponse, json } from './errors.js';
import { callContextOf, clientAddressOfContext } from './call-context.js';
import { requestLog } from './request-log.js';
import { metricsHandler, type Metrics } from '../metrics.js';
import { buildOpenApiDocument } from './openapi.js';
import { packageVersion } from '../util/package-version.js';
import { oauthRoutes } from './routes/oauth.js';
import { taskRoutes } from './routes/tasks.js';
import { tokenRoutes } from './routes/token.js';
import { operatorRoutes } from './routes/operator.js';
import type { OperatorDeps } from '../operator/deps.js';
import { issuerPath, wellKnownRoutes } from './routes/well-known.js';
import { healthRoutes, type ReadinessCheck } from './routes/health.js';
import type { Keyring } from '../tokens/keyring.js';
import { trustedProxyList, type ClientCertSource } from './client-cert.js';

export interface AppDeps {
  config: Config;
  broker: Broker;
  keyring: Keyring;
  log: Logger;
  readiness: ReadinessCheck[];
  /** This instance's metrics: served at GET /metrics, and request latencies recorded into them. */
  metrics?: Metrics;
  /** Client-certificate evidence (handshake or trusted proxy header), when x509 attestation is on. */
  clientCerts?: ClientCertSource;
  /** The operator service functions' dependencies (operator/): the operator API is mounted with them. */
  operator?: OperatorDeps;
  /** GET /metrics is served by a listener of its own (`metrics.listen`), not by this app. */
  metricsElsewhere?: boolean;
  /** Extra routes (dev mode mounts its demo token endpoint here). */
  extend?: (app: Hono) => void;
}

export function createApp(deps: AppDeps): Hono {
  const { broker, config, log } = deps;
  const app = new Hono();

  app.onError((err, c) => errorResponse(err, c, log));
  app.notFound((c) => json(404, { error: 'not_found', error_description: `no route for ${c.req.method} ${c.req.path}` }));

  // Only proxies the operator names for it are believed about the client's address, and those
  // trusted with the client's certificate: they are trusted for the X-Forwarded-For entry they
  // append too (else every client behind one would share its failure budget).
  const certProxies = deps.clientCerts ? (config.attestation.x509?.forwarded?.trusted_proxies ?? []) : [];
  const proxies = [...config.http.trusted_proxies, ...certProxies];
  const proxyList = proxies.length ? trustedProxyList(proxies) : undefined;
  const callContext = callContextOf(deps.clientCerts, proxyList);
  app.use('*', requestLog({ log, ...(deps.metrics ? { metrics: deps.metrics } : {}), clientAddress: (c) => clientAddressOfContext(c, proxyList) }));
  const routeDeps = { broker, maxBodyBytes: config.http.max_body_bytes, callContext };
  // Every route is served under the issuer's path, where the metadata says the endpoints are
  // (https://host/tenant → /tenant/oauth2/introspect); at the root when it has none.
  const path = issuerPath(config.issuer);
  const api = path ? app.basePath(path) : app;
  taskRoutes(api, routeDeps);
  oauthRoutes(api, routeDeps);
  tokenRoutes(api, routeDeps);
  if (deps.operator) operatorRoutes(api, routeDeps, deps.operator);

  wellKnownRoutes(api, { config, keyring: deps.keyring, boundTokens: Boolean(deps.clientCerts), root: app });
  // Health and metrics are the platform's, not the issuer's: at the root too (probes and scrapers
  // do not know the issuer's path).
  const metrics = deps.metrics;
  for (const at of path ? [api, app] : [app]) {
    healthRoutes(at, deps.readiness, log);
    if (metrics && !deps.metricsElsewhere) at.get('/metrics', metricsHandler(metrics));
  }
  // The document describes the routes registered here, its own included: built once, below.
  let openapi = '';
  api.get('/openapi.json', () => new Response(openapi, { headers: { 'content-type': 'application/json', 'cache-control': 'public, max-age=300' } }));
  deps.extend?.(api);
  openapi = JSON.stringify(buildOpenApiDocument(app.routes, { version: packageVersion(), serverUrl: config.issuer, basePath: path }));
  return app;
}
