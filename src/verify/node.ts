import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { ClientCertificate } from './binding.js';
import { challenge, InvalidTaskToken, MissingTaskToken } from './errors.js';
import type { Verifier, VerifiedTask, VerifyOptions } from './verifier.js';

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
}

/**
 * For node:http and Express: `(req) => Promise<VerifiedTask>` reading the bearer token and, over
 * TLS, the peer certificate for cnf. Rejects with a TaskTokenError; `sendChallenge` answers it.
 */
export function createNodeVerifier(verifier: Verifier, opts: NodeVerifyOptions = {}): (req: IncomingMessage) => Promise<VerifiedTask> {
  return async (req) => {
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) throw new MissingTaskToken();
    const resource = typeof opts.resource === 'function' ? await opts.resource(req) : opts.resource;
    const clientCertificate = opts.clientCertificate ? opts.clientCertificate(req) : peerCertificate(req);
    return verifier.verify(token, {
      ...(opts.action !== undefined ? { action: opts.action } : {}),
      ...(resource !== undefined ? { resource } : {}),
      ...(clientCertificate ? { clientCertificate } : {}),
    });
  };
}

/** Answers a failed verification: 401/403 with RFC 6750 WWW-Authenticate, 503, or a bare 500. */
export function sendChallenge(res: ServerResponse, err: unknown, opts: { realm?: string } = {}): void {
  const c = challenge(err, opts);
  res.writeHead(c.status, { ...c.headers, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(c.body));
}
