import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { ClientCertificate } from './binding.js';
import { challenge, InvalidTaskToken, MissingTaskToken } from './errors.js';
import type { Verifier, VerifiedTask, VerifiedTxn, VerifyOptions } from './verifier.js';

/**
 * The bearer token of an `Authorization` header (RFC 6750 §2.1), or undefined when there is
 * none. Throws InvalidTaskToken when the header is not one well-formed Bearer credential.
 */
export function bearerToken(header: string | string[] | undefined | null): string | undefined {
  if (header === undefined || header === null || header === '') return undefined;
  if (Array.isArray(header)) throw new InvalidTaskToken('token_malformed', 'more than one Authorization header');
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (!m) {
    if (/^bearer\b/i.test(header)) throw new InvalidTaskToken('token_malformed', 'the Authorization header is not a well-formed Bearer credential');
    return undefined;
  }
  return m[1];
}

/**
 * The task token of an `Authorization` header and its scheme: `Bearer` (RFC 6750 §2.1) or `DPoP`
 * (RFC 9449 §7.1); undefined when there is none. Throws InvalidTaskToken when the header is not
 * one well-formed credential of either scheme.
 */
export function authorizationToken(header: string | string[] | undefined | null): { scheme: 'Bearer' | 'DPoP'; token: string } | undefined {
  if (typeof header === 'string' && /^DPoP(\s|$)/i.test(header)) {
    const m = /^DPoP +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
    if (!m) throw new InvalidTaskToken('token_malformed', 'the Authorization header is not a well-formed DPoP credential', { scheme: 'DPoP' });
    return { scheme: 'DPoP', token: m[1]! };
  }
  const token = bearerToken(header);
  return token === undefined ? undefined : { scheme: 'Bearer', token };
}

/**
 * What a DPoP-bound token is checked against (RFC 9449 §4.3): the one `DPoP` header, the method,
 * and the URL as clients address this server: `publicOrigin` (e.g. https://api.example.com) and
 * the request's path, never the Host header. Without `publicOrigin`, DPoP-bound tokens are refused.
 */
export function dpopRequest(proof: string | string[] | undefined, method: string, path: string, publicOrigin: string | undefined): VerifyOptions['dpop'] {
  if (publicOrigin === undefined) return undefined;
  if (Array.isArray(proof) || proof?.includes(',')) throw new InvalidTaskToken('token_malformed', 'more than one DPoP header', { scheme: 'DPoP' });
  // Concatenated, not resolved: a path such as //other.example/x must not name another host.
  return { proof, method, url: `${new URL(publicOrigin).origin}${path.startsWith('/') ? path : `/${path}`}` };
}

/** The TLS peer's certificate on a node:http(s) request, when the connection is TLS and one was presented. */
export function peerCertificate(req: IncomingMessage): ClientCertificate | undefined {
  const socket = req.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate(false);
  return cert && cert.raw && cert.raw.length > 0 ? { raw: cert.raw } : undefined;
}

export interface NodeVerifyOptions {
  action?: VerifyOptions['action'];
  /** The resource(s) of this request, or a function of the request (e.g. from its path). */
  resource?: VerifyOptions['resource'] | ((req: IncomingMessage) => VerifyOptions['resource'] | Promise<VerifyOptions['resource']>);
  /**
   * Where the client certificate comes from: by default the TLS peer of this connection. Behind a
   * TLS-terminating proxy, give a function that reads what the proxy forwards (and trust only it).
   */
  clientCertificate?: (req: IncomingMessage) => ClientCertificate | undefined | null;
  /** This server's origin as clients address it (e.g. https://api.example.com): the base of a DPoP proof's `htu`. */
  publicOrigin?: string;
}

/**
 * For node:http and Express: `(req) => Promise<VerifiedTask>` reading the bearer token and, over
 * TLS, the peer certificate for cnf. Rejects with a TaskTokenError; `sendChallenge` answers it.
 */
export function createNodeVerifier(verifier: Verifier, opts: NodeVerifyOptions = {}): (req: IncomingMessage) => Promise<VerifiedTask> {
  return async (req) => {
    const credential = authorizationToken(req.headers.authorization);
    if (credential === undefined) throw new MissingTaskToken();
    const resource = typeof opts.resource === 'function' ? await opts.resource(req) : opts.resource;
    const clientCertificate = opts.clientCertificate ? opts.clientCertificate(req) : peerCertificate(req);
    const dpop = dpopRequest(req.headers.dpop, req.method ?? 'GET', req.url ?? '/', opts.publicOrigin);
    return verifier.verify(credential.token, {
      scheme: credential.scheme,
      ...(dpop ? { dpop } : {}),
      ...(opts.action !== undefined ? { action: opts.action } : {}),
      ...(resource !== undefined ? { resource } : {}),
      ...(clientCertificate ? { clientCertificate } : {}),
    });
  };
}

/**
 * The Transaction Token of a `Txn-Token` header (exactly one, a bare JWT), or undefined when
 * there is none. Throws InvalidTaskToken when there are several or it is not a compact token.
 */
export function txnTokenHeader(header: string | string[] | undefined | null): string | undefined {
  if (header === undefined || header === null || header === '') return undefined;
  // node joins repeated unknown headers with ", ".
  if (Array.isArray(header) || header.includes(',')) throw new InvalidTaskToken('token_malformed', 'more than one Txn-Token header');
  const token = header.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new InvalidTaskToken('token_malformed', 'the Txn-Token header does not hold a compact JWT');
  return token;
}

/** For node:http and Express: `(req) => Promise<VerifiedTxn>` reading the `Txn-Token` header. Rejects with a TaskTokenError; `sendChallenge` answers it. */
export function createNodeTxnVerifier(verifier: Verifier): (req: IncomingMessage) => Promise<VerifiedTxn> {
  return async (req) => {
    const token = txnTokenHeader(req.headers['txn-token']);
    if (token === undefined) throw new MissingTaskToken('a Transaction Token is required (Txn-Token header)');
    return verifier.verifyTxnToken(token);
  };
}

/** Answers a failed verification: 401/403 with RFC 6750 WWW-Authenticate, 503, or a bare 500. */
export function sendChallenge(res: ServerResponse, err: unknown, opts: { realm?: string } = {}): void {
  const c = challenge(err, opts);
  res.writeHead(c.status, { ...c.headers, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(c.body));
}
