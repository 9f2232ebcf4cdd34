import type { AddressInfo } from 'node:net';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { getRequestListener, RequestError } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Attestor, Evidence } from './attestation/attestor.js';
import { createOidcAttestor } from './attestation/oidc/index.js';
import { createX509Attestor, MAX_PRESENTED_CERTIFICATES, x509ConfigSchema, type X509Evidence } from './attestation/x509.js';
import { operatorSubjectMappings } from './auth/operators.js';
import { Broker } from './broker.js';
import type { Config } from './config/schema.js';
import { configWarnings } from './config/warnings.js';
import { createMemoryGrantStore } from './grants/memory-store.js';
import { redisConnectionFromConfig } from './grants/redis-connection.js';
import { createRedisGrantStore } from './grants/redis-store.js';
import type { GrantStore } from './grants/store.js';
import { createApp } from './http/app.js';
import { json } from './http/errors.js';
import { createClientCertSource } from './http/client-cert.js';
import type { ReadinessCheck } from './http/routes/health.js';
import type { Logger } from './log.js';
import { Policy } from './policy/evaluate.js';
import { MAX_REQUEST_HEADER_BYTES } from './protocol/limits.js';
import { Keyring } from './tokens/keyring.js';
import { Metrics } from './metrics.js';
import { AuditTails, type TailOptions } from './operator/audit-log.js';
import { TlsMaterialWatcher, type TlsMaterial } from './tls/material.js';
import { keepPeerChains } from './tls/peer-chain.js';
import { systemClock, type Clock } from './util/clock.js';

export interface BrokerRuntime {
  app: Hono;
  broker: Broker;
  store: GrantStore;
  keyring: Keyring;
  /** This instance's Prometheus metrics (GET /metrics). */
  metrics: Metrics;
  /** The TLS files in use (reloading), when `tls` is configured. */
  tls: TlsMaterialWatcher | undefined;
  /** Base URL once listening. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface StartOptions {
  log: Logger;
  clock?: Clock;
  /** Dev mode mounts extra routes. */
  extend?: (app: Hono) => void;
  /** Live audit tails (GET /v1/audit/stream): poll and heartbeat intervals, streams per instance. */
  auditTails?: TailOptions;
  /** Use this store instead of building one from config (tests). */
  store?: GrantStore;
}

function buildStore(config: Config, log: Logger, metrics: Metrics): GrantStore {
  if (config.store.kind === 'memory') return createMemoryGrantStore({ log });
  return createRedisGrantStore({
    connection: redisConnectionFromConfig(config.store),
    keyPrefix: config.store.key_prefix,
    commandTimeoutMs: config.store.command_timeout,
    globalIndex: config.store.global_index,
    metrics,
    // Present with a redis store (config load checks it); createRedisGrantStore refuses none.
    keyPublicationSecrets: [config.tokens.key_publication_secret, config.tokens.key_publication_secret_accepted].filter((s): s is string => s !== undefined),
    log,
  });
}

/** Wires config into a running broker: store, attestors, policy, keys, HTTP. */
export async function startBroker(config: Config, opts: StartOptions): Promise<BrokerRuntime> {
  const { log } = opts;
  const clock = opts.clock ?? systemClock;
  // TLS files first: a missing or bad file is a config error before anything is opened.
  const tls = config.tls ? new TlsMaterialWatcher({ cert: config.tls.cert, key: config.tls.key, bundles: config.tls.client_ca_bundles }, log) : undefined;
  // A registry of this instance's own: brokers in one process (tests) never share counts.
  const metrics = new Metrics();
  const store = opts.store ?? buildStore(config, log, metrics);
  const attestors: Partial<Record<Evidence['kind'], Attestor>> = {};
  if (tls && tls.current.bundles.size > 0) {
    attestors.x509 = createX509Attestor(config.attestation.x509 ?? x509ConfigSchema.parse({}), { clock, log, tls }) as Attestor;
  }
  let oidc: ReturnType<typeof createOidcAttestor> | undefined;
  if (config.attestation.oidc) {
    oidc = createOidcAttestor(config.attestation.oidc, { clock, log });
    attestors.oidc = oidc as Attestor;
    await oidc.warm();
  }
  for (const warning of configWarnings(config)) log.warn(warning);
  const policy = new Policy(config.policies);
  const keyring = new Keyring({
    alg: config.tokens.algorithm,
    rotationMs: config.tokens.key_rotation,
    overlapMs: config.tokens.key_overlap,
    store,
    clock,
    log,
    auditRetentionMs: config.grants.audit_retention,
  });
  await keyring.start().catch((e: Error) => log.error({ err: e.message }, 'signing key could not be published; not ready'));
  // Operators' certificates get a validator of their own: the workloads' subject mappings are not
  // theirs, and theirs (auth/operators.ts) never reach a workload.
  const operatorX509 =
    tls && tls.current.bundles.size > 0 && config.operators.some((o) => o.spiffe_id !== undefined || o.subject !== undefined)
      ? (createX509Attestor(x509ConfigSchema.parse({ subjects: operatorSubjectMappings(config.operators) }), { clock, log, tls }) as Attestor<X509Evidence>)
      : undefined;
  metrics.observe({
    clock,
    signingKeyCreatedAt: () => keyring.currentKeyCreatedAt(),
    publishedKeys: async () => (await keyring.jwks()).keys.length,
    ...(oidc ? { issuers: () => oidc.status() } : {}),
  });
  const broker = new Broker({ config, store, policy, keyring, attestors, clock, log, metrics, ...(operatorX509 ? { operatorX509 } : {}) });
  const readiness: ReadinessCheck[] = [
    { name: 'store', check: () => store.ping().then(() => undefined) },
    { name: 'signing_key', check: () => keyring.notReady() },
    ...Object.values(attestors).map((a) => ({ name: `attestation_${a.kind}`, check: () => a.notReady() })),
    // A broker that can attest no one is not ready, whatever else works (config warning "attestation").
    ...(Object.keys(attestors).length === 0 ? [{ name: 'attestation', check: () => 'no attestation source is configured: no workload can be attested' }] : []),
  ];
  const clientCerts = attestors.x509 ? createClientCertSource({ forwarded: config.attestation.x509?.forwarded, log }) : undefined;
  const tails = new AuditTails(opts.auditTails);
  const app = createApp({ config, broker, keyring, log, readiness, metrics, operator: { config, store, keyring, clock, log, policy, tails, metrics }, ...(clientCerts ? { clientCerts } : {}), ...(opts.extend ? { extend: opts.extend } : {}) });

  let server: Server;
  try {
    server = await listen(app, config, tls?.current, log);
  } catch (e) {
    // Nothing may keep the process alive after a failed start.
    keyring.stop();
    broker.close();
    for (const a of Object.values(attestors)) await a.close?.();
    if (!opts.store) await store.close();
    throw e;
  }
  const { port } = server.address() as AddressInfo;
  const host = config.listen.host === '0.0.0.0' || config.listen.host === '::' ? '127.0.0.1' : config.listen.host;
  const https = Boolean(tls?.current.cert);
  const url = `${https ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (tls && config.tls) {
    // New bundles and server certificates apply to the next handshake; the in-process validator
    // reads tls.current on every request.
    if (https) tls.onChange((m) => (server as unknown as HttpsServer).setSecureContext(secureContextOptions(m)));
    tls.start(config.tls.reload_interval);
  }
  log.info({ url, store: store.kind, rules: policy.size, trust_domains: [...(tls?.current.bundles.keys() ?? [])] }, 'jit-broker listening');

  return {
    app,
    broker,
    store,
    keyring,
    metrics,
    tls,
    url,
    port,
    async close() {
      tls?.stop();
      keyring.stop();
      broker.close();
      await tails.close(); // live audit tails end their streams before the server closes the connections
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      for (const a of Object.values(attestors)) await a.close?.();
      if (!opts.store) await store.close();
    },
  };
}

/**
 * Client certificates are requested, never required (platform-token callers have none), and a
 * chain OpenSSL cannot verify still completes the handshake: the request is then refused with a
 * clear 401 by the same in-process validation the forwarded-header path uses.
 */
function secureContextOptions(m: TlsMaterial) {
  return {
    cert: m.cert,
    key: m.key,
    ...(m.caPem.length ? { ca: m.caPem } : {}),
    // Any bundle certificate is a trust anchor, as for SPIFFE bundles and the in-process validator
    // (Node 22.9+). OpenSSL's verdict is informational only: the in-process validator decides,
    // the same as for a forwarded certificate (src/attestation/x509.ts).
    allowPartialTrustChain: true,
  };
}

/** Listens as configured; a port in use or a bad address is a clear error, not a crash. */
function listen(app: Hono, config: Config, tls: TlsMaterial | undefined, log: Logger): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    const timeout = config.http.request_timeout;
    // Slow or stalled requests (slow-loris) are cut off: Node answers 408 and closes. A TLS
    // handshake that never completes is cut off as soon (Node's own default is 120 s).
    const timeouts = { requestTimeout: timeout, headersTimeout: Math.min(timeout, 5000), connectionsCheckingInterval: Math.min(1000, timeout) };
    // A request hono cannot even build (a bad Host or target) is a JSON 400 like every other;
    // so is an HTTP/1.1 request without Host (Node's own check would answer an empty one).
    // HTTP/1.0 has no Host to require (health checkers send none): it reads as the listen address.
    const fetchListener = getRequestListener(app.fetch, { hostname: config.listen.host, errorHandler: (e) => requestError(e, log) });
    const listener = (req: IncomingMessage, res: ServerResponse) => {
      if (req.httpVersion !== '1.0' && req.headers.host === undefined) return refuse(res, 'the request has no Host header');
      return fetchListener(req, res);
    };
    // The header limit is set, not inherited from --max-http-header-size: task tokens are sized to fit it.
    const node = { ...timeouts, requireHostHeader: false, maxHeaderSize: MAX_REQUEST_HEADER_BYTES };
    let s: Server;
    if (tls?.cert) {
      const https = createHttpsServer({ ...node, handshakeTimeout: timeout, ...secureContextOptions(tls), requestCert: tls.bundles.size > 0, rejectUnauthorized: false }, listener);
      if (tls.bundles.size > 0) keepPeerChains(https, MAX_PRESENTED_CERTIFICATES);
      s = https as unknown as Server;
    } else {
      s = createHttpServer(node, listener);
    }
    s.on('clientError', answerClientError);
    const onError = (e: NodeJS.ErrnoException) => {
      const where = `${config.listen.host}:${config.listen.port}`;
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use (choose another port: listen.port, PORT or --port)' : e.message;
      reject(new StartError(`cannot listen on ${where}: ${why}`));
    };
    s.once('error', onError);
    s.listen(config.listen.port, config.listen.host, () => {
      // A connection's client certificate is read once and kept for its requests, so it must
      // not change under them: no TLS 1.2 renegotiation (TLS 1.3 has none).
      s.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation());
      s.off('error', onError); // only start-up errors are ours to turn into a StartError
      resolve(s);
    });
  });
}

function refuse(res: ServerResponse, description: string): void {
  res.writeHead(400, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ error: 'invalid_request', error_description: description }));
}

/** A request the adapter cannot build is the client's fault (400); anything else is ours (500, logged). */
function requestError(e: unknown, log: Logger): Response {
  if (e instanceof RequestError) return json(400, { error: 'invalid_request', error_description: 'the request line or Host header cannot be read' });
  log.error({ err: e instanceof Error ? e.message : String(e) }, 'request failed before the app');
  return json(500, { error: 'server_error', error_description: 'internal error' });
}

/** What Node's HTTP parser refuses, answered in the JSON error contract (Node's own answers have no body). */
const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'the request was not received within the time allowed'],
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'the request headers are too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'Payload Too Large', 'the chunk extensions are too large'],
};

/**
 * Replaces Node's bare reply to a request its parser refuses (malformed, headers too large,
 * too slow) with a JSON one, then closes the connection. Nothing is logged: the bytes are the
 * client's, and may hold a token.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // As Node does: answer only when no response has begun on this connection, then close it.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent: boolean } })._httpMessage;
  if (err.code !== 'ECONNRESET' && socket.writable && !inFlight?.headersSent) {
    const [status, reason, description] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'Bad Request', 'the request is not valid HTTP/1.1'];
    const body = JSON.stringify({ error: 'invalid_request', error_description: description });
    socket.write(`HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

/** The broker could not start for a reason the operator can fix (printed without a stack). */
export class StartError extends Error {
  override name = 'StartError';
}
