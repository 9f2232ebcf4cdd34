import type { Hono } from 'hono';
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

export function healthRoutes(app: Hono, checks: ReadinessCheck[]): void {
  app.get('/healthz', () => json(200, { status: 'ok' }));
  app.get('/readyz', async () => {
    const results = await Promise.all(checks.map(async (c) => [c.name, await runCheck(c)] as const));
    const failing = Object.fromEntries(results.filter(([, reason]) => reason !== undefined));
    const ready = Object.keys(failing).length === 0;
    return json(ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready', checks: Object.fromEntries(results.map(([n, r]) => [n, r ?? 'ok'])) }, ready ? {} : { 'Retry-After': '1' });
  });
}
