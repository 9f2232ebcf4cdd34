import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hono } from 'hono';
import { newCredential } from '../auth/credential.js';
import { parseConfig } from '../config/load.js';
import type { ConfigInput } from '../config/schema.js';
import type { Logger } from '../log.js';
import { startBroker, type BrokerRuntime } from '../server.js';
import { freePort } from '../util/net.js';
import { createCA, issueCertificate } from './dev-ca.js';
import { startOidcIssuer, type OidcIssuer } from './oidc-issuer.js';

export const DEV_AUDIENCE = 'jit-broker';
export const DEV_CLUSTER = 'dev';
export const DEV_TRUST_DOMAIN = 'example.org';
/** The demo workload's and the demo agent's service accounts (GET /dev/platform-token, `?as=agent`). */
const DEV_WORKLOAD = { namespace: 'demo', serviceAccount: 'report-builder', pod: 'report-builder-7d9f' };
const DEV_AGENT = { namespace: 'agents', serviceAccount: 'report-agent', pod: 'report-agent-5c2a' };
export const DEV_AGENT_ID = `k8s://${DEV_CLUSTER}/ns/${DEV_AGENT.namespace}/sa/${DEV_AGENT.serviceAccount}`;
export const DEV_SPIFFE_ID = `spiffe://${DEV_TRUST_DOMAIN}/ns/demo/sa/report-builder`;
export const DEV_OPERATOR = 'demo-operator';
/** The demo resource server: may introspect and revoke tokens of the demo audience. */
export const DEV_RESOURCE_SERVER = 'demo-reports-api';
export const DEV_RS_AUDIENCE = 'reports-api';

/** Where dev mode wrote its CA, server and demo workload certificates. */
export interface DevCertificates {
  dir: string;
  ca: string;
  cert: string;
  key: string;
  workloadCert: string;
  workloadKey: string;
}

export interface DevMode {
  broker: BrokerRuntime;
  issuer: OidcIssuer;
  /** A copy-paste shell command that obtains a task token with a demo platform token. */
  curl: string;
  /** The same over mTLS with the demo workload's X.509-SVID (a certificate-bound token). */
  curlMtls: string;
  /** The demo operator (role admin): its random credential, made at start and held only in memory. */
  operator: { name: string; credential: string };
  /** A copy-paste command listing grants as the demo operator. */
  curlOperator: string;
  /**
   * The demo resource server (audience reports-api): its random bearer credential for
   * introspection and revocation, made at start and held only in memory, like the operator's.
   */
  resourceServer: { name: string; audience: string; credential: string };
  certificates: DevCertificates;
  close(): Promise<void>;
}

/** The demo config: memory store, HTTPS with the dev CA, the local demo issuer, one demo rule. */
export function devConfig(issuerUrl: string, port: number, certs: DevCertificates, operatorSha256?: string, resourceServerSha256?: string): ConfigInput {
  return {
    issuer: `https://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    store: { kind: 'memory' },
    tls: { cert: certs.cert, key: certs.key, client_ca_bundles: { [DEV_TRUST_DOMAIN]: certs.ca } },
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
    ...(resourceServerSha256
      ? { resource_servers: [{ name: DEV_RESOURCE_SERVER, audiences: [DEV_RS_AUDIENCE], credential_sha256: resourceServerSha256 }] }
      : {}),
    ...(operatorSha256 ? { operators: [{ name: DEV_OPERATOR, role: 'admin' as const, credential_sha256: operatorSha256 }] } : {}),
    policies: [
      {
        name: 'demo-reports',
        description: 'demo workloads may read and write demo reports',
        workloads: [`k8s://${DEV_CLUSTER}/ns/demo/sa/*`, `spiffe://${DEV_TRUST_DOMAIN}/ns/demo/sa/*`],
        audiences: [DEV_RS_AUDIENCE],
        actions: ['read', 'write'],
        resources: ['reports://demo/**'],
        max_ttl: '10m',
        max_lifetime: '1h',
        // The demo agent may act for the demo workloads (RFC 8693 delegation at /oauth2/token).
        actors: [DEV_AGENT_ID],
      },
      {
        name: 'demo-agent',
        description: 'the demo agent itself may only read demo reports',
        workloads: [DEV_AGENT_ID],
        audiences: [DEV_RS_AUDIENCE],
        actions: ['read'],
        resources: ['reports://demo/**'],
        max_ttl: '5m',
        max_lifetime: '30m',
      },
    ],
  };
}

/** A fresh dev CA (trust domain example.org), a server certificate for 127.0.0.1/localhost and a demo SVID. */
export async function writeDevCertificates(): Promise<DevCertificates> {
  const dir = mkdtempSync(join(tmpdir(), 'jit-broker-dev-'));
  const ca = await createCA({ trustDomain: DEV_TRUST_DOMAIN });
  const server = await issueCertificate(ca, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
  const workload = await issueCertificate(ca, { uris: [DEV_SPIFFE_ID] });
  const write = (name: string, text: string, mode = 0o644) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode });
    return path;
  };
  return {
    dir,
    ca: write('ca.pem', ca.certPem),
    cert: write('server.pem', server.chainPem),
    key: write('server-key.pem', server.keyPem, 0o600),
    workloadCert: write('workload.pem', workload.chainPem),
    workloadKey: write('workload-key.pem', workload.keyPem, 0o600),
  };
}

/**
 * Dev mode: needs nothing but Node. It serves HTTPS with a fresh dev CA (files in a temp dir,
 * removed at exit); a real local OIDC issuer plays the Kubernetes API server, and
 * GET /dev/platform-token hands out a fresh demo service-account token so the printed curl never
 * embeds a token in the terminal history. A demo workload SVID shows the mTLS path.
 */
export async function startDevMode(opts: { port?: number; log: Logger }): Promise<DevMode> {
  const issuer = await startOidcIssuer({ alg: 'ES256' });
  const port = opts.port && opts.port > 0 ? opts.port : opts.port === 0 ? await freePort() : 8080;
  const certs = await writeDevCertificates();
  // The demo operator's and resource server's credentials are random per start: only their
  // hashes are in the config.
  const operator = newCredential();
  const resourceServer = newCredential();
  const config = parseConfig(devConfig(issuer.issuer, port, certs, operator.sha256, resourceServer.sha256));
  const extend = (app: Hono) => {
    // ?as=agent: the demo agent's token instead of the demo workload's (for the delegation example).
    app.get('/dev/platform-token', async (c) => {
      const who = c.req.query('as') === 'agent' ? DEV_AGENT : DEV_WORKLOAD;
      const token = await issuer.mintServiceAccountToken({
        cluster: DEV_CLUSTER,
        ...who,
        audience: DEV_AUDIENCE,
        ttlSeconds: 600,
      });
      return new Response(token, { headers: { 'content-type': 'text/plain', 'cache-control': 'no-store' } });
    });
  };
  const broker = await startBroker(config, { log: opts.log, extend }).catch(async (e: unknown) => {
    await issuer.close();
    rmSync(certs.dir, { recursive: true, force: true });
    throw e;
  });
  const tls = `--cacert '${certs.ca}'`;
  const intent = `"intent":{"audience":"reports-api","actions":["read"],"resources":["reports://demo/2026-q4"],"purpose":"build the quarterly report"},"ttl":"5m"`;
  const body = `{"attestation":{"kind":"oidc","token":"'"$(curl -s ${tls} ${broker.url}/dev/platform-token)"'"},${intent}}`;
  const curl = `curl -s ${tls} -X POST ${broker.url}/v1/tasks -H 'content-type: application/json' -d '${body}'`;
  const curlMtls = `curl -s ${tls} --cert '${certs.workloadCert}' --key '${certs.workloadKey}' -X POST ${broker.url}/v1/tasks -H 'content-type: application/json' -d '{${intent}}'`;
  const curlOperator = `curl -s ${tls} -H 'Authorization: Bearer ${operator.credential}' '${broker.url}/v1/grants?status=active&limit=20'`;
  return {
    broker,
    issuer,
    curl,
    curlMtls,
    operator: { name: DEV_OPERATOR, credential: operator.credential },
    curlOperator,
    resourceServer: { name: DEV_RESOURCE_SERVER, audience: DEV_RS_AUDIENCE, credential: resourceServer.credential },
    certificates: certs,
    async close() {
      await broker.close();
      await issuer.close();
      rmSync(certs.dir, { recursive: true, force: true });
    },
  };
}
