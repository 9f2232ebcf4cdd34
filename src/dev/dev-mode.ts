import type { Hono } from 'hono';
import { parseConfig } from '../config/load.js';
import type { ConfigInput } from '../config/schema.js';
import type { Logger } from '../log.js';
import { startBroker, type BrokerRuntime } from '../server.js';
import { freePort } from '../util/net.js';
import { startOidcIssuer, type OidcIssuer } from './oidc-issuer.js';

export const DEV_AUDIENCE = 'jit-broker';
export const DEV_CLUSTER = 'dev';

export interface DevMode {
  broker: BrokerRuntime;
  issuer: OidcIssuer;
  /** A copy-paste shell command that obtains a task token from this broker. */
  curl: string;
  close(): Promise<void>;
}

/** The demo config: memory store, the local demo issuer, one demo rule. */
export function devConfig(issuerUrl: string, port: number): ConfigInput {
  return {
    issuer: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'memory' },
    attestation: {
      oidc: {
        issuers: [
          {
            issuer: issuerUrl,
            audiences: [DEV_AUDIENCE],
            algorithms: ['ES256'],
            mapping: { preset: 'kubernetes', cluster: DEV_CLUSTER },
          },
        ],
      },
    },
    policies: [
      {
        name: 'demo-reports',
        description: 'demo workloads may read and write demo reports',
        workloads: [`k8s://${DEV_CLUSTER}/ns/demo/sa/*`],
        audiences: ['reports-api'],
        actions: ['read', 'write'],
        resources: ['reports://demo/**'],
        max_ttl: '10m',
        max_lifetime: '1h',
      },
    ],
  };
}

/**
 * Dev mode: needs nothing but Node. A real local OIDC issuer plays the Kubernetes API server,
 * and GET /dev/platform-token hands out a fresh demo service-account token so the printed curl
 * never embeds a token in the terminal history.
 */
export async function startDevMode(opts: { port?: number; log: Logger }): Promise<DevMode> {
  const issuer = await startOidcIssuer({ alg: 'ES256' });
  const port = opts.port && opts.port > 0 ? opts.port : opts.port === 0 ? await freePort() : 8080;
  const config = parseConfig(devConfig(issuer.issuer, port));
  const extend = (app: Hono) => {
    app.get('/dev/platform-token', async () => {
      const token = await issuer.mintServiceAccountToken({
        cluster: DEV_CLUSTER,
        namespace: 'demo',
        serviceAccount: 'report-builder',
        pod: 'report-builder-7d9f',
        audience: DEV_AUDIENCE,
        ttlSeconds: 600,
      });
      return new Response(token, { headers: { 'content-type': 'text/plain', 'cache-control': 'no-store' } });
    });
  };
  const broker = await startBroker(config, { log: opts.log, extend }).catch(async (e: unknown) => {
    await issuer.close();
    throw e;
  });
  const body = `{"attestation":{"kind":"oidc","token":"'"$(curl -s ${broker.url}/dev/platform-token)"'"},"intent":{"audience":"reports-api","actions":["read"],"resources":["reports://demo/2026-q4"],"purpose":"build the quarterly report"},"ttl":"5m"}`;
  const curl = `curl -s -X POST ${broker.url}/v1/tasks -H 'content-type: application/json' -d '${body}'`;
  return {
    broker,
    issuer,
    curl,
    async close() {
      await broker.close();
      await issuer.close();
    },
  };
}
