import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** TLS material for the verifier's outbound calls: a CA to trust, and a client certificate for mTLS. */
export interface TlsOptions {
  ca?: string | Buffer | Array<string | Buffer>;
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A small HTTP(S) client over node:http (not fetch: a private CA and a client certificate need
 * an agent, and undici is not a dependency). Keep-alive: idle sockets are unref'd by Node and do
 * not hold the process open; `close()` drops them.
 */
export class HttpClient {
  private readonly http = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  private readonly https: HttpsAgent;

  constructor(
    tls: TlsOptions = {},
    private readonly timeoutMs = 5_000,
    private readonly maxBytes = 1 << 20,
  ) {
    this.https = new HttpsAgent({ keepAlive: true, maxSockets: 16, ...tls });
  }

  request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<HttpResponse> {
    const target = new URL(url);
    const secure = target.protocol === 'https:';
    if (!secure && target.protocol !== 'http:') return Promise.reject(new Error(`unsupported URL scheme ${target.protocol}`));
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(
        target,
        { method: init.method ?? 'GET', headers: init.headers, agent: secure ? this.https : this.http },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > this.maxBytes) req.destroy(new Error('response too large'));
            else chunks.push(chunk);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(init.body);
    });
  }

  close(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
