import type { HttpClient } from './http.js';

/** Remembered introspection answers at most (one per token). */
const MAX_CACHED = 10_000;

export interface IntrospectorOptions {
  url: string;
  http: HttpClient;
  /** Bearer credential of this resource server (RFC 7662 §2.1); absent with mTLS. */
  credential?: string;
  clock: () => number;
  cacheTtlMs: number;
}

/**
 * RFC 7662 introspection against the broker: is this token's grant still live? Answers are
 * remembered for at most `cacheTtlMs` and never past the token's expiry; one request in flight
 * per token. An answer that is not a well-formed 200 with a boolean `active` is an error (the
 * verifier fails closed on it unless told otherwise), never "active".
 */
export class Introspector {
  private readonly cache = new Map<string, { active: boolean; until: number }>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  /** Requests sent so far. */
  requests = 0;

  constructor(private readonly opts: IntrospectorOptions) {}

  async active(token: string, expMs: number): Promise<boolean> {
    const now = this.opts.clock();
    const hit = this.cache.get(token);
    if (hit && now < hit.until) return hit.active;
    if (hit) this.cache.delete(token);
    let pending = this.inflight.get(token);
    if (!pending) {
      pending = this.ask(token).finally(() => this.inflight.delete(token));
      this.inflight.set(token, pending);
      const active = await pending;
      const until = Math.min(this.opts.clock() + this.opts.cacheTtlMs, expMs);
      if (this.cache.size >= MAX_CACHED) this.prune();
      if (until > this.opts.clock()) this.cache.set(token, { active, until });
      return active;
    }
    return pending;
  }

  private prune(): void {
    const now = this.opts.clock();
    for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
    while (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
  }

  private async ask(token: string): Promise<boolean> {
    this.requests++;
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (this.opts.credential !== undefined) headers.authorization = `Bearer ${this.opts.credential}`;
    const body = new URLSearchParams({ token, token_type_hint: 'access_token' }).toString();
    const res = await this.opts.http.request(this.opts.url, { method: 'POST', headers, body });
    if (res.status !== 200) throw new Error(`introspection answered HTTP ${res.status}`);
    const doc = JSON.parse(res.body) as unknown;
    const active = typeof doc === 'object' && doc !== null ? (doc as { active?: unknown }).active : undefined;
    if (typeof active !== 'boolean') throw new Error('introspection answered without a boolean "active"');
    return active;
  }
}
