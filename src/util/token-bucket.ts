/**
 * Token bucket arithmetic, shared by the memory grant store and the per-address limiter (the
 * Redis store runs the same steps in lib.lua): holds at most `burst` tokens, earns one every
 * `intervalMs`, and a request takes one.
 */
export interface RateLimit {
  burst: number;
  intervalMs: number;
}

export interface BucketState {
  tokens: number;
  at: number;
}

/**
 * Takes one token: `wait` 0 and the new state, or the ms until one is earned (state unchanged).
 * A `now` older than the last take (clocks of several brokers differ a little) earns nothing.
 */
export function takeToken(state: BucketState | undefined, rate: RateLimit, now: number): { wait: number; state?: BucketState } {
  const earned = refill(state, rate, now);
  if (earned.tokens < 1) return { wait: waitForToken(earned, rate) };
  return { wait: 0, state: { tokens: earned.tokens - 1, at: earned.at } };
}

/** The ms until a bucket with less than one token has earned one (at least 1). */
export const waitForToken = (earned: BucketState, rate: RateLimit): number => Math.max(1, Math.ceil((1 - earned.tokens) * rate.intervalMs));

/** The state with what was earned since `state.at` (a missing bucket is full). */
export function refill(state: BucketState | undefined, rate: RateLimit, now: number): BucketState {
  let tokens = state?.tokens ?? rate.burst;
  let at = state?.at ?? now;
  if (now > at) {
    tokens = Math.min(rate.burst, tokens + (now - at) / rate.intervalMs);
    at = now;
  }
  return { tokens, at };
}
