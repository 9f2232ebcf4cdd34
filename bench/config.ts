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
/** A comma-separated list of positive integers ("1,8,64"), ascending and without repeats. */
const levels = (name: string, fallback: number[]): number[] => {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const xs = raw.split(',').map((x) => Number(x.trim()));
  const ok = xs.every((n) => Number.isInteger(n) && n > 0) && xs.every((n, i) => i === 0 || n > xs[i - 1]!);
  if (!ok) throw new Error(`${name} must be ascending positive integers separated by commas, e.g. "1,8,64", not "${raw}"`);
  return xs;
};

/**
 * The concurrencies (keep-alive connections) the task-start, renewal and peer loads run at, each
 * in turn: one task start at a time is how most workloads call the broker, 64 is saturation.
 */
export const CONNECTION_LEVELS = levels('BENCH_CONNECTIONS', [1, 8, 64]);
/** Keep-alive connections of every other load: the highest level (split evenly when one load drives several servers). */
export const CONNECTIONS = CONNECTION_LEVELS[CONNECTION_LEVELS.length - 1]!;
/** How many times the whole set of loads runs; the table gives the median and min–max. */
export const RUNS = num('BENCH_RUNS', 3);
export const WARMUP_S = 2;
/** Live grants already in Redis for the growth comparison (written once, 100 per workload). */
export const GROWTH_GRANTS = num('BENCH_GROWTH_GRANTS', 1_000_000);
/** Grants per workload in the growth fill: a listing page's worth. */
export const GROWTH_PER_WORKLOAD = 100;

/** The key of a scenario run at `connections`: the plain key at CONNECTIONS, "key@N" at the lower levels. */
export const atLevel = (key: string, connections: number): string => (connections === CONNECTIONS ? key : `${key}@${connections}`);
