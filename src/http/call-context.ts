import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Broker, CallContext } from '../broker.js';
import { InvalidClient, InvalidRequest } from '../errors.js';
import { isIP, type BlockList } from 'node:net';
import { isTrustedProxy, type ClientCertSource } from './client-cert.js';

export type CallContextOf = (c: Context) => CallContext;

/** What every route module needs: the service, the body limit and the caller's transport facts. */
export interface RouteDeps {
  broker: Broker;
  maxBodyBytes: number;
  callContext: CallContextOf;
}

/** RFC 6750 §2.1: `Bearer` then one b64token. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** The credential of an `Authorization: Bearer` header (other schemes: none); a malformed one is a 400. */
export function bearerOf(header: string | undefined): string | undefined {
  if (header === undefined || !/^Bearer(\s|$)/i.test(header)) return undefined;
  const m = BEARER.exec(header);
  if (!m) throw new InvalidRequest('the Authorization header must be "Bearer <token>"');
  return m[1];
}

/**
 * The client id and secret of an `Authorization: Basic` header (other schemes: none). RFC 6749
 * §2.3.1: each is form-urlencoded before the base64, so both are decoded after it. A malformed
 * one is a failed client authentication (401 with a Basic challenge, §5.2).
 */
export function basicOf(header: string | undefined): { clientId: string; secret: string } | undefined {
  if (header === undefined || !/^Basic(\s|$)/i.test(header)) return undefined;
  const bad = () => new InvalidClient('the Authorization header must be "Basic " and the base64 of client_id:client_secret, each form-urlencoded (RFC 6749 §2.3.1)', { challenge: 'Basic' });
  const m = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header);
  if (!m) throw bad();
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) throw bad();
  try {
    const unescape = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
    return { clientId: unescape(decoded.slice(0, colon)), secret: unescape(decoded.slice(colon + 1)) };
  } catch {
    throw bad();
  }
}

/**
 * The address failed authentications count against. From a trusted proxy (`http.trusted_proxies`:
 * proxies that append the address they saw), the last X-Forwarded-For entry, which that proxy
 * wrote (earlier entries are the client's word); `[v6]:port` and `v4:port` forms are read as
 * their address. Without a readable entry, the proxy's own address: never no limit at all.
 */
export function clientAddressOf(peer: string | undefined, proxies: BlockList | undefined, header: (name: string) => string | undefined): string | undefined {
  if (!proxies || !isTrustedProxy(proxies, peer)) return peer;
  const last = header('x-forwarded-for')?.split(',').at(-1)?.trim() ?? '';
  const address = /^\[([^\]]+)\](?::\d+)?$/.exec(last)?.[1] ?? /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(last)?.[1] ?? last;
  return isIP(address) ? address : peer;
}

/** The caller's address as the failure limit counts it (behind a trusted proxy: the address it appended); for the request log. */
export function clientAddressOfContext(c: Context, proxies?: BlockList): string | undefined {
  let peer: string | undefined;
  try {
    peer = getConnInfo(c).remote.address;
  } catch {
    peer = undefined; // not served by node-server (app.request in tests)
  }
  return clientAddressOf(peer, proxies, (name) => c.req.header(name));
}

/** Transport facts about the caller: its address, its bearer credential and, when enabled, its client certificate. */
export function callContextOf(clientCerts: ClientCertSource | undefined, proxies?: BlockList): CallContextOf {
  return (c) => {
    let remoteAddress: string | undefined;
    try {
      remoteAddress = getConnInfo(c).remote.address;
    } catch {
      remoteAddress = undefined; // not served by node-server (app.request in tests)
    }
    const socket = (c.env as { incoming?: { socket?: unknown } } | undefined)?.incoming?.socket;
    const certificate = clientCerts?.evidence(socket, remoteAddress, (name) => c.req.header(name));
    const bearer = bearerOf(c.req.header('authorization'));
    const basic = basicOf(c.req.header('authorization'));
    const clientAddress = clientAddressOf(remoteAddress, proxies, (name) => c.req.header(name));
    return {
      ...(remoteAddress ? { remoteAddress } : {}),
      ...(clientAddress ? { clientAddress } : {}),
      ...(certificate ? { certificate } : {}),
      ...(bearer !== undefined ? { bearer } : {}),
      ...(basic ? { basic } : {}),
    };
  };
}
