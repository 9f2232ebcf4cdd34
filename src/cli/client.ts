/**
 * The operator commands' client for a broker's operator API. Where to connect and as whom comes
 * from flags or the environment:
 *
 *   --url URL            JIT_URL                          the broker (https://… ; http:// only to loopback when a credential is sent)
 *   --credential-file F  JIT_OPERATOR_CREDENTIAL_FILE     bearer credential read from a file ("-" reads stdin)
 *                        JIT_OPERATOR_CREDENTIAL          bearer credential as text
 *   --credential VALUE                                    accepted, with a warning: argv is visible to every
 *                                                         local user (ps, /proc) and stays in shell history
 *   --cert F --key F     JIT_CERT JIT_KEY                 client certificate and key (mTLS operator)
 *   --ca F               JIT_CA                           CA bundle that verifies the broker's certificate
 *
 * The credential is sent only in the Authorization header: never printed, never in an error.
 * Requests use node:https rather than the global fetch, which cannot present a client certificate
 * without undici's Agent (not a dependency of ours, and Node's bundled copy is not importable).
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { UsageError } from './usage.js';

/** parseArgs options every operator command accepts. */
export const connectionOptions = {
  url: { type: 'string' },
  credential: { type: 'string' },
  'credential-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  ca: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const CONNECTION_HELP = `connection (flags, or the environment):
  --url URL              JIT_URL                       the broker, e.g. https://broker.internal:8443
  --credential-file F    JIT_OPERATOR_CREDENTIAL_FILE  operator bearer credential from a file ("-": stdin)
                         JIT_OPERATOR_CREDENTIAL       operator bearer credential (env, not argv)
  --credential VALUE     works, but prefer the two above: a command line is visible to every
                         local user (ps, /proc/PID/cmdline) and stays in shell history
  --cert F --key F       JIT_CERT, JIT_KEY             client certificate and key (mTLS operator)
  --ca F                 JIT_CA                        CA bundle for the broker's certificate
  --json                 print the broker's JSON instead of a table (for scripts)
The credential is never printed or logged; plain http:// is refused unless the broker is on loopback.`;

export interface ConnectionValues {
  url?: string | undefined;
  credential?: string | undefined;
  'credential-file'?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  ca?: string | undefined;
}

/** An error answer from the broker: its error_description is what the operator reads (exit 1). */
export class BrokerError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly description: string,
  ) {
    super(`${description} (${code}, HTTP ${status})`);
  }
}

function readFileOrFail(path: string, what: string): string {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

const LOOPBACK = (host: string) => host === 'localhost' || host === '[::1]' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

export interface Response {
  status: number;
  headers: IncomingMessage['headers'];
  text: string;
}

export class BrokerClient {
  private readonly base: URL;
  private readonly credential: string | undefined;
  private readonly tls: { cert?: string; key?: string; ca?: string };

  constructor(values: ConnectionValues, env: NodeJS.ProcessEnv = process.env, warn: (line: string) => void = (l) => process.stderr.write(`${l}\n`)) {
    const url = values.url ?? env.JIT_URL;
    if (!url) throw new UsageError('the broker URL is needed: --url URL or JIT_URL');
    let base: URL;
    try {
      base = new URL(url);
    } catch {
      throw new UsageError('--url (JIT_URL) must be an http(s) URL');
    }
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new UsageError('--url (JIT_URL) must be an http(s) URL');
    this.base = base;

    if (values.credential !== undefined) warn('jit-broker: warning: --credential puts the secret on the command line (visible in ps, kept in shell history); prefer JIT_OPERATOR_CREDENTIAL or --credential-file');
    const file = values['credential-file'] ?? env.JIT_OPERATOR_CREDENTIAL_FILE;
    const credential = values.credential ?? (values['credential-file'] !== undefined ? undefined : env.JIT_OPERATOR_CREDENTIAL);
    this.credential = (credential ?? (file !== undefined ? readFileOrFail(file, 'the credential file') : undefined))?.trim() || undefined;
    // eslint-disable-next-line no-control-regex -- refusing control characters is the point
    if (this.credential !== undefined && /[\s\u0000-\u001f\u007f]/.test(this.credential)) throw new UsageError('the operator credential must be one line without spaces');

    const cert = values.cert ?? env.JIT_CERT;
    const key = values.key ?? env.JIT_KEY;
    const ca = values.ca ?? env.JIT_CA;
    if ((cert === undefined) !== (key === undefined)) throw new UsageError('--cert and --key (JIT_CERT, JIT_KEY) go together');
    if (cert !== undefined && base.protocol !== 'https:') throw new UsageError('a client certificate needs an https:// broker URL');
    if (this.credential !== undefined && base.protocol === 'http:' && !LOOPBACK(base.hostname))
      throw new UsageError(`refusing to send the operator credential over plain http to ${base.host}: use https://`);
    if (this.credential === undefined && cert === undefined)
      throw new UsageError('operator credentials are needed: JIT_OPERATOR_CREDENTIAL, --credential-file FILE, or --cert/--key');
    this.tls = {
      ...(cert !== undefined ? { cert: readFileOrFail(cert, 'the certificate') } : {}),
      ...(key !== undefined ? { key: readFileOrFail(key, 'the key') } : {}),
      ...(ca !== undefined ? { ca: readFileOrFail(ca, 'the CA bundle') } : {}),
    };
  }

  /** The broker's URL without credentials (for messages). */
  get origin(): string {
    return this.base.origin;
  }

  private url(path: string, query: Record<string, string | number | undefined> = {}): URL {
    const u = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base.href : `${this.base.href}/`);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) u.searchParams.set(k, String(v));
    return u;
  }

  private options(method: string, headers: Record<string, string>): RequestOptions {
    return {
      method,
      headers: { accept: 'application/json', ...headers, ...(this.credential !== undefined ? { authorization: `Bearer ${this.credential}` } : {}) },
      ...(this.base.protocol === 'https:' ? { ...this.tls, agent: false } : {}),
    };
  }

  /** Opens a request and resolves with the response head (the body unread). */
  open(method: string, path: string, opts: { query?: Record<string, string | number | undefined>; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<IncomingMessage> {
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const url = this.url(path, opts.query);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, this.options(method, { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers }), resolve);
      if (opts.timeoutMs !== undefined) req.setTimeout(opts.timeoutMs, () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot reach the broker at ${this.origin}: ${e.code ?? e.message}`)));
      req.end(body);
    });
  }

  async request(method: string, path: string, opts: { query?: Record<string, string | number | undefined>; body?: unknown } = {}): Promise<Response> {
    const res = await this.open(method, path, { ...opts, timeoutMs: 30_000 });
    let text = '';
    res.setEncoding('utf8');
    for await (const chunk of res) text += chunk as string;
    const status = res.statusCode ?? 0;
    if (status >= 400) throw errorOf(status, text);
    return { status, headers: res.headers, text };
  }

  /** A JSON answer; a broker error throws BrokerError. */
  async json<T>(method: string, path: string, opts: { query?: Record<string, string | number | undefined>; body?: unknown } = {}): Promise<T> {
    const { text } = await this.request(method, path, opts);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new Error(`the broker at ${this.origin} answered ${path} with something that is not JSON`);
    }
  }
}

export function errorOf(status: number, text: string): BrokerError {
  try {
    const body = JSON.parse(text) as { error?: unknown; error_description?: unknown };
    if (typeof body.error === 'string')
      return new BrokerError(status, body.error, typeof body.error_description === 'string' ? body.error_description : body.error);
  } catch {
    // not JSON: fall through
  }
  return new BrokerError(status, 'http_error', status === 404 ? 'not found: this broker may not serve this operator route (an older version?)' : `HTTP ${status}`);
}

/** One Server-Sent Event (the fields jit-broker's stream uses). */
export interface SseEvent {
  id?: string;
  event: string;
  data: string;
}

/** Splits an SSE byte stream into events (WHATWG HTML "event stream interpretation"; comments and retry ignored). */
export async function* sseEvents(res: AsyncIterable<unknown>): AsyncGenerator<SseEvent> {
  let buffer = '';
  let data: string[] = [];
  let event = 'message';
  let id: string | undefined;
  for await (const chunk of res) {
    buffer += typeof chunk === 'string' ? chunk : (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (data.length > 0) yield { ...(id !== undefined ? { id } : {}), event, data: data.join('\n') };
        data = [];
        event = 'message';
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id' && !value.includes('\0')) id = value;
    }
  }
}
