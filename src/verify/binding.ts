import { createHash, X509Certificate } from 'node:crypto';

/**
 * The TLS peer's certificate, however the server has it: DER bytes, PEM text, a node:crypto
 * X509Certificate, or what `TLSSocket.getPeerCertificate()` returns (its `raw` DER).
 */
export type ClientCertificate = Uint8Array | string | X509Certificate | { raw: Uint8Array };

/** DER of the certificate, or undefined when there is none (an empty peer-certificate object). */
export function certificateDer(cert: ClientCertificate | undefined | null): Uint8Array | undefined {
  if (cert === undefined || cert === null) return undefined;
  if (cert instanceof X509Certificate) return cert.raw;
  if (typeof cert === 'string') {
    const pem = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(cert);
    if (!pem) throw new TypeError('clientCertificate: not a PEM certificate');
    return Buffer.from(pem[1]!.replace(/\s+/g, ''), 'base64');
  }
  if (cert instanceof Uint8Array) return cert.length > 0 ? cert : undefined;
  return cert.raw instanceof Uint8Array && cert.raw.length > 0 ? cert.raw : undefined;
}

/** RFC 8705 §3.1: `x5t#S256`, the base64url SHA-256 of the certificate's DER. */
export const x5tS256 = (der: Uint8Array): string => createHash('sha256').update(der).digest('base64url');
