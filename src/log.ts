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

export function createLogger(opts: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { svc: 'jit-broker' },
    },
    opts.destination as pino.DestinationStream | undefined,
  );
}

/** A logger that drops everything (unit tests). */
export const silentLogger: Logger = pino({ level: 'silent' });
