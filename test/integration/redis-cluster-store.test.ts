/**
 * The Redis grant store on a real 3-primary Redis Cluster (test/helpers/redis-cluster.ts), logged
 * in as the shipped ACL's jit-broker user (deploy/redis/users.acl, key pattern moved to the test
 * prefix): the whole store contract suite; the single-slot guard (every Lua script and every
 * multi-key path run with keys of workloads spread over every primary, and not one CROSSSLOT or
 * cross-slot script error on any node, with a negative control proving the guard sees one); and
 * the operators' grant query and kill switch across all primaries.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operator } from '../../src/auth/operators.js';
import { parseConfig } from '../../src/config/load.js';
import { probeConfig } from '../../src/config/probe.js';
import { grantKeys, workloadTag } from '../../src/grants/ids.js';
import { redisConnectionFromConfig, type RedisConnectionSpec } from '../../src/grants/redis-connection.js';
import { createRedisGrantStore, LUA_SCRIPTS, type RedisGrantStore } from '../../src/grants/redis-store.js';
import type { Grant } from '../../src/grants/store.js';
import { silentLogger } from '../../src/log.js';
import type { OperatorDeps } from '../../src/operator/deps.js';
import { queryGrants } from '../../src/operator/grants.js';
import { revokeGrants } from '../../src/operator/revoke.js';
import { Policy } from '../../src/policy/evaluate.js';
import { Keyring } from '../../src/tokens/keyring.js';
import { brokerAclRules } from '../helpers/broker-acl.js';
import { describeGrantStoreContract, makeGrant, uniqueWorkload } from '../helpers/grant-store-contract.js';
import { infoFields, startRedisCluster, type ClusterNode, type RedisCluster } from '../helpers/redis-cluster.js';
import { redisPlants } from '../helpers/redis-plants.js';
import { TEST_KEY_PUBLICATION_SECRETS, uniquePrefix } from '../helpers/redis.js';

const PASSWORD = randomBytes(16).toString('hex');
/** Every key of this file lives under this prefix (the ACL user may touch nothing else). */
const FILE_PREFIX = uniquePrefix('cluster');
let cluster: RedisCluster;

beforeAll(async () => {
  cluster = await startRedisCluster();
  const rules = brokerAclRules(PASSWORD, FILE_PREFIX);
  await Promise.all(cluster.nodes.map((n) => cluster.command(n, 'ACL', 'SETUSER', 'jit-broker', 'reset', ...rules)));
});

afterAll(async () => {
  await cluster?.stop();
});

const connection = (): RedisConnectionSpec => ({ target: { kind: 'cluster', nodes: [...cluster.startupNodes] }, username: 'jit-broker', password: PASSWORD });
const makeStore = (prefix: string): RedisGrantStore =>
  createRedisGrantStore({ connection: connection(), keyPrefix: prefix, keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS, log: silentLogger });
/** A raw client of the test's own (the default user: every command, every key; no CLIENT SETINFO, which Redis 7.0 counts as an error). */
const admin = () => new Cluster([...cluster.startupNodes], { redisOptions: { disableClientInfo: true } });

const MIN = 60_000;
const HOUR = 60 * MIN;
const opts = (now: number) => ({ now, maxActive: 10, retentionMs: 24 * HOUR });

/** The primaries, and which of them holds each key (by asking each whether it has it). */
async function ownersOf(keys: string[]): Promise<Map<string, ClusterNode[]>> {
  const primaries = await cluster.primaries();
  expect(primaries).toHaveLength(3);
  const out = new Map<string, ClusterNode[]>(keys.map((k) => [k, []]));
  for (const node of primaries) {
    // KEYS on a test node: the whole test keyspace is a few thousand keys.
    const held = new Set((await cluster.command(node, 'KEYS', `${FILE_PREFIX}*`)) as string[]);
    for (const k of keys) if (held.has(k)) out.get(k)!.push(node);
  }
  return out;
}

/**
 * Fresh workloads, `perPrimary` whose slot each primary serves: grouped by primary (CLUSTER
 * KEYSLOT of a workload key, CLUSTER SLOTS for who serves it).
 */
async function workloadsOnEveryPrimary(perPrimary: number, label: string): Promise<string[][]> {
  const primaries = await cluster.primaries();
  const ranges = (await cluster.command(primaries[0]!, 'CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
  const groups = new Map<number, string[]>(primaries.map((p) => [p.port, []]));
  for (let tries = 0; [...groups.values()].some((g) => g.length < perPrimary); tries++) {
    if (tries > 1000) throw new Error('could not place workloads on every primary');
    const w = uniqueWorkload(label);
    const slot = Number(await cluster.command(primaries[0]!, 'CLUSTER', 'KEYSLOT', grantKeys('', workloadTag(w)).live));
    const port = Number(ranges.find(([lo, hi]) => slot >= lo && slot <= hi)![2][1]);
    const group = groups.get(port)!;
    if (group.length < perPrimary) group.push(w);
  }
  return [...groups.values()];
}

/** Every grant record among `grants` is held by exactly one primary, and every primary holds some. */
async function expectSpreadOverEveryPrimary(prefix: string, grants: Grant[]): Promise<void> {
  const keys = grants.map((g) => grantKeys(prefix, workloadTag(g.workload)).grant(g.id));
  const owners = await ownersOf(keys);
  for (const k of keys) expect(owners.get(k)!.length, k).toBe(1);
  expect(new Set([...owners.values()].map((n) => n[0]!.port)).size).toBe(3);
}

describe('GrantStore contract on Redis Cluster', () => {
  const prefix = `${FILE_PREFIX}contract:`;
  describeGrantStoreContract('redis cluster', async () => makeStore(prefix), redisPlants(admin, prefix));
});

/** Errors each node counted since its stats were reset (INFO errorstats), summed by error code. */
async function errorStats(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const node of cluster.nodes) {
    for (const [k, v] of infoFields(await cluster.command(node, 'INFO', 'errorstats'))) {
      const code = /^errorstat_(.+)$/.exec(k)?.[1];
      if (code) out[code] = (out[code] ?? 0) + Number(/count=(\d+)/.exec(v)?.[1] ?? 0);
    }
  }
  return out;
}

/** Errors that would mean a command or script spanned slots (anything but the expected kinds). */
async function slotErrors(expected: readonly string[]): Promise<Record<string, number>> {
  return Object.fromEntries(Object.entries(await errorStats()).filter(([code]) => !expected.includes(code)));
}

const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');

describe('single-slot discipline on Redis Cluster', () => {
  const prefix = `${FILE_PREFIX}slots:`;

  it('every Lua script and every multi-key path, with keys of workloads on every primary: not one CROSSSLOT or cross-slot script error', async () => {
    // A flags line first: Redis then holds each script to its declared keys' slot (the negative control shows it).
    for (const [name, source] of Object.entries(LUA_SCRIPTS)) expect(source, name).toMatch(/^#!lua( flags=[\w,-]+)?\n/);
    await Promise.all(cluster.nodes.map((n) => Promise.all([cluster.command(n, 'CONFIG', 'RESETSTAT'), cluster.command(n, 'SCRIPT', 'FLUSH'), cluster.command(n, 'ACL', 'LOG', 'RESET')])));
    const store = makeStore(prefix);
    const t0 = Date.now();
    const groups = await workloadsOnEveryPrimary(4, 'slots');
    const workloads = groups.flat();
    const grants: Grant[] = [];
    try {
      for (const w of workloads) {
        // createGrant (+ the workloads hint's MULTI, the global index, the audit shard copy).
        const g = await store.createGrant(makeGrant(w, t0, { task: 'slots-task' }), opts(t0));
        grants.push(g);
        const renewed = await store.renewGrant({ id: g.id, workload: w, presentedJti: g.token_jti, jti: `jti_${randomBytes(6).toString('hex')}`, tokenExp: t0 + 5 * MIN }, opts(t0 + 1));
        expect(renewed.outcome).toBe('renewed');
        await store.listWorkloadGrants(w, { now: t0 + 2, limit: 10 });
        await store.listWorkloadGrants(w, { now: t0 + 2, limit: 10, liveOnly: true });
        await store.listTaskGrants(w, 'slots-task', { now: t0 + 2, limit: 10 });
        await store.walkGrants({ now: t0 + 2, retentionMs: 24 * HOUR, workload: w, want: 10, maxExamined: 100 });
        await store.appendAudit({ type: 'grant.denied', at: t0 + 2, workload: w, reason: 'no rule' }, { retentionMs: HOUR });
        await store.appendAudit({ type: 'grant.denied', at: t0 + 2, workload: w, reason: 'no rule' }, { retentionMs: HOUR, unmatched: true, source: `10.0.0.${workloads.indexOf(w)}` });
        await store.readAudit(w);
        await store.readGrantEvents(g);
      }
      await expectSpreadOverEveryPrimary(prefix, grants);
      // Paths that span workloads: each over its own key set or fanned out, per key.
      await store.walkGrants({ now: t0 + 3, retentionMs: 24 * HOUR, want: 100, maxExamined: 1000 });
      await store.listWorkloads({ now: t0 + 3, retentionMs: 24 * HOUR, limit: 100 });
      await store.readUnmatchedAudit();
      await store.readAuditLog({ scope: { kind: 'global' }, order: 'desc', limit: 100, maxExamined: 1000 });
      await store.readAuditLog({ scope: { kind: 'workload', workload: workloads[0]! }, order: 'asc', limit: 100, maxExamined: 1000 });
      await store.readAuditLog({ scope: { kind: 'grant', grant: grants[1]!.id }, order: 'asc', limit: 100, maxExamined: 1000 });
      await store.appendOperatorAudit({ type: 'operator.action', at: t0 + 3, action: 'grants.query', operator: 'root', role: 'admin' }, { retentionMs: HOUR });
      await store.appendOperatorAudit({ type: 'operator.action', at: t0 + 3, action: 'grants.query', operator: 'root', role: 'admin' }, { retentionMs: HOUR, read: true });
      await store.readOperatorAudit();
      await store.appendKeyAudit({ type: 'key.published', at: t0 + 3, kid: 'k1', alg: 'ES256' }, { retentionMs: HOUR });
      await store.revokeKey({ kid: 'k-revoked', revoked_at: t0, by: 'root', until: t0 + HOUR });
      await store.revokedKeys(t0 + 3);
      await store.publishKey({ kid: 'k-published', jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }, created_at: t0, retire_at: t0 + HOUR, expires_at: t0 + 2 * HOUR });
      await store.publishedKeys(t0 + 3);
      // On every primary: ending, revoking, voiding (close-grant.lua); the other grants stay live.
      const grantOf = (w: string) => grants.find((g) => g.workload === w)!;
      for (const [ended, revoked, voided] of groups) {
        await store.closeGrant(grantOf(ended!).id, ended!, { now: t0 + 4, status: 'ended' });
        await store.closeGrant(grantOf(revoked!).id, revoked!, { now: t0 + 4, status: 'revoked', reason: 'slot test' });
        expect(await store.voidGrant(makeGrant(voided!, t0).id, voided!, { now: t0 + 4 })).toBe('marked');
      }
      // A replayed token while Redis refuses writes for memory: renew-grant.lua under allow-oom
      // (revokeReplay) revokes the grant, on every primary.
      const live = groups.flatMap((g) => g.slice(2)).map(grantOf);
      const primaries = await cluster.primaries();
      await Promise.all(primaries.map((n) => cluster.command(n, 'CONFIG', 'SET', 'maxmemory', '1')));
      try {
        for (const g of live) {
          const replay = await store.renewGrant({ id: g.id, workload: g.workload, presentedJti: g.token_jti, jti: 'jti_new', tokenExp: t0 + 5 * MIN }, opts(t0 + 5));
          expect(replay.outcome).toBe('replay');
        }
      } finally {
        await Promise.all(primaries.map((n) => cluster.command(n, 'CONFIG', 'SET', 'maxmemory', '0')));
      }
      await expectSpreadOverEveryPrimary(prefix, live);
    } finally {
      await store.close(); // flushes the audit shard copies (audit-append-shard)
    }
    // Every script ran (EVAL caches it on the node that ran it); the per-workload ones on every primary.
    const primaries = await cluster.primaries();
    const cached = await Promise.all(primaries.map(async (n) => (await cluster.command(n, 'SCRIPT', 'EXISTS', ...Object.values(LUA_SCRIPTS).map(sha1))) as number[]));
    for (const [i, name] of Object.keys(LUA_SCRIPTS).entries()) {
      const on = cached.filter((c) => c[i] === 1).length;
      expect(on, `${name} ran on ${on} primaries`).toBeGreaterThanOrEqual(['createGrant', 'renewGrant', 'revokeReplay', 'closeGrant', 'readGrants', 'appendAudit'].includes(name) ? 3 : 1);
    }
    // The shipped ACL let the broker do all of it on the Cluster: nothing refused on any node.
    const refused = await Promise.all(cluster.nodes.map(async (n) => (await cluster.command(n, 'ACL', 'LOG')) as unknown[][]));
    expect(refused.flat().map((entry) => JSON.stringify(entry))).toEqual([]);
    // NOSCRIPT: the first EVALSHA after SCRIPT FLUSH; OOM: the renewals refused for memory.
    expect(await slotErrors(['NOSCRIPT', 'OOM'])).toEqual({});
    expect((await errorStats()).OOM).toBeGreaterThan(0);
  });

  it('negative control: the guard sees keys that span slots, declared or reached from inside a script', async () => {
    await Promise.all(cluster.nodes.map((n) => cluster.command(n, 'CONFIG', 'RESETSTAT')));
    const [a, b] = [uniqueWorkload('a'), uniqueWorkload('b')].map((w) => grantKeys(prefix, workloadTag(w)).live);
    const raw = admin();
    try {
      // Declared keys of two workloads: the node refuses before running anything.
      await expect(raw.eval('return 1', 2, a!, b!)).rejects.toThrow(/CROSSSLOT/);
      // One declared key, another workload's reached inside a script with a flags line (as
      // every script of the store has): refused by the node too.
      await expect(raw.eval("#!lua\nreturn redis.call('EXISTS', KEYS[1]) + redis.call('EXISTS', ARGV[1])", 1, a!, b!)).rejects.toThrow(
        /do not hash to the same slot|non local key/,
      );
    } finally {
      await raw.quit();
    }
    const seen = await slotErrors(['NOSCRIPT', 'OOM']);
    expect(seen.CROSSSLOT).toBe(1);
    expect(Object.values(seen).reduce((x, y) => x + y, 0)).toBe(2);
  });
});

describe('operators across every primary of the Cluster', () => {
  const prefix = `${FILE_PREFIX}operators:`;
  const config = parseConfig({
    issuer: 'https://broker.example.com',
    store: { kind: 'redis', cluster: { nodes: ['127.0.0.1:1'] }, key_prefix: prefix },
    tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRETS[0] },
    policies: [],
  });
  const admin: Operator = { name: 'root', role: 'admin', via: 'bearer' };
  const auditor: Operator = { name: 'viewer', role: 'auditor', via: 'bearer' };

  it('the grant query finds every grant exactly once, and the kill switch revokes every matching one and nothing else', async () => {
    const store = makeStore(prefix);
    const clock = () => Date.now();
    const deps: OperatorDeps = {
      config,
      store,
      clock,
      log: silentLogger,
      policy: new Policy([]),
      keyring: new Keyring({ alg: 'ES256', rotationMs: config.tokens.key_rotation, overlapMs: config.tokens.key_overlap, store, clock, log: silentLogger }),
    };
    try {
      const team = `spiffe://test.example/team-${randomBytes(4).toString('hex')}`;
      const t0 = Date.now();
      const targets: Grant[] = [];
      const others: Grant[] = [];
      for (let i = 0; i < 40; i++) {
        const w = `${team}/svc-${i}`;
        for (let j = 0; j < 3; j++) targets.push(await store.createGrant(makeGrant(w, t0 - j), opts(t0)));
      }
      for (let i = 0; i < 10; i++) others.push(await store.createGrant(makeGrant(uniqueWorkload('bystander'), t0), opts(t0)));
      await expectSpreadOverEveryPrimary(prefix, [...targets, ...others]);
      const all = new Set([...targets, ...others].map((g) => g.id));
      // The global index is written in batches after the creates, not awaited by them.
      await expect.poll(async () => (await store.walkGrants({ now: Date.now(), retentionMs: HOUR, want: 1000, maxExamined: 1000 })).grants.length).toBe(all.size);

      // Every grant, page by page (the merged shards of the global index): each exactly once.
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await queryGrants(deps, auditor, { limit: '17', ...(cursor ? { cursor } : {}) });
        seen.push(...page.grants.map((g) => g.grant));
        cursor = page.cursor;
      } while (cursor);
      expect(seen.length).toBe(all.size);
      expect(new Set(seen)).toEqual(all);

      // The kill switch by workload glob: a dry run lists exactly the team's grants, then every one is revoked.
      const dry = await revokeGrants(deps, admin, { selector: { workload: `${team}/*` }, reason: 'incident', dry_run: true });
      expect(new Set(dry.grants)).toEqual(new Set(targets.map((g) => g.id)));
      let revoked = 0;
      let next: string | undefined;
      do {
        const r = await revokeGrants(deps, admin, { selector: { workload: `${team}/*` }, reason: 'incident', ...(next ? { cursor: next } : {}) });
        revoked += r.revoked;
        next = r.cursor;
        if (r.done) break;
      } while (next);
      expect(revoked).toBe(targets.length);
      for (const g of targets) expect((await store.getGrant(g.id))?.status, g.id).toBe('revoked');
      for (const g of others) expect((await store.getGrant(g.id))?.status, g.id).toBe('active');
      const again = await revokeGrants(deps, admin, { selector: { workload: `${team}/*` }, reason: 'incident' });
      expect(again).toMatchObject({ revoked: 0, done: true });
    } finally {
      await store.close();
    }
  });
});

describe('check-config --probe on the Cluster', () => {
  it('reaches it through the same client as the store, as the ACL user, and names no password', async () => {
    const config = parseConfig({
      issuer: 'https://broker.example.com',
      store: { kind: 'redis', cluster: { nodes: cluster.startupNodes.slice(0, 1).map((n) => `${n.host}:${n.port}`) }, username: 'jit-broker', key_prefix: FILE_PREFIX },
      tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRETS[0] },
      policies: [],
    });
    const [node] = cluster.startupNodes;
    const ok = await probeConfig(config);
    // The password from the environment, as a deployment would give it.
    const previous = process.env.JIT_REDIS_PASSWORD;
    process.env.JIT_REDIS_PASSWORD = PASSWORD;
    let results;
    try {
      results = await probeConfig(config);
    } finally {
      if (previous === undefined) delete process.env.JIT_REDIS_PASSWORD;
      else process.env.JIT_REDIS_PASSWORD = previous;
    }
    expect(results).toEqual([{ target: `store cluster ${node!.host}:${node!.port}`, ok: true, detail: 'reachable (PONG)' }]);
    expect(ok).toMatchObject([{ ok: false }]);
    expect(JSON.stringify([ok, results])).not.toContain(PASSWORD);
  });
});

describe('nat_map on the Cluster', () => {
  /** A TCP forwarder to `port` on a free loopback port: what a NAT or a port forward does. */
  async function forwarder(port: number): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
    const sockets = new Set<Socket>();
    let count = 0;
    const server: Server = createServer((inbound) => {
      count++;
      const outbound = createConnection({ host: '127.0.0.1', port });
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => s.destroy());
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return {
      port: address.port,
      connections: () => count,
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    };
  }

  it('reaches every primary at the address nat_map gives for the one it announces', async () => {
    const primaries = await cluster.primaries();
    const forwarders = await Promise.all(primaries.map((n) => forwarder(n.port)));
    try {
      const config = parseConfig({
        issuer: 'https://broker.example.com',
        store: {
          kind: 'redis',
          cluster: {
            nodes: [`127.0.0.1:${forwarders[0]!.port}`],
            nat_map: Object.fromEntries(primaries.map((n, i) => [`127.0.0.1:${n.port}`, `127.0.0.1:${forwarders[i]!.port}`])),
          },
          username: 'jit-broker',
          key_prefix: `${FILE_PREFIX}nat:`,
        },
        tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRETS[0] },
        policies: [],
      });
      if (config.store.kind !== 'redis') throw new Error('redis store expected');
      const store = createRedisGrantStore({
        connection: redisConnectionFromConfig(config.store, { JIT_REDIS_PASSWORD: PASSWORD }),
        keyPrefix: config.store.key_prefix,
        keyPublicationSecrets: TEST_KEY_PUBLICATION_SECRETS,
        log: silentLogger,
      });
      try {
        const groups = await workloadsOnEveryPrimary(1, 'nat');
        const t0 = Date.now();
        for (const w of groups.flat()) await store.createGrant(makeGrant(w, t0), opts(t0));
        const used = store.redis instanceof Cluster ? store.redis.nodes('master').map((n) => n.options.port) : [];
        expect(used.sort()).toEqual(forwarders.map((f) => f.port).sort());
      } finally {
        await store.close();
      }
      for (const f of forwarders) expect(f.connections()).toBeGreaterThan(0);
    } finally {
      await Promise.all(forwarders.map((f) => f.close()));
    }
  });
});
