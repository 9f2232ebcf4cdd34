import type { z } from 'zod';
import type { Confirmation } from '../protocol/claims.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../log.js';

/** The attested caller. Every verifier returns this same shape and never looks at the intent. */
export interface Workload {
  /** URI: spiffe://td/path, k8s://cluster/ns/NS/sa/SA, github://owner/repo/... */
  id: string;
  /** Evidence kind that proved it. */
  kind: 'oidc' | 'x509';
  /** Who vouched for it: the token issuer, or the trust domain whose bundle validated the chain. */
  issuer: string;
  /** Verified attributes only (from the evidence), flat strings. */
  attributes: Record<string, string>;
  /** When the evidence itself expires (ms since epoch); tokens never outlive it. */
  evidenceExpiresAt: number;
  /** Binding the evidence proves possession of, copied into the token's `cnf`. */
  confirmation?: Confirmation;
}

/** What the workload presented. */
export type Evidence =
  | { kind: 'oidc'; token: string }
  | {
      kind: 'x509';
      /** DER certificates, leaf first, as the client (or the proxy on its behalf) presented them. */
      chain: Uint8Array[];
      source: 'handshake' | 'forwarded';
      /** OpenSSL's verdict when the handshake did not verify the chain: informational only, never a decider (the in-process validator decides, the same on every path). */
      handshakeError?: string;
      /** Why the presented certificate could not even be read (a malformed forwarded header). */
      problem?: string;
    };

export interface Attestor<E extends Evidence = Evidence> {
  readonly kind: E['kind'];
  /** Verifies evidence; throws AttestationFailed (4xx) or Unavailable (503). */
  attest(evidence: E): Promise<Workload>;
  /** Readiness: why this attestor cannot attest right now, or undefined when it can. */
  notReady(): string | undefined;
  close?(): Promise<void> | void;
}

export interface AttestorDeps {
  clock: Clock;
  log: Logger;
  /** fetch used for discovery and JWKS (injectable for tests; defaults to global fetch). */
  fetch?: typeof fetch;
}

/** Every attestor module exports this shape: kind, config schema, factory. */
export interface AttestorModule<C, E extends Evidence> {
  kind: E['kind'];
  configSchema: z.ZodType<C>;
  create(config: C, deps: AttestorDeps): Attestor<E>;
}
