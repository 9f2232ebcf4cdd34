import type { Hono } from 'hono';
import { json } from '../errors.js';
import { readJson } from '../body.js';
import type { RouteDeps } from '../call-context.js';

/** The workload's routes: start a task, renew its token, end it. */
export function taskRoutes(app: Hono, deps: RouteDeps): void {
  const { broker, maxBodyBytes, callContext } = deps;

  app.post('/v1/tasks', async (c) => {
    const body = await readJson(c, maxBodyBytes);
    return json(201, await broker.startTask(body, callContext(c)));
  });

  app.post('/v1/tasks/:grant/renew', async (c) => {
    // Over mTLS the certificate is the evidence, so the body may be empty.
    const body = await readJson(c, maxBodyBytes, { optional: true });
    return json(200, await broker.renewTask(c.req.param('grant'), body, callContext(c)));
  });

  app.post('/v1/tasks/:grant/end', async (c) => {
    return json(200, await broker.endTask(c.req.param('grant'), callContext(c)));
  });
}
