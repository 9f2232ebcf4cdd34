import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * A keyed digest of a whole compact task token, kept in its grant record (Grant.token_digest),
 * so the record can vouch that a presented token is byte for byte the one a broker minted: a
 * renewal then skips only the signature check (tokens/verify.ts).
 *
 * Keyed, because the design defends against an attacker who can write to Redis but cannot read
 * the brokers' secrets (as published keys are authenticated: grants/key-publication.ts): a plain
 * hash would let one plant a record whose digest matches a token it forged. The key is derived
 * from the key publication secret under its own label, so every replica shares it; without a
 * secret (the memory store) it is random per process, and records written by another process
 * simply never match (full verification).
 *
 * HMAC-SHA-256 truncated to 128 bits, base64url: 22 characters per record.
 */
const LABEL = 'jit-broker token digest v1';

/** The length of a digest as recorded (base64url of 16 bytes). */
export const TOKEN_DIGEST_LENGTH = 22;
const DIGEST_BYTES = 16;
const SHAPE = /^[A-Za-z0-9_-]{22}$/;

export class TokenDigests {
  private readonly key: Buffer;

  /** `secret`: tokens.key_publication_secret (the first one: the one every replica signs with). */
  constructor(secret: string | undefined) {
    this.key = secret === undefined ? randomBytes(32) : createHmac('sha256', secret).update(LABEL).digest();
  }

  /** The digest a record stores for `token`. */
  of(token: string): string {
    return this.raw(token).toString('base64url');
  }

  /** Whether `recorded` is the digest of `token` (constant time); false for anything not shaped like one. */
  matches(token: string, recorded: string | undefined): boolean {
    if (recorded === undefined || !SHAPE.test(recorded)) return false;
    return timingSafeEqual(this.raw(token), Buffer.from(recorded, 'base64url'));
  }

  private raw(token: string): Buffer {
    return createHmac('sha256', this.key).update(token).digest().subarray(0, DIGEST_BYTES);
  }
}
