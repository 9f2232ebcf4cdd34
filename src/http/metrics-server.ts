import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import type { Logger } from '../log.js';
import { metricsHandler, type Metrics } from '../metrics.js';
import { json } from './errors.js';

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * `metrics.listen`: GET /metrics on a plain-HTTP listener of its own (a port the network can open
 * to Prometheus alone), and nothing else there; the main listener then does not serve it.
 */
export function listenMetrics(metrics: Metrics, at: { host: string; port: number }, log: Logger): Promise<MetricsServer> {
  const app = new Hono();
  app.get('/metrics', metricsHandler(metrics));
  app.notFound((c) => json(404, { error: 'not_found', error_description: `no route for ${c.req.method} ${c.req.path} (this listener serves GET /metrics only)` }));
  app.onError((err) => {
    log.error({ err: err instanceof Error ? err.message : String(err) }, 'metrics scrape failed');
    return json(500, { error: 'server_error', error_description: 'internal error' });
  });
  const server: Server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, getRequestListener(app.fetch));
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen for metrics on ${at.host}:${at.port}: ${e.code === 'EADDRINUSE' ? 'the address is already in use (choose another metrics.listen.port)' : e.message}`)),
    );
    server.listen(at.port, at.host, () => {
      const { port } = server.address() as AddressInfo;
      const host = at.host === '0.0.0.0' || at.host === '::' ? '127.0.0.1' : at.host;
      const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
      log.info({ url: `${url}/metrics` }, 'metrics listening');
      resolve({
        url,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
