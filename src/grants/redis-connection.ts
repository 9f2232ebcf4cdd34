/**
 * One place that turns the store's Redis config into an ioredis client, for the three
 * topologies: one server (a redis:// or rediss:// URL), a Sentinel group (the client asks the
 * sentinels for the primary and follows a failover), or a Redis Cluster (the client routes each
 * key to the primary serving its slot). Every client is built with the same fail-fast options
 * (see `connectRedis`). Passwords come from a file or the environment, never from logs: what
 * `describeRedis` prints carries none.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';

/** A client of any topology; the store's commands are the same on each. */
export type RedisClient = Redis | Cluster;

export interface HostPort {
  host: string;
  port: number;
}

export type RedisTarget =
  | { kind: 'standalone'; url: string }
  | {
      kind: 'sentinel';
      sentinels: HostPort[];
      masterName: string;
      /** The sentinels' own ACL user and password (they may differ from the data nodes'). */
      sentinelUsername?: string;
      sentinelPassword?: string;
      /** TLS to the sentinels too (with the same CA and server name). */
      sentinelTls: boolean;
    }
  | {
      kind: 'cluster';
      nodes: HostPort[];
      /** Addresses the cluster announces → addresses this broker reaches them at. */
      natMap?: Record<string, HostPort>;
    };

export interface RedisConnectionSpec {
  target: RedisTarget;
  /** ACL user and password of the data nodes (a standalone URL may carry its own instead). */
  username?: string;
  password?: string;
  /** TLS to the data nodes (a rediss:// URL turns it on as well). */
  tls?: { ca?: string; servername?: string };
}

export interface ConnectOptions {
  /** A command without a reply after this long fails. */
  commandTimeoutMs: number;
  /** TCP (and TLS) connect timeout. */
  connectTimeoutMs: number;
  /** Reconnect for ever with a short capped backoff (the store); false: one attempt (a probe). */
  reconnect: boolean;
  /**
   * Defined commands whose first argument is not a key (a script with a variable number of keys
   * takes the count first). A Cluster client must not auto-pipeline them: it groups an
   * auto-pipelined command by its first argument, so one of these would join another slot's batch.
   */
  keyCountFirst?: readonly string[];
}

/** Environment variables that carry Redis passwords (instead of a file). */
export const REDIS_PASSWORD_ENV = 'JIT_REDIS_PASSWORD';
export const REDIS_SENTINEL_PASSWORD_ENV = 'JIT_REDIS_SENTINEL_PASSWORD';

type RedisStoreConfig = Extract<Config['store'], { kind: 'redis' }>;

/** "host:port" (IPv6 in brackets) as host and port; the config schema has checked the form. */
export function parseHostPort(address: string): HostPort {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(address.slice(i + 1)) };
}

function readConfigFile(setting: string, path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`${setting}: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  // A trailing newline is the editor's, not the password's.
  const secret = text.replace(/\r?\n$/, '');
  if (secret === '') throw new ConfigError([`${setting}: ${path} is empty`]);
  return secret;
}

/** One password from a file or an environment variable (both at once is ambiguous: refused). */
function password(setting: string, file: string | undefined, envName: string, env: NodeJS.ProcessEnv): string | undefined {
  const fromEnv = env[envName];
  if (file !== undefined && fromEnv) throw new ConfigError([`${setting} and ${envName} are both set: give the password once`]);
  if (file !== undefined) return readConfigFile(setting, file);
  return fromEnv || undefined;
}

/**
 * The connection spec of a redis store config: reads the CA and password files and the password
 * environment variables (at start, so a missing file stops the broker with its name).
 */
export function redisConnectionFromConfig(store: RedisStoreConfig, env: NodeJS.ProcessEnv = process.env): RedisConnectionSpec {
  const pw = password('store.password_file', store.password_file, REDIS_PASSWORD_ENV, env);
  let target: RedisTarget;
  if (store.sentinel) {
    const s = store.sentinel;
    const sentinelPassword = password('store.sentinel.password_file', s.password_file, REDIS_SENTINEL_PASSWORD_ENV, env);
    target = {
      kind: 'sentinel',
      sentinels: s.nodes.map(parseHostPort),
      masterName: s.master_name,
      ...(s.username !== undefined ? { sentinelUsername: s.username } : {}),
      ...(sentinelPassword !== undefined ? { sentinelPassword } : {}),
      sentinelTls: s.tls,
    };
  } else if (store.cluster) {
    const c = store.cluster;
    target = {
      kind: 'cluster',
      nodes: c.nodes.map(parseHostPort),
      ...(c.nat_map ? { natMap: Object.fromEntries(Object.entries(c.nat_map).map(([from, to]) => [from, parseHostPort(to)])) } : {}),
    };
  } else if (store.url !== undefined) {
    const url = new URL(store.url);
    if (url.password && pw !== undefined) throw new ConfigError([`store.url carries a password and so does store.password_file or ${REDIS_PASSWORD_ENV}: give it once`]);
    if (url.username && store.username !== undefined) throw new ConfigError(['store.url carries a user name and so does store.username: give it once']);
    target = { kind: 'standalone', url: store.url };
  } else {
    throw new ConfigError(['store: give url, sentinel or cluster']);
  }
  const tls = store.tls
    ? {
        ...(store.tls.ca_file !== undefined ? { ca: readConfigFile('store.tls.ca_file', store.tls.ca_file) } : {}),
        ...(store.tls.server_name !== undefined ? { servername: store.tls.server_name } : {}),
      }
    : undefined;
  return {
    target,
    ...(store.username !== undefined ? { username: store.username } : {}),
    ...(pw !== undefined ? { password: pw } : {}),
    ...(tls ? { tls } : {}),
  };
}

/** The URL without its password. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable redis url)';
  }
}

const address = (a: HostPort) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** What the client connects to, for logs and probes: never a password. */
export function describeRedis(spec: RedisConnectionSpec): string {
  const t = spec.target;
  const tls = spec.tls ? ' (tls)' : '';
  if (t.kind === 'standalone') return redactRedisUrl(t.url);
  if (t.kind === 'sentinel') return `sentinel master ${t.masterName} via ${t.sentinels.map(address).join(',')}${tls}`;
  return `cluster ${t.nodes.map(address).join(',')}${tls}`;
}

/** Reconnect for ever: 50 ms, 100 ms, ... capped at 1 s. */
const backoff = (times: number) => Math.min(50 * 2 ** Math.min(times, 10), 1000);

/**
 * An ioredis client for the spec, not yet connected (`lazyConnect`). Fail-fast and closed, on
 * every topology: commands never wait in an offline queue (a queued write could run after its
 * caller was told it failed), a command that may have been sent is never resent (not after a
 * reconnect, not after a cluster failover; MOVED/ASK/TRYAGAIN, which Redis answers without running
 * the command, are followed), each command has `commandTimeoutMs`, and the client reconnects for
 * ever (unless `reconnect` is false) so the service recovers by itself.
 */
export function connectRedis(spec: RedisConnectionSpec, o: ConnectOptions): RedisClient {
  const tls: ConnectionOptions | undefined = spec.tls ? { ...(spec.tls.ca ? { ca: spec.tls.ca } : {}), ...(spec.tls.servername ? { servername: spec.tls.servername } : {}) } : undefined;
  const node: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: o.commandTimeoutMs,
    connectTimeout: o.connectTimeoutMs,
    enableReadyCheck: true,
    // No CLIENT SETINFO on connect: one command fewer for the least-privilege ACL (deploy/redis/).
    disableClientInfo: true,
    reconnectOnError: null,
    retryStrategy: o.reconnect ? backoff : () => null,
    ...(spec.username !== undefined ? { username: spec.username } : {}),
    ...(spec.password !== undefined ? { password: spec.password } : {}),
    ...(tls ? { tls } : {}),
  };
  // Commands issued in one event-loop turn go out in one write: under load the socket write,
  // not Redis, was the largest cost of an issuance (bench/). Each command keeps its own reply and timeout.
  const enableAutoPipelining = true;
  const t = spec.target;
  if (t.kind === 'standalone') {
    // The URL's credentials, unless the spec gives its own (ioredis would let the URL's win,
    // an empty password included, so they are taken out of it). rediss:// turns TLS on.
    const url = new URL(t.url);
    const [user, pass] = [decodeURIComponent(url.username), decodeURIComponent(url.password)];
    url.username = '';
    url.password = '';
    return new Redis(url.toString(), {
      ...node,
      ...(spec.username === undefined && user ? { username: user } : {}),
      ...(spec.password === undefined && pass ? { password: pass } : {}),
      enableAutoPipelining,
    });
  }
  if (t.kind === 'sentinel') {
    const sentinelTLS = t.sentinelTls ? (tls ?? {}) : undefined;
    const client = new Redis({
      ...node,
      enableAutoPipelining,
      sentinels: t.sentinels,
      name: t.masterName,
      role: 'master',
      ...(t.sentinelUsername !== undefined ? { sentinelUsername: t.sentinelUsername } : {}),
      ...(t.sentinelPassword !== undefined ? { sentinelPassword: t.sentinelPassword } : {}),
      ...(tls ? { enableTLSForSentinelMode: true } : {}),
      // TLS to the sentinels when asked, with store.tls's CA and name if given, else Node's CAs: never plaintext instead.
      ...(sentinelTLS ? { sentinelTLS } : {}),
      sentinelCommandTimeout: o.commandTimeoutMs,
      sentinelRetryStrategy: o.reconnect ? backoff : () => null,
      // Not ioredis's failoverDetector: it drops the connection on every +switch-master, and each
      // sentinel sends its own, up to seconds apart, so a client already on the new primary was sent
      // away again (a second burst of 503s). followSwitchMaster reconnects only when it is not there.
      failoverDetector: false,
    });
    if (o.reconnect) followSwitchMaster(client, t, { connectTimeoutMs: o.connectTimeoutMs, ...(sentinelTLS ? { tls: sentinelTLS } : {}) });
    return client;
  }
  const cluster: ClusterOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    enableAutoPipelining,
    // Ready once the slot map is loaded (CLUSTER SLOTS). Its ready check (CLUSTER INFO, sent to
    // any node) would be refused while the node connections below are still connecting; a
    // cluster that is down answers CLUSTERDOWN, a 503, all the same.
    enableReadyCheck: false,
    scaleReads: 'master',
    redisOptions: node,
    // A command whose connection closed may have run: never resent (the caller gets a 503).
    retryDelayOnFailover: 0,
    // CLUSTERDOWN (a primary lost, no replica promoted yet) fails at once: 503 with Retry-After.
    retryDelayOnClusterDown: 0,
    retryDelayOnTryAgain: 50,
    slotsRefreshTimeout: Math.max(o.connectTimeoutMs, o.commandTimeoutMs),
    clusterRetryStrategy: o.reconnect ? backoff : () => null,
    autoPipeliningIgnoredCommands: [...(o.keyCountFirst ?? [])],
    ...(t.natMap ? { natMap: t.natMap } : {}),
    // With TLS, connect to the names given (certificates name hosts, not the addresses DNS returns).
    ...(tls ? { dnsLookup: (host: string, callback: (err: null, address: string) => void) => callback(null, host) } : {}),
  };
  const client = new Cluster(t.nodes, cluster);
  // Each node's first connection is made at once, and waited for (nodesConnecting): with no
  // offline queue, a command for a node whose connection is still being made is refused.
  const first = new Map<Redis, Promise<void>>();
  client.on('+node', (node: Redis) => {
    first.set(
      node,
      new Promise<void>((resolve) => {
        const settle = () => {
          node.off('ready', settle);
          node.off('end', settle);
          first.delete(node);
          resolve();
        };
        node.once('ready', settle);
        node.once('end', settle);
      }),
    );
    if (node.status === 'wait') node.connect().catch(() => undefined); // a failure ends the node: settled
  });
  firstConnections.set(client, first);
  return client;
}

const SWITCH_MASTER = '+switch-master';

/** The same address, whether Node reports an IPv4 peer plainly or IPv4-mapped. */
const sameHost = (peer: string | undefined, announced: string) => peer !== undefined && peer.replace(/^::ffff:/, '') === announced.replace(/^::ffff:/, '');

/**
 * Hears of a failover from the sentinels instead of waiting for the old primary's connection to
 * fail (a partitioned or demoted primary may never close it): each sentinel's `+switch-master`
 * ("<master> <old ip> <old port> <new ip> <new port>") reconnects `client`, through the sentinels,
 * unless it is connected to that new primary already. A client that is not connected is left to
 * its own reconnect (it asks the sentinels then). An announced host name, never a peer address,
 * counts as elsewhere: one reconnect more, never one fewer. The subscriptions (one per sentinel,
 * reconnecting for ever, SUBSCRIBE only) start with the client's first connection and end with it;
 * the client emits `failoverSubscribed` once all are made (as with ioredis's detector).
 */
function followSwitchMaster(client: Redis, t: Extract<RedisTarget, { kind: 'sentinel' }>, o: { connectTimeoutMs: number; tls?: ConnectionOptions }): void {
  let subscribers: Redis[] | undefined;
  const onMessage = (channel: string, message: string) => {
    if (channel !== SWITCH_MASTER || client.status !== 'ready') return;
    const [name, , , host, port] = message.split(' ');
    if (name !== t.masterName || host === undefined) return;
    const peer = client.stream;
    if (sameHost(peer.remoteAddress, host) && String(peer.remotePort) === port) return;
    client.disconnect(true);
  };
  client.once('connecting', () => {
    if (subscribers || client.status === 'end') return;
    subscribers = t.sentinels.map((s) => {
      const sub = new Redis({
        host: s.host,
        port: s.port,
        ...(t.sentinelUsername !== undefined ? { username: t.sentinelUsername } : {}),
        ...(t.sentinelPassword !== undefined ? { password: t.sentinelPassword } : {}),
        ...(o.tls ? { tls: o.tls } : {}),
        connectTimeout: o.connectTimeoutMs,
        retryStrategy: backoff,
        // SUBSCRIBE only: queued until connected however long a sentinel is down, and sent again
        // after every reconnect.
        maxRetriesPerRequest: null,
        enableReadyCheck: false,
        disableClientInfo: true,
        autoResubscribe: true,
      });
      sub.on('error', () => undefined); // a sentinel down is the others' to cover; its client reconnects
      sub.on('message', onMessage);
      return sub;
    });
    // The event ioredis's own detector emits: tests wait for it before failing a primary over.
    void Promise.all(subscribers.map((sub) => sub.subscribe(SWITCH_MASTER).catch(() => undefined))).then(() => client.emit('failoverSubscribed'));
  });
  client.once('end', () => {
    for (const sub of subscribers ?? []) sub.disconnect();
    subscribers = [];
  });
}

/** A Cluster client's node connections still making their first connection (see connectRedis). */
const firstConnections = new WeakMap<Cluster, Map<Redis, Promise<void>>>();

/**
 * Resolves when the node connections a Cluster client is making for the first time are made (or
 * failed): at its start, and for a node it learns of later. Undefined when there are none (one
 * server, Sentinel, or every node connected once already): a node reconnecting later is not
 * waited for, so one lost node does not slow the slots the others serve.
 */
export function nodesConnecting(client: RedisClient): Promise<void> | undefined {
  const pending = client instanceof Cluster ? firstConnections.get(client) : undefined;
  if (!pending || pending.size === 0) return undefined;
  return Promise.all(pending.values()).then(() => undefined);
}
