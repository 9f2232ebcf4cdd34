import { hostname } from 'node:os';
import type { KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { Unavailable } from '../errors.js';
import type { GrantStore, PublishedKey } from '../grants/store.js';
import type { Logger } from '../log.js';
import type { Clock } from '../util/clock.js';
import { publicKeyFromJwk } from './verify.js';
import { generateSigningKeyPair, type SigningAlg } from './algorithms.js';

export type { SigningAlg } from './algorithms.js';

export interface SigningKey {
  kid: string;
  alg: SigningAlg;
  /** Lives only in this process's memory: never exported, logged, or written anywhere. */
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicJwk: JWK;
  createdAt: number;
  /** When this key stops signing. */
  retireAt: number;
  /** Set once the store confirmed publication; a key signs nothing before that. */
  published: boolean;
  /** When the store first confirmed it (monotonic ms): it signs KEY_PUBLICATION_LEAD_MS later. */
  publishedAt?: number;
}

export interface KeyringOptions {
  alg: SigningAlg;
  rotationMs: number;
  /** How long a retired key stays in the JWKS (>= largest TTL + leeway, checked at config load). */
  overlapMs: number;
  store: GrantStore;
  clock: Clock;
  log: Logger;
  /** Cache of the union JWKS across instances. */
  jwksCacheMs?: number;
  /**
   * Record key.published and key.retired events in the operators' event log (the keys stream),
   * kept this long; absent: no key events. Best effort: a failed event is logged, never fatal.
   */
  auditRetentionMs?: number;
  /** This instance's name in key events (default hostname:pid). */
  instance?: string;
}

/**
 * Cap on keys published across all instances, checked before each new key is published (a
 * read, then a write: instances starting at the same moment can overshoot it a little).
 * Reaching it fails closed, never by dropping a key whose tokens are still live: a starting
 * instance is not ready, a running one postpones rotation and keeps signing until its current
 * key retires. Each instance publishes about key_overlap / key_rotation + 2 keys.
 */
export const MAX_PUBLISHED_KEYS = 64;

/**
 * How replicas trust each other's new keys at once, without a store read per request:
 * - a key signs nothing until this long after the store confirmed its publication (a new
 *   instance is ready this much later; a rotation onto a key published a moment ago waits; a
 *   scheduled rotation moves onto a key published a rotation earlier);
 * - a JWKS answer, and the lookup of a kid not in the cached union, come from a store read that
 *   started at most this long before the request arrived.
 * So every key that signed a token before a request arrived is in the keys that answer it. On
 * demand, an instance starts such a read only when none started within this period: at most
 * 1000 / KEY_PUBLICATION_LEAD_MS = 20 reads a second (each: the revocation marks and the published
 * keys, three HGETALLs of at most MAX_PUBLISHED_KEYS entries), however many requests ask, besides
 * the cached union's one per jwksCacheMs.
 */
export const KEY_PUBLICATION_LEAD_MS = 50;

/**
 * Per-instance signing keys. The private half lives only in this process; the public half is
 * published to the store so every instance serves the union as JWKS. The next key is published
 * one rotation ahead of its first use, so verifiers that cache the JWKS already know it.
 */
export class Keyring {
  private current: SigningKey | undefined;
  private next: SigningKey | undefined;
  private timer: NodeJS.Timeout | undefined;
  private jwksCache: { at: number; keys: JWK[] } | undefined;
  private lastError: string | undefined = 'signing key not published yet';
  private lastPostponedLog = 0;
  private maintaining: Promise<void> | undefined;
  private lastRunFailed = false;
  /** Our retired keys still within their overlap (kept for the JWKS, never for signing). */
  private retired: SigningKey[] = [];
  /** One store read at a time for the union JWKS, however many callers wait on it. */
  private jwksLoading: Promise<{ keys: JWK[] }> | undefined;
  /** The latest store read of the union, in flight or done, and when it started (monotonic ms). */
  private lastRead: { start: number; done: boolean; answer: Promise<{ keys: JWK[] }> } | undefined;
  /** Public keys of other instances, by kid, built once from the union JWKS. */
  private foreignKeys = new Map<string, { key: KeyObject; alg: SigningAlg }>();
  /**
   * Kids an operator revoked (authentic marks in the store, or revoked here): never signed with,
   * served or accepted again by this process, even if the mark later vanishes from the store.
   */
  private readonly revokedKids = new Set<string>();

  constructor(private readonly opts: KeyringOptions) {}

  /** Generates and publishes the first two keys; schedules rotation and re-publication. */
  async start(): Promise<void> {
    const now = this.opts.clock();
    this.current = await this.generate(now, now + this.opts.rotationMs);
    this.next = await this.generate(now, now + 2 * this.opts.rotationMs);
    await this.maintain();
    const tick = Math.max(1000, Math.min(30_000, Math.floor(this.opts.rotationMs / 4)));
    this.timer = setInterval(() => void this.maintain(), tick);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Why this instance cannot sign right now, or undefined. */
  notReady(): string | undefined {
    const key = this.current;
    if (!key) return 'signing key not generated';
    if (!key.published) return this.lastError ?? 'signing key not published';
    return undefined;
  }

  /** The key to sign with now; rotates first when due. Throws Unavailable when none is published. */
  signingKey(): SigningKey {
    const now = this.opts.clock();
    if (this.current && now >= this.current.retireAt) {
      this.rotate(now);
      void this.maintain(); // makes and publishes the new next key
    }
    if (this.current && this.revokedKids.has(this.current.kid)) this.rotate(now);
    const key = this.current;
    if (!key || !key.published) throw new Unavailable('signing key is not available', { detail: this.notReady() });
    if (this.revokedKids.has(key.kid)) throw new Unavailable('signing key is not available', { detail: 'the signing key was revoked and the next key is not published yet' });
    // Past its retire time the key's JWKS entry may vanish before a new token's exp: never sign.
    if (now >= key.retireAt) throw new Unavailable('signing key is not available', { detail: 'key rotation pending: next key not published' });
    return key;
  }

  /**
   * Moves to the next key now (scheduled rotation calls this; tests may too). A scheduled rotation
   * finds its next key published a whole rotation ago; rotateNow and maintenance, which may move
   * onto a key published a moment ago, wait for its publication lead first.
   */
  rotate(now = this.opts.clock()): void {
    if (!this.next || !this.next.published || this.next.retireAt <= now) {
      if (now - this.lastPostponedLog >= 10_000) {
        this.lastPostponedLog = now;
        this.opts.log.error({ kid: this.next?.kid }, 'key rotation postponed: next key not published (the current key signs until it retires, then none)');
      }
      return;
    }
    const retired = this.current;
    this.current = this.next;
    this.next = undefined;
    if (retired) {
      retired.retireAt = Math.min(retired.retireAt, now);
      this.retired = [...this.retired.filter((k) => now < k.retireAt + this.opts.overlapMs), retired];
      // Re-publish with the earlier retire time; the old record keeps it listed if this fails.
      this.publish(retired).catch((e: Error) => this.opts.log.warn({ kid: retired.kid, err: e.message }, 'retired key not re-published'));
      this.keyEvent('key.retired', retired);
    }
    this.opts.log.info({ kid: this.current.kid, retired: retired?.kid }, 'signing key rotated');
  }

  /**
   * Moves to the next (already published) key now and makes its successor: `kill -USR2`, and an
   * operator's `POST /v1/keys/rotate`. Returns the kid that signed before and the one that signs now
   * (the same when rotation had to be postponed: the next key is not published yet).
   */
  async rotateNow(): Promise<{ previous: string | undefined; current: string | undefined }> {
    const previous = this.current?.kid;
    // A next key being made (the previous rotation's) is waited for, then its publication lead.
    if (this.maintaining) await this.maintaining;
    if (this.next?.published) await this.untilLead(this.next);
    if (this.current?.kid === previous) this.rotate();
    void this.maintain();
    return { previous, current: this.current?.kid };
  }

  /** Resolves once `key` may sign: KEY_PUBLICATION_LEAD_MS after its publication was confirmed. */
  private async untilLead(key: SigningKey): Promise<void> {
    const left = leadLeft(key);
    if (left > 0) await sleep(left);
  }

  /** When the key this instance signs with was made (metrics: signing key age), if it has one. */
  currentKeyCreatedAt(): number | undefined {
    return this.current?.createdAt;
  }

  /** This instance's own keys and what each is for now (operators' GET /v1/keys). */
  heldKeys(): { kid: string; state: 'current' | 'next' | 'retired' }[] {
    const out: { kid: string; state: 'current' | 'next' | 'retired' }[] = [];
    if (this.current) out.push({ kid: this.current.kid, state: 'current' });
    if (this.next) out.push({ kid: this.next.kid, state: 'next' });
    for (const k of this.retired) out.push({ kid: k.kid, state: 'retired' });
    return out;
  }

  /**
   * The public key for `kid` if it is in the JWKS we serve: our own keys first (no store read),
   * then the union of every instance's (cached as jwks() caches it). A kid found in neither may be
   * a key published since that union was read (a replica that just started): it is looked up in
   * a union read at most KEY_PUBLICATION_LEAD_MS before the request (authenticated, revocation
   * marks applied) before it is refused. A flood of unknown kids costs a bounded number of store
   * reads (see KEY_PUBLICATION_LEAD_MS), never one per request.
   */
  async verificationKey(kid: string): Promise<{ key: KeyObject; alg: SigningAlg } | undefined> {
    // The union (and the revocation marks with it) at most a cache period old.
    const cached = this.findKey(kid, (await this.jwks()).keys);
    if (cached || this.revokedKids.has(kid)) return cached;
    return this.findKey(kid, (await this.jwks({ recent: true })).keys);
  }

  private findKey(kid: string, union: JWK[]): { key: KeyObject; alg: SigningAlg } | undefined {
    if (this.revokedKids.has(kid)) return undefined;
    const now = this.opts.clock();
    for (const k of [this.current, this.next, ...this.retired]) {
      if (k?.kid === kid && k.published && now < k.retireAt + this.opts.overlapMs) return { key: k.publicKey, alg: k.alg };
    }
    const jwk = union.find((k) => k.kid === kid);
    if (!jwk) return undefined;
    let found = this.foreignKeys.get(kid);
    if (!found) {
      found = publicKeyFromJwk(jwk);
      if (!found) return undefined;
      if (this.foreignKeys.size >= 4 * MAX_PUBLISHED_KEYS) this.foreignKeys.clear();
      this.foreignKeys.set(kid, found);
    }
    return found;
  }

  /**
   * The union JWKS of every instance's published keys, newest first (cached briefly). When the
   * store cannot answer, the last good union plus our own keys: a Redis blip must not make
   * verifiers fail on tokens that are still valid.
   *
   * `recent`: from a store read that started at most KEY_PUBLICATION_LEAD_MS before this call, so
   * every key that has signed anything is in it (a verifier that met a new kid and refetched finds
   * it). Every caller within that period shares one read.
   */
  async jwks(opts: { recent?: boolean } = {}): Promise<{ keys: JWK[] }> {
    const { keys } = await (opts.recent ? this.recentUnion() : this.cachedUnion());
    // A key revoked here since that read is left out at once.
    return { keys: keys.filter((k) => !this.revokedKids.has(k.kid ?? '')) };
  }

  private cachedUnion(): Promise<{ keys: JWK[] }> {
    const now = this.opts.clock();
    const ttl = this.opts.jwksCacheMs ?? 1000;
    if (this.jwksCache && now - this.jwksCache.at < ttl) return Promise.resolve({ keys: this.jwksCache.keys });
    this.jwksLoading ??= this.readUnion().finally(() => {
      this.jwksLoading = undefined;
    });
    return this.jwksLoading;
  }

  /**
   * The union from a read that started at most KEY_PUBLICATION_LEAD_MS before this call: the last
   * one (done or in flight) if it is that recent, else a new one once the one in flight (too old)
   * has settled. New reads therefore start more than KEY_PUBLICATION_LEAD_MS apart.
   */
  private async recentUnion(): Promise<{ keys: JWK[] }> {
    const asked = performance.now();
    for (;;) {
      const last = this.lastRead;
      if (last && asked - last.start <= KEY_PUBLICATION_LEAD_MS) return last.answer;
      if (!last || last.done) return this.readUnion();
      await last.answer; // loadJwks never rejects
    }
  }

  /** One store read of the union (loadJwks), recorded as the latest with its start time. */
  private readUnion(): Promise<{ keys: JWK[] }> {
    const read = { start: performance.now(), done: false, answer: this.loadJwks(this.opts.clock()) };
    this.lastRead = read;
    void read.answer.finally(() => (read.done = true));
    return read.answer;
  }

  private async loadJwks(now: number): Promise<{ keys: JWK[] }> {
    let published: PublishedKey[];
    try {
      // Marks first: a key revoked meanwhile is left out of this very union.
      await this.refreshRevoked(now);
      published = await this.opts.store.publishedKeys(now);
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'published keys unavailable; serving the last known JWKS');
      const own = this.ownKeys();
      const known = (this.jwksCache?.keys ?? []).filter((k) => !own.some((o) => o.kid === k.kid) && !this.revokedKids.has(k.kid ?? ''));
      return { keys: [...own, ...known] };
    }
    // Our own published keys always, even if the store lost them (until maintenance re-publishes).
    const own = this.ownKeys().filter((k) => !published.some((p) => p.kid === k.kid));
    const keys = [...own, ...published.filter((k) => !this.revokedKids.has(k.kid)).sort((a, b) => b.created_at - a.created_at).map((k) => k.jwk as JWK)];
    this.jwksCache = { at: now, keys };
    return { keys };
  }

  /** Public halves of this instance's keys that were published and are within their overlap. */
  private ownKeys(): JWK[] {
    const now = this.opts.clock();
    return [this.current, this.next, ...this.retired]
      .filter((k): k is SigningKey => k?.published === true && now < k.retireAt + this.opts.overlapMs && !this.revokedKids.has(k.kid))
      .map((k) => k.publicJwk);
  }

  /**
   * Revokes a key on this instance at once: never signed with, served or accepted again. When it
   * is our current key we move to the next one now (if that is not published yet, nothing signs
   * until it is: 503, never the revoked key); when it is our next key, another is made. Other
   * instances learn it from the store's authenticated mark (store.revokeKey) within a JWKS cache
   * period or a maintenance tick. Returns whether this instance held the key.
   */
  revoke(kid: string): { held: boolean } {
    const held = this.heldKeys().some((k) => k.kid === kid);
    if (this.revokedKids.has(kid)) return { held };
    this.revokedKids.add(kid);
    this.jwksCache = undefined;
    this.foreignKeys.delete(kid);
    if (this.next?.kid === kid) this.next = undefined;
    if (this.current?.kid === kid) this.rotate();
    if (held) {
      this.opts.log.warn({ kid }, 'signing key revoked: it signs and verifies nothing more');
      void this.maintain();
    }
    return { held };
  }

  /** Whether a kid was revoked (as far as this instance has seen). */
  isRevoked(kid: string): boolean {
    return this.revokedKids.has(kid);
  }

  /** Applies the store's authentic revocation marks (sticky: a mark that vanishes later changes nothing here). */
  private async refreshRevoked(now: number): Promise<void> {
    for (const mark of await this.opts.store.revokedKeys(now)) if (!this.revokedKids.has(mark.kid)) this.revoke(mark.kid);
  }

  /**
   * Rotates when due, makes sure a next key exists, and (re)publishes our keys. One run at a
   * time: the timer and a rotation may both ask, and two runs would each make a next key.
   */
  private maintain(): Promise<void> {
    this.maintaining ??= this.maintainOnce().finally(() => {
      this.maintaining = undefined;
      // A rotation that joined this run after its next-key step left no next key: make it now
      // (not after a failed run: the timer retries those).
      if (this.timer && this.current && !this.next && !this.lastRunFailed) void this.maintain();
    });
    return this.maintaining;
  }

  private async maintainOnce(): Promise<void> {
    this.lastRunFailed = false;
    try {
      // Two rounds at most: after a long store outage the first publishes a fresh next key, the
      // second rotates onto it and publishes its successor.
      for (let round = 0; round < 2 && this.current; round++) {
        const now = this.opts.clock();
        if (round === 0) await this.refreshRevoked(now);
        // A next key whose own retire time passed during an outage would never sign: replace it.
        if (this.next && this.next.retireAt <= now) this.next = undefined;
        if (now >= this.current.retireAt) {
          if (this.next?.published) await this.untilLead(this.next);
          this.rotate(now);
        }
        if (!this.next) this.next = await this.generate(now, Math.max(now, this.current.retireAt) + this.opts.rotationMs);
        for (const key of [this.current, this.next]) await this.publish(key);
        if (this.opts.clock() < this.current.retireAt) break;
      }
    } catch (e) {
      this.lastRunFailed = true;
      this.opts.log.warn({ err: (e as Error).message }, 'key maintenance failed');
    }
  }

  private async publish(key: SigningKey): Promise<void> {
    const record: PublishedKey = {
      kid: key.kid,
      jwk: key.publicJwk as Record<string, unknown>,
      created_at: key.createdAt,
      retire_at: key.retireAt,
      expires_at: key.retireAt + this.opts.overlapMs,
    };
    try {
      if (!key.published) {
        const existing = await this.opts.store.publishedKeys(this.opts.clock());
        if (existing.length >= MAX_PUBLISHED_KEYS && !existing.some((k) => k.kid === key.kid))
          throw new Error(`${existing.length} signing keys are published already (cap ${MAX_PUBLISHED_KEYS}); lower the number of instances or raise key_rotation`);
      }
      await this.opts.store.publishKey(record);
      if (!key.published) {
        key.publishedAt = performance.now();
        // A key that is to sign at once (the current one: at start, or after an outage) becomes
        // usable only after its lead; a next key is published a rotation ahead.
        if (key === this.current) await this.untilLead(key);
        this.jwksCache = undefined;
        this.keyEvent('key.published', key);
      }
      key.published = true;
      this.lastError = undefined;
    } catch (e) {
      this.lastError = `signing key not published: ${(e as Error).message}`;
      throw e;
    }
  }

  /** A key event for the operators' log: not awaited, a failure logged (the key's state is the record). */
  private keyEvent(type: 'key.published' | 'key.retired', key: SigningKey): void {
    const retentionMs = this.opts.auditRetentionMs;
    if (retentionMs === undefined) return;
    const event = { type, at: this.opts.clock(), kid: key.kid, alg: key.alg, instance: this.opts.instance ?? `${hostname()}:${process.pid}`, retire_at: key.retireAt };
    this.opts.store.appendKeyAudit(event, { retentionMs }).catch((e: Error) => this.opts.log.warn({ kid: key.kid, err: e.message }, 'key event not written to the audit log'));
  }

  private async generate(createdAt: number, retireAt: number): Promise<SigningKey> {
    // node:crypto KeyObjects, not WebCrypto: a synchronous OpenSSL sign costs a fraction of a
    // WebCrypto job on the hot path (bench/sign.ts measures both).
    const { privateKey, publicKey } = await generateSigningKeyPair(this.opts.alg);
    const jwk = publicKey.export({ format: 'jwk' }) as JWK;
    const kid = await calculateJwkThumbprint(jwk);
    const publicJwk: JWK = { ...jwk, kid, alg: this.opts.alg, use: 'sig' };
    return { kid, alg: this.opts.alg, privateKey, publicKey, publicJwk, createdAt, retireAt, published: false };
  }
}

/** Milliseconds until a published key may sign (0 when it may). */
const leadLeft = (key: SigningKey): number => (key.publishedAt === undefined ? KEY_PUBLICATION_LEAD_MS : key.publishedAt + KEY_PUBLICATION_LEAD_MS - performance.now());
