/**
 * The certificate chain a TLS client presented, as it arrived in the handshake.
 *
 * `getPeerCertificate(true)` on a server socket walks OpenSSL's peer chain. Node 24.21 and 26.8+
 * (nodejs/node#65579) read the peer certificate inside their own 'secure' handler in a way that
 * drops the intermediates from that chain, so afterwards only the leaf is left, and a client
 * certificate under an intermediate could never attest. We read the chain first: the server's
 * documented 'keylog' event is the one that hands us each TLSSocket during its handshake, and a
 * 'secure' listener prepended there runs before Node's own. The keylog line itself (session key
 * material) is ignored: never kept, never logged.
 */
import type { Server as TlsServer, TLSSocket } from 'node:tls';

const chains = new WeakMap<TLSSocket, Uint8Array[]>();

/** The DER certificates the peer presented, leaf first (OpenSSL may append our anchor), at most `max`. */
function readChain(socket: TLSSocket, max: number): Uint8Array[] {
  const chain: Uint8Array[] = [];
  const peer = socket.getPeerCertificate(true);
  for (let c: typeof peer | undefined = peer; c?.raw && chain.length < max; c = c.issuerCertificate) {
    chain.push(c.raw);
    if (c.issuerCertificate === c) break;
  }
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

/** The chain kept for this connection by keepPeerChains, else read now (servers without it). */
export function peerChain(socket: TLSSocket, max: number): Uint8Array[] {
  return chains.get(socket) ?? readChain(socket, max);
}
