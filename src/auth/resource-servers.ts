import type { Attestor } from '../attestation/attestor.js';
import type { X509Evidence } from '../attestation/x509.js';
import type { Config } from '../config/schema.js';
import { InvalidClient } from '../errors.js';
import { CredentialSet } from './credential.js';

export type ResourceServer = Config['resource_servers'][number];

/**
 * The resource servers allowed to introspect and revoke tokens (RFC 7662 §2.1 requires caller
 * authentication, against token scanning). A caller proves it is one with a bearer credential
 * (its SHA-256 compared in constant time with each configured one; the config holds only the hash) or a client certificate whose
 * attested workload id is listed.
 */
export class ResourceServers {
  private readonly byCredential = new CredentialSet<ResourceServer>();
  private readonly byWorkload = new Map<string, ResourceServer>();

  constructor(
    servers: ResourceServer[],
    private readonly x509: Attestor<X509Evidence> | undefined,
  ) {
    for (const rs of servers) {
      if (rs.credential_sha256) this.byCredential.add(rs.credential_sha256, rs);
      if (rs.workload) this.byWorkload.set(rs.workload, rs);
    }
  }

  /** The calling resource server, or 401 invalid_client (introspection requires one). */
  async authenticate(call: Caller): Promise<ResourceServer> {
    const rs = await this.find(call, true);
    if (!rs) throw new InvalidClient('authenticate as a resource server: a client certificate or a bearer credential');
    return rs;
  }

  /**
   * The calling resource server, if the caller is one. A bearer credential must be a listed one
   * (else 401); without one, a client certificate is tried. A certificate that is no listed
   * resource server's is left to the caller (a token's holder may present its own to revoke),
   * unless `strict`; any other error (a store or attestor fault) always propagates.
   */
  async find(call: Caller, strict = false): Promise<ResourceServer | undefined> {
    if (call.bearer !== undefined) {
      const rs = this.byCredential.match(call.bearer);
      if (!rs) throw new InvalidClient('the bearer credential is not one of a resource server');
      return rs;
    }
    if (!call.certificate || !this.x509 || this.byWorkload.size === 0) return undefined;
    try {
      const workload = await this.x509.attest(call.certificate);
      const rs = this.byWorkload.get(workload.id);
      if (!rs) throw new InvalidClient(`workload ${workload.id} is not a resource server allowed to call this endpoint`);
      return rs;
    } catch (e) {
      if (strict || !(e instanceof InvalidClient)) throw e;
      return undefined;
    }
  }
}

type Caller = { bearer?: string; certificate?: X509Evidence };
