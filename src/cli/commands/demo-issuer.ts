import { randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { z } from 'zod';
import { startOidcIssuer } from '../../dev/oidc-issuer.js';
import { onSignal } from '../signals.js';
import { listenHost, listenPort } from './serve.js';
import { UsageError, type Command } from '../usage.js';

/** Kubernetes names (DNS-1123 labels): what a namespace and a service account may be called. */
const dnsLabel = z.string().regex(/^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS-1123 label (lowercase letters, digits and -)');

/** GET /token's query: which demo service account the token is for. */
const tokenQuery = z
  .object({ namespace: dnsLabel.default('demo'), service_account: dnsLabel.default('report-builder') })
  .strict();

/** The key file: one private ES256 JWK with its kid (written by this command, read back on restart). */
const keyFileSchema = z.object({ kty: z.literal('EC'), crv: z.literal('P-256'), alg: z.literal('ES256'), kid: z.string().min(1), x: z.string(), y: z.string(), d: z.string() }).loose();

const TOKEN_TTL_SECONDS = 600;

/**
 * `jit-broker demo-issuer`: DEMO ONLY. The dev OIDC issuer as a service of its own, standing in
 * for a platform's issuer (a Kubernetes API server) where there is none, as in docker-compose.yml:
 * discovery and JWKS over HTTP, the key set also written to a file (a broker may fetch keys over
 * plain HTTP only from loopback, so across containers it reads the file), and GET /token, which
 * hands a signed service-account token to anyone who asks: never run it where a broker trusts it
 * for real workloads.
 */
export const demoIssuer: Command = {
  name: 'demo-issuer',
  help: `usage: jit-broker demo-issuer [--host ADDR] [--port N] [--issuer URL] [--audience AUD]
                              [--jwks-file FILE] [--key-file FILE]

DEMO ONLY: a stand-in for a platform's OIDC issuer (e.g. a Kubernetes API server) for trying a
broker without one, as docker-compose.yml does. It hands a signed token to anyone who can reach it:
never let a broker that serves real workloads trust it. Serves over plain HTTP:
  GET /.well-known/openid-configuration, GET /jwks.json   discovery and the public keys
  GET /token[?namespace=NS&service_account=SA]           a Kubernetes-style service-account token
      (default demo / report-builder) for the audience --audience, valid 10 minutes, as text
Stops on SIGTERM or SIGINT.

options:
      --host ADDR        listen address (default 127.0.0.1; 0.0.0.0 in a container)
  -p, --port N           listen port (default 9000; 0 picks a free one)
      --issuer URL       the issuer as its clients name it: the tokens' iss and the discovery
                         document's (default http://HOST:PORT)
      --audience AUD     the tokens' aud (default jit-broker)
      --jwks-file FILE   also write the public key set here (a broker's jwks_file)
      --key-file FILE    keep the signing key here: read it if it exists, else create it (mode
                         0600), so a restart keeps the key a broker already loaded
exit: 0 stopped cleanly, 1 could not start, 2 usage`,
  async run(args) {
    const { values } = parseArgs({
      args,
      options: {
        host: { type: 'string' },
        port: { type: 'string', short: 'p' },
        issuer: { type: 'string' },
        audience: { type: 'string' },
        'jwks-file': { type: 'string' },
        'key-file': { type: 'string' },
      },
      allowPositionals: false,
    });
    const host = listenHost(values.host) ?? '127.0.0.1';
    const port = listenPort(values.port) ?? 9000;
    const issuerUrl = values.issuer === undefined ? undefined : issuerOption(values.issuer);
    const audience = values.audience ?? 'jit-broker';
    if (audience.length === 0 || audience.length > 512) throw new UsageError('--audience must be 1 to 512 characters');
    const signingKey = values['key-file'] === undefined ? undefined : await loadOrCreateKey(values['key-file']);

    let mintFor: (q: z.infer<typeof tokenQuery>) => Promise<string> = () => Promise.reject(new Error('not started'));
    const handle = (req: IncomingMessage, res: ServerResponse): boolean => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname !== '/token') return false;
      const send = (status: number, body: string, type = 'application/json') => {
        res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(body);
      };
      if (req.method !== 'GET') {
        send(405, JSON.stringify({ error: 'invalid_request', error_description: 'GET /token only' }));
        return true;
      }
      const query = tokenQuery.safeParse(Object.fromEntries(url.searchParams));
      if (!query.success) {
        const first = query.error.issues[0]!;
        send(400, JSON.stringify({ error: 'invalid_request', error_description: `${first.path.join('.') || 'query'}: ${first.message}` }));
        return true;
      }
      mintFor(query.data).then(
        (token) => {
          process.stdout.write(`demo-issuer: minted a token for system:serviceaccount:${query.data.namespace}:${query.data.service_account}\n`);
          send(200, token, 'text/plain');
        },
        () => send(500, JSON.stringify({ error: 'server_error', error_description: 'could not sign the token' })),
      );
      return true;
    };

    const issuer = await startOidcIssuer({ alg: 'ES256', host, port, handle, ...(issuerUrl ? { publicUrl: issuerUrl } : {}), ...(signingKey ? { signingKey } : {}) });
    mintFor = (q) => issuer.mintServiceAccountToken({ namespace: q.namespace, serviceAccount: q.service_account, audience, ttlSeconds: TOKEN_TTL_SECONDS });
    if (values['jwks-file'] !== undefined) writeAtomically(values['jwks-file'], `${JSON.stringify(issuer.jwks(), null, 2)}\n`, 0o644);
    process.stdout.write(
      `jit-broker demo-issuer (DEMO ONLY: it signs a token for anyone who asks) listening on ${host}:${issuer.port}; issuer ${issuer.issuer}, audience ${audience}` +
        `${values['jwks-file'] !== undefined ? `, key set written to ${values['jwks-file']}` : ''}\n` +
        `  a demo service-account token: GET /token?namespace=demo&service_account=report-builder\n`,
    );
    onSignal(() => issuer.close());
    return -1;
  },
};

/** --issuer: an http(s) URL without query, fragment or credentials (what a broker config accepts as an issuer). */
function issuerOption(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError('--issuer must be an absolute http(s) URL, e.g. http://demo-issuer:9000');
  }
  if (!['http:', 'https:'].includes(url.protocol) || url.search || url.hash || value.includes('?') || value.includes('#') || url.username || url.password)
    throw new UsageError('--issuer must be an http(s) URL without query, fragment or credentials');
  return value.replace(/\/+$/, '');
}

/** The signing key from FILE, or a new one written there first (0600, never overwriting one that appeared meanwhile). */
async function loadOrCreateKey(path: string): Promise<JWK> {
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`--key-file ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (text !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const key = keyFileSchema.safeParse(parsed);
    if (!key.success) throw new UsageError(`--key-file ${path}: not a private ES256 JWK with a kid (remove it to make a new key)`);
    return key.data as JWK;
  }
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'ES256', use: 'sig' };
  writeFileSync(path, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
  return jwk;
}

/** Written beside, then renamed over: a reader never sees half a file. */
function writeAtomically(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, path);
}
