import { readFileSync } from 'node:fs';
import { createHash, createPublicKey, timingSafeEqual, type JsonWebKey } from 'node:crypto';
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import type { Attestor } from '../attestation/attestor.js';
import type { X509Evidence } from '../attestation/x509.js';
import { clientJwksSchema, type Config } from '../config/schema.js';
import { ConfigError, InvalidClient } from '../errors.js';
import { verifyClientAssertion, type AssertionCheck } from './client-assertion.js';
import type { ClientAuthMethod, PresentedClient } from './client-auth.js';
import { CredentialSet } from './credential.js';

export type ResourceServer = Config['resource_servers'][number];

/** An authenticated resource server and how it authenticated (for the log and metrics; never the credential). */
export interface AuthenticatedClient {
  rs: ResourceServer;
  method: ClientAuthMethod;
}

/** What checking a client assertion needs besides the keys (auth/client-assertion.ts). */
export type AssertionContext = Omit<AssertionCheck, 'keysOf'>;

/**
 * The auth methods a resource server can use, from what it registered (config): the metadata
 * (RFC 8414) lists their union, so it advertises what is registered and nothing else.
 */
export function methodsOf(rs: ResourceServer, mtls: boolean): ClientAuthMethod[] {
  return [
    ...(rs.credential_sha256 !== undefined ? (['client_secret_basic', 'client_secret_post', 'bearer'] as const) : []),
    ...(rs.jwks !== undefined || rs.jwks_file !== undefined ? (['private_key_jwt'] as const) : []),
    ...(rs.workload !== undefined && mtls ? (['tls_client_auth'] as const) : []),
  ];
}

/**
 * The resource servers allowed to introspect and revoke tokens (RFC 7662 §2.1 requires caller
 * authentication, against token scanning). Each is an OAuth client whose client_id is its name;
 * it authenticates by any method it registered (methodsOf). Credentials are compared by SHA-256
 * in constant time (the config holds only the hash); certificates by their attested workload id.
 */
export class ResourceServers {
  private readonly byCredential = new CredentialSet<ResourceServer>();
  private readonly byWorkload = new Map<string, ResourceServer>();
  private readonly byName = new Map<string, { rs: ResourceServer; secretHash?: Buffer; keys?: JWTVerifyGetKey }>();

  constructor(
    servers: ResourceServer[],
    private readonly x509: Attestor<X509Evidence> | undefined,
  ) {
    servers.forEach((rs, i) => {
      if (rs.credential_sha256) this.byCredential.add(rs.credential_sha256, rs);
      if (rs.workload) this.byWorkload.set(rs.workload, rs);
      const jwks = rs.jwks_file !== undefined ? readJwksFile(rs.jwks_file, i) : rs.jwks;
      if (jwks) checkImportable(jwks, rs.jwks_file !== undefined ? `resource_servers.${i}.jwks_file: ${rs.jwks_file}` : `resource_servers.${i}.jwks`);
      this.byName.set(rs.name, {
        rs,
        ...(rs.credential_sha256 ? { secretHash: Buffer.from(rs.credential_sha256, 'hex') } : {}),
        ...(jwks ? { keys: createLocalJWKSet(jwks as JSONWebKeySet) } : {}),
      });
    });
  }

  /** Whether `clientId` is a resource server's name. */
  has(clientId: string): boolean {
    return this.byName.has(clientId);
  }

  /**
   * The resource server `client` authenticates as, or 401 invalid_client. Credentials that are
   * present but wrong are always refused: never read as no credentials.
   */
  async authenticate(client: PresentedClient, assertions: AssertionContext): Promise<AuthenticatedClient> {
    switch (client.method) {
      case 'client_secret_basic':
      case 'client_secret_post': {
        const entry = this.byName.get(client.clientId);
        // Hashed and compared even for an unknown client: the time taken tells nothing.
        const digest = createHash('sha256').update(client.secret).digest();
        const ok = timingSafeEqual(entry?.secretHash ?? DUMMY_HASH, digest) && entry?.secretHash !== undefined;
        if (!ok || !entry)
          throw new InvalidClient('client authentication failed: unknown client_id or wrong client secret', client.method === 'client_secret_basic' ? { challenge: 'Basic' } : undefined);
        return { rs: entry.rs, method: client.method };
      }
      case 'bearer': {
        const rs = this.byCredential.match(client.credential);
        if (!rs) throw new InvalidClient('the bearer credential is not one of a resource server');
        return { rs, method: 'bearer' };
      }
      case 'private_key_jwt': {
        const name = await verifyClientAssertion(client.assertion, client.clientId, { ...assertions, keysOf: (id) => this.byName.get(id)?.keys });
        return { rs: this.byName.get(name)!.rs, method: 'private_key_jwt' };
      }
      case 'tls_client_auth': {
        if (!this.x509 || this.byWorkload.size === 0) throw new InvalidClient('no resource server authenticates with a client certificate here');
        const workload = await this.x509.attest(client.certificate);
        const rs = this.byWorkload.get(workload.id);
        if (!rs) throw new InvalidClient(`workload ${workload.id} is not a resource server allowed to call this endpoint`);
        if (client.clientId !== undefined && client.clientId !== rs.name) throw new InvalidClient('client_id is not the client of this certificate');
        return { rs, method: 'tls_client_auth' };
      }
    }
  }
}

const DUMMY_HASH = Buffer.alloc(32);

/** Every key of a client JWK set must be a usable public key: found at start, not at the first assertion. */
function checkImportable(jwks: { keys: object[] }, where: string): void {
  jwks.keys.forEach((jwk, k) => {
    try {
      createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } catch {
      throw new ConfigError([`${where}: keys.${k}: not a valid public JWK`]);
    }
  });
}

/** A resource server's jwks_file, read once at start: a file that is not a client JWK set stops the start. */
function readJwksFile(path: string, index: number): { keys: object[] } {
  const where = `resource_servers.${index}.jwks_file`;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`${where}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError([`${where}: ${path} is not JSON`]);
  }
  const parsed = clientJwksSchema.safeParse(json);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => `${where}: ${path}: ${i.path.join('.') || '(root)'}: ${i.message}`));
  return parsed.data;
}
