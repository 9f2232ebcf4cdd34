import { request } from 'node:https';
import type { CustomFetch } from 'openid-client';

/**
 * openid-client's customFetch over node:https, trusting the test CA and presenting a client
 * certificate when given one (what an undici Agent with `connect: { ca, cert, key }` does; undici
 * itself is not a dependency). A fresh connection per request: no TLS session is reused between
 * identities.
 */
export function httpsFetch(tls: { ca: string; cert?: string; key?: string }): CustomFetch {
  return (url, options) =>
    new Promise<Response>((resolve, reject) => {
      const body = options.body === undefined || options.body === null ? undefined : bodyText(options.body);
      const req = request(url, { method: options.method, headers: options.headers, ca: tls.ca, cert: tls.cert, key: tls.key, agent: false, timeout: 10_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, v);
          }
          const status = res.statusCode ?? 0;
          resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers }));
        });
        res.on('error', reject);
      });
      options.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')));
      req.on('timeout', () => req.destroy(new Error('request timed out')));
      req.on('error', reject);
      req.end(body);
    });
}

function bodyText(body: NonNullable<Parameters<CustomFetch>[1]['body']>): string | Buffer {
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('httpsFetch: streamed bodies are not used by these tests');
}
