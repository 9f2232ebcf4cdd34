/**
 * A real local OIDC issuer over HTTP for dev mode and tests: discovery + JWKS on loopback, tokens
 * minted with an in-memory key, and switches to make it fail (down, slow, garbage) plus helpers
 * that forge the classic bad tokens (alg none, HS256 keyed with the public key, foreign key).
 */
import { createHmac, randomUUID, webcrypto } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { Clock } from '../util/clock.js';

export type IssuerAlg = 'ES256' | 'RS256';
/**
 * ok: serve normally; down: HTTP 500; slow: answer only after 10 s (or never, if closed first);
 * garbage: 200 with a body that is not JSON; private: the JWKS leaks the private key members.
 */
export type IssuerMode = 'ok' | 'down' | 'slow' | 'garbage' | 'private';

export interface MintOptions {
  /** Lifetime from iat; default 600 s. */
  ttlSeconds?: number;
  /** Issued-at (seconds); default now from the issuer's clock. */
  iat?: number;
  /** Header kid; default the current key's; null leaves it out (issuers with a single key may). */
  kid?: string | null;
  /** Header typ; default "JWT"; null leaves it out (as Kubernetes does). */
  typ?: string | null;
  /** Header alg; default the key's algorithm (must suit the key). */
  alg?: string;
  /** Leave out exp. */
  noExp?: boolean;
}

export interface ServiceAccountTokenOptions {
  /** Only documents which cluster the token is for: real service-account tokens do not carry it. */
  cluster?: string;
  namespace: string;
  serviceAccount: string;
  pod?: string;
  node?: string;
  audience: string | string[];
  ttlSeconds?: number;
  iat?: number;
}

export interface GitHubTokenOptions {
  /** "owner/repo" */
  repository: string;
  /** default refs/heads/main (ignored for the sub when environment or pullRequest is set) */
  ref?: string;
  environment?: string;
  pullRequest?: boolean;
  audience: string | string[];
  sha?: string;
  workflow?: string;
  actor?: string;
  eventName?: string;
  runId?: string;
  ttlSeconds?: number;
  iat?: number;
  /** Extra or overriding claims. */
  claims?: Record<string, unknown>;
}

export interface OidcIssuer {
  /** http://HOST:PORT[/path] — the exact `iss` of every token minted here. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** The port it listens on (the one picked when started with port 0). */
  readonly port: number;
  readonly alg: IssuerAlg;
  /** kid of the current signing key. */
  readonly kid: string;
  /** JWKS fetches served (any mode). */
  readonly requests: number;
  /** Discovery document fetches served (any mode). */
  readonly discoveryRequests: number;
  /** The public key set the JWKS endpoint serves (in mode ok). */
  jwks(): { keys: JWK[] };
  mint(claims: Record<string, unknown>, opts?: MintOptions): Promise<string>;
  mintServiceAccountToken(opts: ServiceAccountTokenOptions): Promise<string>;
  mintGitHubToken(opts: GitHubTokenOptions): Promise<string>;
  /** New signing key and kid; the JWKS serves old and new unless dropOld. Returns the new kid. */
  rotateKey(opts?: { dropOld?: boolean }): Promise<string>;
  setMode(mode: IssuerMode): void;
  /** alg "none", no signature. */
  forgeNone(claims: Record<string, unknown>, opts?: MintOptions): string;
  /** HS256 with the issuer's public key (SPKI PEM bytes) as the HMAC secret: alg confusion. */
  forgeHs256WithPublicKey(claims: Record<string, unknown>, opts?: MintOptions): Promise<string>;
  /** Signed by a key that is not in the JWKS but under the current kid: a bad signature. */
  mintWithForeignKey(claims: Record<string, unknown>, opts?: MintOptions): Promise<string>;
  /**
   * The raw JWS signature over `input` (the exact `header.payload` text, however it was made), by
   * the key with this kid (default the current one): for hand-crafted tokens whose segments no
   * JOSE library would produce (padding, duplicate members, non-canonical base64url).
   */
  signRaw(input: string, kid?: string): Promise<Buffer>;
  close(): Promise<void>;
}

interface KeyEntry {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
  privateJwk: JWK;
}

const SLOW_MS = 10_000;

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

export async function startOidcIssuer(
  opts: {
    alg?: IssuerAlg;
    host?: string;
    port?: number;
    clock?: Clock;
    /** Issuer path, e.g. "/tenantA": discovery and JWKS are served under it, as for a tenant of a shared host. */
    path?: string;
    /** The issuer URL as its clients reach it (e.g. http://demo-issuer:9000 in compose); default from host and port. */
    publicUrl?: string;
    /** The first signing key, a private JWK with its kid (a demo issuer that keeps its key across restarts); default a new one. */
    signingKey?: JWK;
    /** More routes: called first for every request; true when it answered. */
    handle?: (req: IncomingMessage, res: ServerResponse) => boolean;
  } = {},
): Promise<OidcIssuer> {
  const alg = opts.alg ?? 'ES256';
  const base = opts.path ?? '';
  const host = opts.host ?? '127.0.0.1';
  const clock = opts.clock ?? Date.now;

  const newKey = async (): Promise<KeyEntry> => {
    const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
    const kid = randomUUID();
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
    const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
    return { kid, privateKey, publicKey, publicJwk, privateJwk };
  };

  const fromJwk = async (jwk: JWK): Promise<KeyEntry> => {
    if (typeof jwk.kid !== 'string' || jwk.alg !== alg || typeof jwk.d !== 'string') throw new Error(`signingKey must be a private ${alg} JWK with a kid`);
    const { d: _d, ...pub } = jwk;
    const privateKey = (await importJWK(jwk, alg, { extractable: true })) as CryptoKey;
    const publicKey = (await importJWK(pub, alg, { extractable: true })) as CryptoKey;
    return { kid: jwk.kid, privateKey, publicKey, publicJwk: { ...(await exportJWK(publicKey)), kid: jwk.kid, alg, use: 'sig' }, privateJwk: jwk };
  };

  let keys: KeyEntry[] = [opts.signingKey ? await fromJwk(opts.signingKey) : await newKey()];
  const current = () => keys[keys.length - 1] as KeyEntry;
  let foreign: KeyEntry | undefined;
  let mode: IssuerMode = 'ok';
  let requests = 0;
  let discoveryRequests = 0;
  const timers = new Set<NodeJS.Timeout>();

  let issuer = '';
  let jwksUri = '';

  const respond = (res: ServerResponse, status: number, body: string, type = 'application/json') => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };

  const serve = (req: IncomingMessage, res: ServerResponse) => {
    if (opts.handle?.(req, res)) return;
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const isDiscovery = path === `${base}/.well-known/openid-configuration`;
    const isJwks = path === `${base}/jwks.json`;
    if (req.method !== 'GET' || (!isDiscovery && !isJwks)) return respond(res, 404, '{"error":"not_found"}');
    if (isJwks) requests++;
    else discoveryRequests++;
    const body = () =>
      isDiscovery
        ? JSON.stringify({
            issuer,
            jwks_uri: jwksUri,
            response_types_supported: ['id_token'],
            subject_types_supported: ['public'],
            id_token_signing_alg_values_supported: [alg],
            claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'],
          })
        : JSON.stringify({ keys: keys.map((k) => (mode === 'private' ? k.privateJwk : k.publicJwk)) });
    switch (mode) {
      case 'down':
        return respond(res, 500, '{"error":"server_error"}');
      case 'garbage':
        return respond(res, 200, '{"keys": [ this is not json');
      case 'slow': {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!res.destroyed) respond(res, 200, body());
        }, SLOW_MS);
        timers.add(timer);
        return;
      }
      default:
        return respond(res, 200, body());
    }
  };

  const server = createServer(serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  issuer = opts.publicUrl ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}${base}`;
  jwksUri = `${issuer}/jwks.json`;

  const nowSeconds = () => Math.floor(clock() / 1000);

  const baseClaims = (claims: Record<string, unknown>, o: MintOptions = {}) => {
    const iat = o.iat ?? nowSeconds();
    const payload: Record<string, unknown> = { iss: issuer, iat, exp: iat + (o.ttlSeconds ?? 600), ...claims };
    if (o.noExp) delete payload.exp;
    return payload;
  };

  const header = (o: MintOptions, key: KeyEntry, defaultAlg: string) => {
    const h: Record<string, unknown> = { alg: o.alg ?? defaultAlg };
    if (o.kid !== null) h.kid = o.kid ?? key.kid;
    if (o.typ !== null) h.typ = o.typ ?? 'JWT';
    return h;
  };

  const sign = (key: KeyEntry, claims: Record<string, unknown>, o: MintOptions = {}) =>
    new SignJWT(baseClaims(claims, o)).setProtectedHeader(header(o, key, alg) as { alg: string }).sign(key.privateKey);

  const hmacToken = (h: Record<string, unknown>, payload: Record<string, unknown>, secret: string) => {
    const input = `${b64url(h)}.${b64url(payload)}`;
    return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
  };

  const mint = (claims: Record<string, unknown>, o?: MintOptions) => sign(current(), claims, o);

  const result: OidcIssuer = {
    issuer,
    jwksUri,
    port,
    alg,
    get kid() {
      return current().kid;
    },
    get requests() {
      return requests;
    },
    get discoveryRequests() {
      return discoveryRequests;
    },
    jwks: () => ({ keys: keys.map((k) => k.publicJwk) }),
    mint,
    mintServiceAccountToken(o) {
      const iat = o.iat ?? nowSeconds();
      const k8s: Record<string, unknown> = {
        namespace: o.namespace,
        serviceaccount: { name: o.serviceAccount, uid: randomUUID() },
      };
      if (o.pod) k8s.pod = { name: o.pod, uid: randomUUID() };
      if (o.node) k8s.node = { name: o.node, uid: randomUUID() };
      return mint(
        {
          aud: o.audience,
          sub: `system:serviceaccount:${o.namespace}:${o.serviceAccount}`,
          nbf: iat,
          jti: randomUUID(),
          'kubernetes.io': k8s,
        },
        { iat, ttlSeconds: o.ttlSeconds ?? 3600, typ: null },
      );
    },
    mintGitHubToken(o) {
      const [owner = ''] = o.repository.split('/');
      const ref = o.ref ?? 'refs/heads/main';
      const sub = o.environment
        ? `repo:${o.repository}:environment:${o.environment}`
        : o.pullRequest
          ? `repo:${o.repository}:pull_request`
          : `repo:${o.repository}:ref:${ref}`;
      const iat = o.iat ?? nowSeconds();
      return mint(
        {
          aud: o.audience,
          sub,
          jti: randomUUID(),
          nbf: iat,
          repository: o.repository,
          repository_owner: owner,
          repository_id: '123456789',
          repository_owner_id: '987654',
          repository_visibility: 'private',
          ref,
          ref_type: ref.startsWith('refs/tags/') ? 'tag' : 'branch',
          sha: o.sha ?? 'a'.repeat(40),
          workflow: o.workflow ?? 'deploy',
          job_workflow_ref: `${o.repository}/.github/workflows/deploy.yml@${ref}`,
          event_name: o.eventName ?? (o.pullRequest ? 'pull_request' : 'push'),
          run_id: o.runId ?? '4242',
          run_number: '7',
          run_attempt: '1',
          actor: o.actor ?? 'octocat',
          runner_environment: 'github-hosted',
          ...(o.environment ? { environment: o.environment } : {}),
          ...o.claims,
        },
        { iat, ttlSeconds: o.ttlSeconds ?? 300 },
      );
    },
    async rotateKey(o = {}) {
      const next = await newKey();
      keys = o.dropOld ? [next] : [...keys, next];
      return next.kid;
    },
    setMode(m) {
      mode = m;
    },
    forgeNone(claims, o = {}) {
      const h: Record<string, unknown> = { alg: 'none' };
      if (o.typ !== null) h.typ = o.typ ?? 'JWT';
      return `${b64url(h)}.${b64url(baseClaims(claims, o))}.`;
    },
    async forgeHs256WithPublicKey(claims, o = {}) {
      const pem = await exportSPKI(current().publicKey);
      return hmacToken({ ...header(o, current(), 'HS256'), alg: 'HS256' }, baseClaims(claims, o), pem);
    },
    async mintWithForeignKey(claims, o = {}) {
      foreign ??= await newKey();
      return sign(foreign, claims, { ...o, kid: o.kid === undefined ? current().kid : o.kid });
    },
    async signRaw(input, kid) {
      const key = kid === undefined ? current() : keys.find((k) => k.kid === kid);
      if (!key) throw new Error(`no key with kid ${kid}`);
      const algorithm = alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5' };
      return Buffer.from(await webcrypto.subtle.sign(algorithm, key.privateKey, Buffer.from(input, 'ascii')));
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return result;
}
