import { z } from 'zod';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Parses "90s", "5m", "1h", "7d", "250ms" or a number of seconds into milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`invalid duration ${value}`);
    return Math.round(value * 1000);
  }
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(value.trim());
  if (!m) throw new RangeError(`invalid duration "${value}" (use e.g. 90s, 5m, 1h)`);
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/** Formats milliseconds the way config files write them (largest exact unit). */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A config file's duration: text with a unit. A bare number is refused (is `300` seconds or milliseconds?). */
const durationInput = z.union([z.string(), z.number()], { error: 'must be a duration with a unit, e.g. "90s", "5m", "1h"' });

/** The problem of a bare number where a config file needs a duration, with the forms it may have meant. */
export function bareNumberDuration(n: number): string {
  const whole = Number.isInteger(n) && n >= 0;
  const hint = !whole ? '"90s", "5m"' : [`"${n}s"`, n > 0 && n % 60 === 0 ? `"${formatDuration(n * 1000)}"` : undefined].filter(Boolean).join(', ');
  return `a duration needs a unit: ${hint} (a bare number is not a duration)`;
}

function toMs(value: string | number, ctx: z.RefinementCtx): number {
  if (typeof value === 'number') {
    ctx.addIssue({ code: 'custom', message: bareNumberDuration(value) });
    return z.NEVER;
  }
  try {
    return parseDuration(value);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
}

/** A config duration (`"5m"`, `"250ms"`; a unit is required) validated into milliseconds, `fallback` when absent. */
export const durationField = (fallback: string) => durationInput.default(fallback).transform(toMs);

/** The same without a default (for optional fields such as a rule's `max_ttl`). */
export const durationValue = () => durationInput.transform(toMs);
