import { createHash, timingSafeEqual } from 'node:crypto';
import { randomBase64url } from '../util/random.js';

/**
 * Bearer credentials whose SHA-256 alone sits in the config (resource servers today, operators
 * next). A credential is 256 random bits as base64url: too long to guess, so one unsalted hash is
 * enough to keep it out of the config file.
 */

/** Random bytes in a new credential (256 bits). */
export const CREDENTIAL_BYTES = 32;

/** The SHA-256 of a credential, as the config holds it (64 lowercase hex digits, as sha256sum prints). */
export const credentialSha256 = (credential: string): string => createHash('sha256').update(credential).digest('hex');

/** A new random credential and the hash that goes into the config. */
export function newCredential(): { credential: string; sha256: string } {
  const credential = randomBase64url(CREDENTIAL_BYTES);
  return { credential, sha256: credentialSha256(credential) };
}

/**
 * The holders of configured credentials, found by a presented one. The presented credential is
 * hashed once and compared with every configured hash in constant time, without stopping at the
 * first match, so the time taken tells nothing about which hash (or how much of one) matched.
 */
export class CredentialSet<T> {
  private readonly entries: { hash: Buffer; holder: T }[] = [];

  add(sha256Hex: string, holder: T): void {
    this.entries.push({ hash: Buffer.from(sha256Hex, 'hex'), holder });
  }

  /** The holder of `presented`, or undefined. */
  match(presented: string): T | undefined {
    const digest = createHash('sha256').update(presented).digest();
    let found: T | undefined;
    for (const { hash, holder } of this.entries) {
      if (timingSafeEqual(hash, digest) && found === undefined) found = holder;
    }
    return found;
  }

  get size(): number {
    return this.entries.length;
  }
}
