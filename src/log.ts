import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/**
 * Paths redacted in every log line. Tokens, keys and secrets never reach the log; anything
 * that could hold one is listed here as a second line of defence.
 */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'access_token',
  '*.access_token',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
  'privateKey',
  '*.privateKey',
  'd',
  '*.d',
  'secret',
  '*.secret',
  'password',
  '*.password',
];

/**
 * A JWS compact serialisation (any task or platform token: `{"` is `eyJ`), and PEM private keys.
 * A match starts only where no base64url character precedes it: a run like eyJeyJeyJ… is then
 * scanned once, not once per position (quadratic on client-shaped text).
 */
const JWT_TEXT = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*/g;
const PEM_PRIVATE_KEY = /-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(-----END ([A-Z0-9]+ )*PRIVATE KEY-----|$)/g;

/**
 * Text with every token and PEM private key replaced. Log messages and fields can carry what a
 * caller sent (a JSON key it named, the path it asked for): a token that lands there by mistake
 * is not written to the log.
 */
export function scrubSecrets(text: string): string {
  if (!text.includes('eyJ') && !text.includes('PRIVATE KEY-----')) return text;
  return text.replace(JWT_TEXT, '[redacted token]').replace(PEM_PRIVATE_KEY, '[redacted private key]');
}

/** `value` with its strings scrubbed (plain objects and arrays, a few levels deep); the same reference when nothing changed. */
function scrubValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return scrubSecrets(value);
  if (depth <= 0 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    value.forEach((v, i) => {
      const s = scrubValue(v, depth - 1);
      if (s !== v) (out ??= [...value])[i] = s;
    });
    return out ?? value;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value; // errors and class instances: serializers' business
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(value)) {
    const s = scrubValue(v, depth - 1);
    if (s !== v) (out ??= { ...(value as Record<string, unknown>) })[k] = s;
  }
  return out ?? value;
}

/**
 * `buffered`: stdout written asynchronously, so a line costs no write(2) of its own under load
 * (about 9% of an issuance's CPU when each line was written synchronously: bench/).
 */
export function createLogger(opts: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream; buffered?: boolean } = {}): Logger {
  // Bounded: if stdout stops draining, lines beyond 16 MiB are dropped rather than held. pino
  // writes out what is buffered when the process exits.
  const destination = opts.destination ?? (opts.buffered ? pino.destination({ dest: 1, sync: false, maxLength: 16 * 2 ** 20 }) : undefined);
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { svc: 'jit-broker' },
      // A second line of defence for what redaction paths cannot name: tokens inside text.
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? scrubSecrets(a) : a)) as Parameters<typeof method>);
        },
      },
      // `"level":"info"`, not pino's number: readable and matched by log pipelines without a table.
      formatters: { level: (label) => ({ level: label }), log: (obj) => scrubValue(obj, 4) as Record<string, unknown> },
    },
    destination as pino.DestinationStream | undefined,
  );
}

/** A logger that drops everything (unit tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
