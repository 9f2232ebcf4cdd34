import type { Context, Hono } from 'hono';
import { json } from '../errors.js';
import { readJson } from '../body.js';
import type { RouteDeps } from '../call-context.js';
import type { CallContext } from '../../broker.js';
import { InvalidRequest } from '../../errors.js';

/** RFC 9449 §7.1: `DPoP` then one token68, the DPoP-bound task token. */
const DPOP_AUTHORIZATION = /^DPoP +([A-Za-z0-9\-._~+/]+=*) *$/i;

/** The workload's routes: start a task, renew its token, end it. */
export function taskRoutes(app: Hono, deps: RouteDeps): void {
  const { broker, maxBodyBytes } = deps;
  const callContext = (c: Context): CallContext => withDpop(c, deps.callContext(c));

  // Every answer, errors included, carries the current nonce when nonces are on (RFC 9449 §8).
  app.use('/v1/tasks/*', async (c, next) => {
    await next();
    const nonce = broker.dpopNonce();
    if (nonce !== undefined) c.res.headers.set('DPoP-Nonce', nonce);
  });

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

/** The `DPoP` proof header and a token sent as `Authorization: DPoP <token>` (RFC 9449 §4.1, §7.1). */
function withDpop(c: Context, ctx: CallContext): CallContext {
  const proof = dpopHeader(c);
  const authorization = c.req.header('authorization');
  let token: string | undefined;
  if (authorization !== undefined && /^DPoP(\s|$)/i.test(authorization)) {
    token = DPOP_AUTHORIZATION.exec(authorization)?.[1];
    if (token === undefined) throw new InvalidRequest('the Authorization header must be "DPoP <token>"');
  }
  return { ...ctx, ...(proof !== undefined ? { dpop: proof } : {}), ...(token !== undefined ? { bearer: token } : {}) };
}

/** The `DPoP` proof header, if sent (RFC 9449 §4.1). */
export function dpopHeader(c: Context): string | undefined {
  const proof = c.req.header('dpop');
  // Several DPoP headers arrive joined by commas, which no compact JWS contains (§4.3: exactly one).
  if (proof !== undefined && proof.includes(',')) throw new InvalidRequest('send exactly one DPoP header');
  return proof;
}
