import type { Attestor } from '../attestation/attestor.js';
import type { X509Evidence } from '../attestation/x509.js';
import { parseCertificate } from '../attestation/x509-chain.js';
import type { OperatorConfig } from '../config/schema.js';
import { AccessDenied, InvalidClient } from '../errors.js';
import { CredentialSet } from './credential.js';

export type OperatorRole = OperatorConfig['role'];

/** An authenticated operator: what every operator action and its audit event names. */
export interface Operator {
  name: string;
  role: OperatorRole;
  /** How it authenticated (for the log and the audit event; never the credential). */
  via: 'bearer' | 'mtls';
}

/** `admin` may do whatever `auditor` may, and revoke and rotate. */
const RANK: Record<OperatorRole, number> = { auditor: 1, admin: 2 };

/**
 * The workload id under which the operators' own X.509 attestor maps a subject-identified
 * operator's certificate (attestation.x509.subjects semantics). Never a workload id: the operator
 * attestor is not the workloads' one, and a certificate with a URI SAN never matches a subject
 * operator (see authenticate).
 */
export const operatorSubjectId = (trustDomain: string, index: number): string => `spiffe://${trustDomain}/jit-broker-operator/${index}`;

/** The operators' X.509 subject mappings, for their own attestor (server.ts). */
export function operatorSubjectMappings(operators: readonly OperatorConfig[]): { trust_domain: string; subject: string; workload: string }[] {
  return operators.flatMap((op, i) =>
    op.subject !== undefined && op.trust_domain !== undefined ? [{ trust_domain: op.trust_domain, subject: op.subject, workload: operatorSubjectId(op.trust_domain, i) }] : [],
  );
}

/**
 * The configured operators (config `operators`), a list of its own: a workload's task token or a
 * resource server's credential is no operator's, nor is a workload's certificate unless its
 * SPIFFE ID (or subject) is listed here.
 *
 * A bearer credential, when one is sent, decides alone: its SHA-256 is compared in constant time
 * with every configured hash (auth/credential.ts), and one that matches none is a 401 (never a
 * fall-back to the certificate). Without one, the client certificate is validated against the
 * trust bundles by an X.509 attestor (the same chain validation workloads get) and matched by
 * SPIFFE ID, or, for a certificate without a URI SAN, by subject and trust domain.
 */
export class Operators {
  private readonly byCredential = new CredentialSet<OperatorConfig>();
  private readonly bySpiffeId = new Map<string, OperatorConfig>();
  private readonly bySubjectId = new Map<string, OperatorConfig>();

  constructor(
    operators: readonly OperatorConfig[],
    /** Validates operator certificates (its subject mappings are operatorSubjectMappings); absent without client CA bundles. */
    private readonly x509: Attestor<X509Evidence> | undefined,
  ) {
    operators.forEach((op, i) => {
      if (op.credential_sha256 !== undefined) this.byCredential.add(op.credential_sha256, op);
      if (op.spiffe_id !== undefined) this.bySpiffeId.set(op.spiffe_id, op);
      if (op.subject !== undefined && op.trust_domain !== undefined) this.bySubjectId.set(operatorSubjectId(op.trust_domain, i), op);
    });
  }

  get size(): number {
    return this.byCredential.size + this.bySpiffeId.size + this.bySubjectId.size;
  }

  /** The calling operator, or 401 invalid_client. */
  async authenticate(call: { bearer?: string; certificate?: X509Evidence }): Promise<Operator> {
    if (call.bearer !== undefined) {
      const op = this.byCredential.match(call.bearer);
      if (!op) throw new InvalidClient('the bearer credential is not an operator credential');
      return { name: op.name, role: op.role, via: 'bearer' };
    }
    if (call.certificate && this.x509 && (this.bySpiffeId.size > 0 || this.bySubjectId.size > 0)) {
      const workload = await this.x509.attest(call.certificate);
      // The attestor validated the chain; which list the identity is matched in depends on
      // whether the leaf names a SPIFFE ID (a subject operator never matches an SVID).
      const leaf = parseCertificate(call.certificate.chain[0]!);
      const op = leaf.uris.length > 0 ? this.bySpiffeId.get(workload.id) : this.bySubjectId.get(workload.id);
      if (!op) throw new InvalidClient(`the client certificate (${leaf.uris.length > 0 ? workload.id : 'subject ' + workload.attributes.subject}) is not an operator's`);
      return { name: op.name, role: op.role, via: 'mtls' };
    }
    throw new InvalidClient('authenticate as an operator: "Authorization: Bearer <operator credential>" or an operator client certificate');
  }
}

/** 403 access_denied unless the operator's role allows `needed`. */
export function requireRole(op: Operator, needed: OperatorRole): void {
  if (RANK[op.role] < RANK[needed]) throw new AccessDenied(`operator ${op.name} has role ${op.role}; this needs role ${needed}`);
}
