import type { Hono } from 'hono';
import type { Logger } from '../../log.js';
import { clip } from '../../util/text.js';
import { json } from '../errors.js';

/** A named readiness probe: resolves to a reason when not ready, undefined when ready. */
export interface ReadinessCheck {
  name: string;
  check(): Promise<string | undefined> | string | undefined;
}

const CHECK_TIMEOUT_MS = 1000;

async function runCheck(check: ReadinessCheck): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${CHECK_TIMEOUT_MS} ms`), CHECK_TIMEOUT_MS);
  });
  try {
    return await Promise.race([Promise.resolve().then(() => check.check()), timeout]);
  } catch (e) {
    return (e as Error).message;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `/readyz` is anonymous: it says only `ready`, or `not_ready` with the names of the failing checks.
 * Why a check fails (issuer URLs, store errors) is for operators: it goes to the log when a
 * check's state or reason changes, so polling (or an anonymous caller) adds no lines.
 */
export function healthRoutes(app: Hono, checks: ReadinessCheck[], log: Logger): void {
  const lastReason = new Map<string, string | undefined>();
  const record = (name: string, reason: string | undefined) => {
    const before = lastReason.get(name);
    lastReason.set(name, reason);
    if (reason !== undefined && reason !== before) log.warn({ check: name, reason: clip(reason, 1024) }, 'readiness check failing');
    else if (reason === undefined && before !== undefined) log.info({ check: name }, 'readiness check ready again');
  };
  app.get('/healthz', () => json(200, { status: 'ok' }));
  app.get('/readyz', async () => {
    const results = await Promise.all(checks.map(async (c) => [c.name, await runCheck(c)] as const));
    for (const [name, reason] of results) record(name, reason);
    const failing = results.filter(([, reason]) => reason !== undefined).map(([name]) => name);
    if (failing.length === 0) return json(200, { status: 'ready' });
    return json(503, { status: 'not_ready', failing }, { 'Retry-After': '1' });
  });
}
