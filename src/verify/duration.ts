/** A duration option: seconds as a number (as jose's clockTolerance), or "500ms", "30s", "10m". */
export type Duration = number | `${number}ms` | `${number}s` | `${number}m`;

export function durationMs(value: Duration, name: string): number {
  let ms: number;
  if (typeof value === 'number') ms = value * 1000;
  else {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value);
    if (!m) throw new TypeError(`${name} must be seconds or a string such as "30s"`);
    ms = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000);
  }
  if (!Number.isFinite(ms) || ms < 0) throw new TypeError(`${name} must be a non-negative duration`);
  return ms;
}
