/**
 * The certificate chain a TLS client presented, exactly as it arrived in the handshake: the leaf,
 * then every other certificate it sent, in its order.
 *
 * Two Node behaviours make the obvious reading lossy, so neither is used:
 * - `getPeerCertificate(true)` re-links the sent certificates by issuer, and its loop stops early
 *   when an issuer is the last certificate left to link: intermediates sent out of issuing order
 *   are silently dropped (Node 20 and later), so an out-of-order chain that validates through a
 *   forwarded header did not over the handshake.
 * - Node 24.21 and 26.8+ (nodejs/node#65579) read the peer certificate inside their own 'secure'
 *   handler in a way that empties OpenSSL's peer chain, so afterwards only the leaf is left.
 *
 * `getPeerX509Certificate()` links each certificate to the next one *as sent*
 * (`issuerCertificate`), which is the presented chain unchanged; it consumes OpenSSL's peer chain
 * as it goes, so it runs once per connection, first: the server's documented 'keylog' event hands
 * us each TLSSocket during its handshake, and a 'secure' listener prepended there runs before
 * Node's own. The keylog line itself (session key material) is ignored: never kept, never logged.
 * Which of these certificates form a path is the validator's business (x509-chain.ts), the same
 * for the handshake and the forwarded header.
 */
import type { X509Certificate } from 'node:crypto';
import type { Server as TlsServer, TLSSocket } from 'node:tls';

const chains = new WeakMap<TLSSocket, Uint8Array[]>();

/** The DER certificates the peer presented, leaf first, in the order sent, at most `max`. */
function readChain(socket: TLSSocket, max: number): Uint8Array[] {
  const chain: Uint8Array[] = [];
  let cert: X509Certificate | undefined = socket.getPeerX509Certificate();
  for (; cert && chain.length < max; cert = cert.issuerCertificate) chain.push(cert.raw);
  return chain;
}

/** Makes `server` keep each connection's client chain as presented, before Node's own handler runs. */
export function keepPeerChains(server: TlsServer, max: number): void {
  const seen = new WeakSet<TLSSocket>();
  server.on('keylog', (_line: Buffer, socket: TLSSocket) => {
    if (seen.has(socket)) return;
    seen.add(socket);
    socket.prependOnceListener('secure', () => chains.set(socket, readChain(socket, max)));
  });
}

/** The chain kept for this connection by keepPeerChains, else read now, once (servers without it). */
export function peerChain(socket: TLSSocket, max: number): Uint8Array[] {
  let chain = chains.get(socket);
  if (!chain) chains.set(socket, (chain = readChain(socket, max)));
  return chain;
}
