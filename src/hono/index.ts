// jit-broker/hono: hono middleware over the resource-server verifier. Imports verify/ and protocol/ only.
import type { Context, MiddlewareHandler } from 'hono';
import type { TLSSocket } from 'node:tls';
import type { ClientCertificate } from '../verify/binding.js';
import { challenge, MissingTaskToken } from '../verify/errors.js';
import { authorizationToken, dpopRequest, txnTokenHeader } from '../verify/node.js';
import type { Verifier, VerifiedTask, VerifiedTxn, VerifyOptions } from '../verify/verifier.js';

/** The context variables requireTask sets: `c.get('task')`. */
export interface TaskVariables {
  task: VerifiedTask;
}

type Resource = VerifyOptions['resource'];

export interface RequireTaskOptions {
  verifier: Verifier;
  /** Action(s) this route performs. */
  action?: VerifyOptions['action'];
  /** Resource(s) this route acts on, or a function of the request, e.g. `(c) => \`db://orders/${c.req.param('id')}\``. */
  resource?: Resource | ((c: Context) => Resource | Promise<Resource>);
  /**
   * The client certificate for bound tokens. Default: the TLS peer certificate under
   * @hono/node-server (`c.env.incoming.socket`). Behind a TLS-terminating proxy, read what it forwards.
   */
  clientCertificate?: (c: Context) => ClientCertificate | undefined | null;
  /** `realm` of the WWW-Authenticate challenge. */
  realm?: string;
  /** This server's origin as clients address it (e.g. https://api.example.com): the base of a DPoP proof's `htu`. */
  publicOrigin?: string;
}

/** The TLS peer certificate under @hono/node-server, if the connection is TLS and one was presented. */
export function nodePeerCertificate(c: Context): ClientCertificate | undefined {
  const env = c.env as { incoming?: { socket?: Partial<TLSSocket> } } | undefined;
  const socket = env?.incoming?.socket;
  if (!socket || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate(false);
  return cert && cert.raw && cert.raw.length > 0 ? { raw: cert.raw } : undefined;
}

/**
 * Verifies the request's task token for this route and sets it on the context (`c.get('task')`).
 * Refuses with 401 (no or invalid token), 403 (intent not granted) and RFC 6750 WWW-Authenticate,
 * or 503 when the verifier cannot decide; the handler never runs then.
 */
export function requireTask(opts: RequireTaskOptions): MiddlewareHandler<{ Variables: TaskVariables }> {
  return async (c, next) => {
    let task: VerifiedTask;
    try {
      const credential = authorizationToken(c.req.header('authorization'));
      if (credential === undefined) throw new MissingTaskToken();
      const resource = typeof opts.resource === 'function' ? await opts.resource(c) : opts.resource;
      const clientCertificate = (opts.clientCertificate ?? nodePeerCertificate)(c);
      const url = new URL(c.req.url);
      const dpop = dpopRequest(c.req.header('dpop'), c.req.method, url.pathname, opts.publicOrigin);
      task = await opts.verifier.verify(credential.token, {
        scheme: credential.scheme,
        ...(dpop ? { dpop } : {}),
        ...(opts.action !== undefined ? { action: opts.action } : {}),
        ...(resource !== undefined ? { resource } : {}),
        ...(clientCertificate ? { clientCertificate } : {}),
      });
    } catch (err) {
      const answer = challenge(err, opts.realm !== undefined ? { realm: opts.realm } : {});
      return c.json(answer.body, answer.status, { ...answer.headers, 'cache-control': 'no-store' });
    }
    c.set('task', task);
    await next();
  };
}

/** The context variables requireTxnToken sets: `c.get('txn')`. */
export interface TxnVariables {
  txn: VerifiedTxn;
}

/**
 * Verifies the request's Transaction Token (the `Txn-Token` header; the verifier needs its
 * `trustDomain`) and sets it on the context (`c.get('txn')`). Refuses with 401 and a JSON error,
 * or 503 when the verifier cannot decide; the handler never runs then.
 */
export function requireTxnToken(opts: { verifier: Verifier; realm?: string }): MiddlewareHandler<{ Variables: TxnVariables }> {
  return async (c, next) => {
    let txn: VerifiedTxn;
    try {
      const token = txnTokenHeader(c.req.header('txn-token'));
      if (token === undefined) throw new MissingTaskToken('a Transaction Token is required (Txn-Token header)');
      txn = await opts.verifier.verifyTxnToken(token);
    } catch (err) {
      const answer = challenge(err, opts.realm !== undefined ? { realm: opts.realm } : {});
      return c.json(answer.body, answer.status, { ...answer.headers, 'cache-control': 'no-store' });
    }
    c.set('txn', txn);
    await next();
  };
}

export type { VerifiedTask, VerifiedTxn, Verifier } from '../verify/verifier.js';
