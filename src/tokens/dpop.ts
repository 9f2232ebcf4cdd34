import { createHmac, timingSafeEqual } from 'node:crypto';
import { BrokerError } from '../errors.js';
import { checkDpopProof, DpopProofError, type DpopProofCheck, type VerifiedProof } from '../protocol/dpop.js';

/**
 * The broker's side of DPoP (RFC 9449): the proof checker of protocol/dpop.ts with the broker's
 * errors, and its stateless server nonces. The caller records the proof's jti once
 * (GrantStore.useProofJti) after everything else about the request is checked.
 */

/** RFC 9449 §12.2 `invalid_dpop_proof` (400 at the broker, which is an authorization server). */
export class InvalidDpopProof extends BrokerError {
  constructor(description: string, opts?: { detail?: string }) {
    super('invalid_dpop_proof', 400, description, opts);
  }
}

/** RFC 9449 §8: the proof must carry the nonce the broker issues (sent in `DPoP-Nonce`). */
export class UseDpopNonce extends BrokerError {
  constructor(description: string) {
    super('use_dpop_nonce', 400, description);
  }
}

export type { VerifiedProof };

/** Checks one DPoP proof per RFC 9449 §4.3; throws InvalidDpopProof or UseDpopNonce. */
export function verifyDpopProof(check: DpopProofCheck): VerifiedProof {
  try {
    return checkDpopProof(check);
  } catch (e) {
    if (!(e instanceof DpopProofError)) throw e;
    if (e.error === 'use_dpop_nonce') throw new UseDpopNonce(e.message);
    throw new InvalidDpopProof(e.message, e.detail === undefined ? {} : { detail: e.detail });
  }
}

/**
 * Stateless server nonces (§8): the HMAC of a time window under a secret every instance shares,
 * so any instance accepts any instance's nonce with no shared state. The current and the previous
 * window's nonces are accepted: a nonce lives between one and two `rotationMs`.
 */
export class DpopNonces {
  constructor(
    private readonly secret: string,
    private readonly rotationMs: number,
  ) {}

  /** The nonce to send now (`DPoP-Nonce`). */
  current(now: number): string {
    return this.of(Math.floor(now / this.rotationMs));
  }

  accepts(value: string, now: number): boolean {
    const window = Math.floor(now / this.rotationMs);
    const given = Buffer.from(value);
    return [window, window - 1].some((w) => {
      const expected = Buffer.from(this.of(w));
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
  }

  private of(window: number): string {
    return createHmac('sha256', this.secret).update(`jit-broker dpop nonce ${window}`).digest().subarray(0, 18).toString('base64url');
  }
}
