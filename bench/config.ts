/** The knobs of `npm run bench` (environment variables), read once. */

const num = (name: string, fallback: number, integer = true): number => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, not "${raw}"`);
  return n;
};

/** Seconds of each measured load (after the warm-up). */
export const DURATION_S = num('BENCH_DURATION', 10, false);
/** Keep-alive connections of each load (split evenly when one load drives several servers). */
export const CONNECTIONS = num('BENCH_CONNECTIONS', 64);
/** How many times the whole set of loads runs; the table gives the median and min–max. */
export const RUNS = num('BENCH_RUNS', 3);
export const WARMUP_S = 2;
/** Live grants already in Redis for the growth comparison (written once, 100 per workload). */
export const GROWTH_GRANTS = num('BENCH_GROWTH_GRANTS', 1_000_000);
/** Grants per workload in the growth fill: a listing page's worth. */
export const GROWTH_PER_WORKLOAD = 100;
