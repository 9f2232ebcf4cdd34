import { X509Certificate, createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { AbortedError, AttestationSourceError } from './errors.js';
import { send } from './http.js';

/** A client certificate as a task holds it: PEMs, its expiry and its RFC 8705 thumbprint. */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** The CA bundle that verifies the broker (and resource servers) over TLS. */
  ca?: string | undefined;
  /** The leaf certificate's notAfter, ms since the epoch. */
  notAfter: number;
  /** base64url SHA-256 of the leaf's DER: the token's `cnf.x5t#S256`. */
  thumbprint: string;
}

/** Evidence by mTLS: the client certificate on the connection. */
export interface MtlsSource {
  kind: 'mtls';
  /** The certificate as on disk now (re-read when its files changed). */
  material(): Promise<TlsMaterial>;
}

/** Evidence by a platform identity token (Kubernetes projected token, GitHub Actions, any OIDC token). */
export interface PlatformTokenSource {
  kind: 'platform';
  token(signal?: AbortSignal): Promise<string>;
}

export type AttestationSource = MtlsSource | PlatformTokenSource;

/**
 * A client certificate and key from files (a SPIFFE helper's X.509-SVID, cert-manager's secret),
 * re-read whenever a file's size, mtime or inode changes. `ca` verifies the broker's certificate.
 */
export function mtls(files: { cert: string; key: string; ca?: string }): MtlsSource {
  let cached: { stamp: string; material: TlsMaterial } | undefined;
  const paths = [files.cert, files.key, ...(files.ca ? [files.ca] : [])];
  return {
    kind: 'mtls',
    async material() {
      try {
        const stamps = await Promise.all(paths.map(async (p) => {
          const s = await stat(p);
          return `${s.ino}:${s.size}:${s.mtimeMs}`;
        }));
        const stamp = stamps.join('|');
        if (cached?.stamp === stamp) return cached.material;
        const [cert, key, ca] = await Promise.all(paths.map((p) => readFile(p, 'utf8')));
        const leaf = new X509Certificate(cert!);
        const material: TlsMaterial = {
          cert: cert!,
          key: key!,
          ...(ca !== undefined ? { ca } : {}),
          notAfter: Date.parse(leaf.validTo),
          thumbprint: createHash('sha256').update(leaf.raw).digest('base64url'),
        };
        cached = { stamp, material };
        return material;
      } catch (e) {
        throw new AttestationSourceError(`cannot read the client certificate files: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
    },
  };
}

/**
 * A platform token: from a file, re-read on every attestation (Kubernetes rotates projected
 * tokens), or from a function called on every attestation.
 */
export function platformToken(from: { file: string } | ((signal?: AbortSignal) => Promise<string>)): PlatformTokenSource {
  if (typeof from === 'function') {
    return {
      kind: 'platform',
      async token(signal) {
        let t: unknown;
        try {
          t = await from(signal);
        } catch (e) {
          throw new AttestationSourceError(`the platform token function failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
        }
        if (typeof t !== 'string' || t.trim() === '') throw new AttestationSourceError('the platform token function returned no token');
        return t.trim();
      },
    };
  }
  return {
    kind: 'platform',
    async token() {
      let t: string;
      try {
        t = (await readFile(from.file, 'utf8')).trim();
      } catch (e) {
        throw new AttestationSourceError(`cannot read the platform token file ${from.file}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      if (t === '') throw new AttestationSourceError(`the platform token file ${from.file} is empty`);
      return t;
    },
  };
}

/**
 * A GitHub Actions OIDC token for `audience` (the broker's), fetched on every attestation from
 * ACTIONS_ID_TOKEN_REQUEST_URL with ACTIONS_ID_TOKEN_REQUEST_TOKEN (the job needs
 * `permissions: id-token: write`).
 */
export function githubActions(opts: { audience: string; env?: NodeJS.ProcessEnv }): PlatformTokenSource {
  return {
    kind: 'platform',
    async token(signal) {
      const env = opts.env ?? process.env;
      const base = env['ACTIONS_ID_TOKEN_REQUEST_URL'];
      const bearer = env['ACTIONS_ID_TOKEN_REQUEST_TOKEN'];
      if (!base || !bearer) throw new AttestationSourceError('ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: give the job `permissions: id-token: write`');
      const url = new URL(`${base}${base.includes('?') ? '&' : '?'}audience=${encodeURIComponent(opts.audience)}`);
      let res;
      try {
        res = await send({ method: 'GET', url, headers: { authorization: `Bearer ${bearer}`, accept: 'application/json' }, signal });
      } catch (e) {
        if (e instanceof AbortedError) throw e;
        throw new AttestationSourceError(`cannot reach the GitHub Actions token endpoint: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
      if (res.status !== 200) throw new AttestationSourceError(`the GitHub Actions token endpoint answered ${res.status}`);
      let value: unknown;
      try {
        value = (JSON.parse(res.body.toString('utf8')) as { value?: unknown }).value;
      } catch {
        value = undefined;
      }
      if (typeof value !== 'string' || value === '') throw new AttestationSourceError('the GitHub Actions token endpoint answered no token');
      return value;
    },
  };
}
