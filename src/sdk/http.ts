import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { AbortedError, BrokerUnreachableError } from './errors.js';

/** TLS material of a request: the CA that verifies the server, and a client certificate for mTLS. */
export interface TlsOptions {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: string | Uint8Array | undefined;
  tls?: TlsOptions | undefined;
  /** A keep-alive agent (a task's), or none: a fresh connection closed after the answer. */
  agent?: HttpAgent | HttpsAgent | undefined;
  signal?: AbortSignal | undefined;
  /** Abandons the request when no answer came within this long (default 30 s). */
  timeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A network failure; `mayHaveArrived` when the request may have reached the server before it. */
export class NetworkError extends BrokerUnreachableError {
  constructor(
    message: string,
    readonly mayHaveArrived: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Bodies the client reads at most (broker answers are a few KiB; a resource's answer may be larger). */
const MAX_BODY = 64 * 1024 * 1024;

/** One HTTP(S) request over node:http(s), with the given TLS material; rejects on abort. */
export function send(req: HttpRequest): Promise<HttpResponse> {
  const { signal } = req;
  if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason));
  const https = req.url.protocol === 'https:';
  if (!https && req.url.protocol !== 'http:') return Promise.reject(new NetworkError(`unsupported URL scheme ${req.url.protocol}`, false));
  return new Promise<HttpResponse>((resolve, reject) => {
    let connected = false;
    let settled = false;
    const finish = (err: Error | undefined, res?: HttpResponse) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(res!);
    };
    const body = typeof req.body === 'string' ? Buffer.from(req.body) : req.body;
    const options = {
      method: req.method,
      headers: { ...req.headers, ...(body ? { 'content-length': String(body.byteLength) } : {}) },
      agent: req.agent ?? false,
      timeout: req.timeoutMs ?? 30_000,
      ...(https && req.tls ? { ...(req.tls.ca ? { ca: req.tls.ca } : {}), ...(req.tls.cert ? { cert: req.tls.cert, key: req.tls.key } : {}) } : {}),
    };
    const r = (https ? httpsRequest : httpRequest)(req.url, options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_BODY) {
          r.destroy(new NetworkError('response body too large', true));
          return;
        }
        chunks.push(d);
      });
      res.on('end', () => {
        // Without a keep-alive agent the connection served this one request: close it now, so
        // nothing stays open after the answer (a process using the client exits by itself).
        if (!req.agent) r.destroy();
        finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', (e) => finish(new NetworkError(`connection failed while reading the answer: ${e.message}`, true, { cause: e })));
    });
    r.on('socket', (s) => {
      if (!s.connecting && !(s as { encrypted?: boolean }).encrypted) connected = true;
      s.once(https ? 'secureConnect' : 'connect', () => (connected = true));
      // A reused keep-alive socket is connected already.
      if (https && (s as { authorized?: boolean }).authorized) connected = true;
    });
    r.on('timeout', () => r.destroy(new NetworkError('no answer in time', true)));
    r.on('error', (e) => {
      if (e instanceof AbortedError || e instanceof NetworkError) return finish(e);
      finish(new NetworkError(`request to ${req.url.origin} failed: ${e.message}`, connected, { cause: e }));
    });
    const onAbort = () => {
      const err = new AbortedError(signal?.reason);
      r.destroy(err);
      finish(err);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    r.end(body);
  });
}

/** Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date; ms, or undefined. */
export function retryAfterMs(value: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
