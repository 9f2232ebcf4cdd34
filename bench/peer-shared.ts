/** What the peer's server and its load agree on (bench/peer-server.ts, bench/peer.ts). */
export const PEER_CLIENT_ID = 'bench-client';
export const PEER_RESOURCE = 'https://db.bench/';
export const PEER_AUDIENCE = 'db.bench';
export const PEER_SCOPE = 'read';
