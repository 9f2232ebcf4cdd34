import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCA, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';

/** A scratch directory for PEM files, removed by `cleanup`. */
export function scratchDir(prefix = 'jit-pki-'): { dir: string; write(name: string, text: string): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    write(name, text) {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The test PKI: two trust domains with bundles, a CA nobody trusts, and the broker's server certificate. */
export interface TestPki {
  example: Credential;
  other: Credential;
  unknown: Credential;
  server: Credential;
}

export async function createTestPki(): Promise<TestPki> {
  const example = await createCA({ trustDomain: 'example.org' });
  const other = await createCA({ trustDomain: 'other.org' });
  const unknown = await createCA({ trustDomain: 'example.org', commonName: 'unknown CA' });
  const server = await issueCertificate(example, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
  return { example, other, unknown, server };
}

export interface TlsResponse {
  status: number;
  json: Record<string, any>;
  headers: Record<string, string | string[] | undefined>;
}

/** One HTTPS request on a fresh connection (no session reuse), optionally with a client certificate. */
export function httpsJson(
  url: string,
  opts: { ca: string; method?: string; body?: unknown; cert?: string; key?: string; headers?: Record<string, string> },
): Promise<TlsResponse> {
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        agent: false,
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: Record<string, any>;
          try {
            json = JSON.parse(text) as Record<string, any>;
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, json, headers: res.headers });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Envoy's XFCC value for a chain: `Hash` of the leaf, URL-encoded PEM `Cert` and `Chain`. */
export function xfcc(cred: { certPem: string; chainPem: string }, extra = ''): string {
  return `Hash=00;Cert="${encodeURIComponent(cred.certPem)}";Chain="${encodeURIComponent(cred.chainPem)}"${extra}`;
}
