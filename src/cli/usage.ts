/** A wrong command line: printed with a pointer to the command's help, exit 2. */
export class UsageError extends Error {}

/** Exit codes: 0 ok, 1 failure (a broker error, a failing policy case), 2 usage, 78 config (EX_CONFIG). */
export const EXIT = { ok: 0, failure: 1, usage: 2, config: 78 } as const;

/** One `jit-broker COMMAND`: its full help and what it does (its overview line is in main.ts). */
export interface Command {
  name: string;
  /** `jit-broker help COMMAND`, `jit-broker COMMAND --help`. */
  help: string;
  /** Resolves with the exit code, or -1 for a command that keeps running (serve, dev) until a signal. */
  run(args: string[]): Promise<number>;
}

/** The first positional (the subcommand) and the rest. */
export function subcommand(args: string[], name: string, allowed: readonly string[]): [string, string[]] {
  const [sub, ...rest] = args;
  if (sub === undefined || sub.startsWith('-')) throw new UsageError(`${name} needs a subcommand: ${allowed.join(', ')}`);
  if (!allowed.includes(sub)) throw new UsageError(`${name} has no subcommand "${sub}" (it has ${allowed.join(', ')})`);
  return [sub, rest];
}

/** A whole number flag within bounds, else a usage error naming the flag. */
export function intFlag(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < min || Number(value) > max) throw new UsageError(`--${flag} must be a whole number from ${min} to ${max}`);
  return Number(value);
}

/** Writes one line to stdout. */
export const out = (text: string): void => {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
};

/** JSON for scripts: one document, pretty-printed. */
export const printJson = (value: unknown): void => out(JSON.stringify(value, null, 2));
