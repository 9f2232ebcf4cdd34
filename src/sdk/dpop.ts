import { randomUUID, webcrypto } from 'node:crypto';
import { inspect } from 'node:util';
import { accessTokenHash, jwkThumbprint } from '../protocol/dpop.js';

/**
 * The workload's DPoP key (RFC 9449): a key pair made in memory with WebCrypto, its private half
 * not extractable, that signs one fresh proof per request. A task keeps its key for its whole
 * life: the broker renews and ends a DPoP-bound grant only with a proof by the same key.
 */

/** Proof algorithms the client can make keys for (ES256 is the default). */
export const SDK_DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type SdkDpopAlgorithm = (typeof SDK_DPOP_ALGORITHMS)[number];

const PARAMS: Record<SdkDpopAlgorithm, { generate: webcrypto.EcKeyGenParams | webcrypto.Algorithm; sign: webcrypto.EcdsaParams | webcrypto.Algorithm }> = {
  ES256: { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  ES384: { generate: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  ES512: { generate: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } },
  EdDSA: { generate: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};

type PublicJwk = { kty: 'EC'; crv: 'P-256' | 'P-384' | 'P-521'; x: string; y: string } | { kty: 'OKP'; crv: 'Ed25519'; x: string };

const b64u = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

export class DpopKey {
  readonly algorithm: SdkDpopAlgorithm;
  /** RFC 7638 SHA-256 thumbprint of the public key: the `cnf.jkt` of the tokens bound to it. */
  readonly thumbprint: string;
  readonly #privateKey: webcrypto.CryptoKey;
  readonly #jwk: PublicJwk;

  private constructor(algorithm: SdkDpopAlgorithm, privateKey: webcrypto.CryptoKey, jwk: PublicJwk) {
    this.algorithm = algorithm;
    this.#privateKey = privateKey;
    this.#jwk = jwk;
    this.thumbprint = jwkThumbprint(jwk);
  }

  /** A new key pair; the private key cannot be exported (WebCrypto `extractable: false`). */
  static async generate(algorithm: SdkDpopAlgorithm = 'ES256'): Promise<DpopKey> {
    if (!SDK_DPOP_ALGORITHMS.includes(algorithm)) throw new TypeError(`dpop.algorithm must be one of ${SDK_DPOP_ALGORITHMS.join(', ')}`);
    const pair = (await webcrypto.subtle.generateKey(PARAMS[algorithm].generate, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const full = await webcrypto.subtle.exportKey('jwk', pair.publicKey);
    const jwk = (full.kty === 'EC' ? { kty: 'EC', crv: full.crv, x: full.x, y: full.y } : { kty: 'OKP', crv: full.crv, x: full.x }) as PublicJwk;
    return new DpopKey(algorithm, pair.privateKey, jwk);
  }

  /**
   * A proof for one request (§4.2): `htm`, `htu` (query and fragment dropped), the wall-clock
   * `iat`, a random `jti`, and `ath` when an access token goes with it, `nonce` when a server
   * issued one.
   */
  async proof(htm: string, htu: URL, opts: { accessToken?: string | undefined; nonce?: string | undefined } = {}): Promise<string> {
    const target = new URL(htu);
    target.search = '';
    target.hash = '';
    const claims = {
      jti: randomUUID(),
      htm,
      htu: target.href,
      iat: Math.floor(Date.now() / 1000),
      ...(opts.accessToken !== undefined ? { ath: accessTokenHash(opts.accessToken) } : {}),
      ...(opts.nonce !== undefined ? { nonce: opts.nonce } : {}),
    };
    const input = `${b64u({ typ: 'dpop+jwt', alg: this.algorithm, jwk: this.#jwk })}.${b64u(claims)}`;
    // WebCrypto's ECDSA signature is r || s, the JWS form (RFC 7518 §3.4).
    const signature = await webcrypto.subtle.sign(PARAMS[this.algorithm].sign, this.#privateKey, Buffer.from(input));
    return `${input}.${Buffer.from(signature).toString('base64url')}`;
  }

  /** What logging a key shows: its algorithm and thumbprint, never key material. */
  toJSON(): { algorithm: SdkDpopAlgorithm; thumbprint: string } {
    return { algorithm: this.algorithm, thumbprint: this.thumbprint };
  }

  [inspect.custom](): string {
    return `DpopKey { algorithm: '${this.algorithm}', thumbprint: '${this.thumbprint}' }`;
  }
}
