/**
 * The demo resource server "reports-api": a hono app that accepts only task tokens granted for
 * what each route does, checked by the jit-broker verifier (signature, issuer, audience, expiry,
 * the route's action and resource against the granted intent) and by introspection (the grant
 * is still live, so an ended or revoked task is refused at once).
 *
 * Against dev mode (`npm run dev`, then paste its `export` line into this shell):
 *
 *   npm run example:resource-server          # listens on http://127.0.0.1:8081 (PORT to change)
 *
 * Needs JIT_URL, JIT_CA and JIT_RS_CREDENTIAL (dev mode's demo resource server, audience reports-api).
 * Elsewhere (docker-compose.yml's "examples" profile): JIT_CA only for an HTTPS broker, JIT_ISSUER
 * when the broker's issuer identifier is not JIT_URL, and HOST for the listen address.
 */
import { readFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { requireTask, type TaskVariables } from 'jit-broker/hono';
import { createVerifier } from 'jit-broker/verify';

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: start dev mode (npm run dev) and paste the export line it prints`);
  return value;
}

const broker = env('JIT_URL');
const verifier = createVerifier({
  issuer: process.env.JIT_ISSUER ?? broker, // the broker's issuer identifier (dev mode's is its URL)
  jwksUri: `${broker}/.well-known/jwks.json`,
  audience: 'reports-api',
  // dev mode's throwaway CA, for the JWKS and introspection over HTTPS
  ...(process.env.JIT_CA ? { tls: { ca: readFileSync(process.env.JIT_CA) } } : {}),
  // cacheTtl 0: every request asks the broker, so an ended or revoked task is refused at once (as
  // the example workload shows). The default, 5 s, trades up to that much delay for fewer calls.
  introspection: { url: `${broker}/oauth2/introspect`, credential: env('JIT_RS_CREDENTIAL'), cacheTtl: 0 },
});
await verifier.warmUp(); // fetch the broker's keys now: fail at start, not on the first request

const app = new Hono<{ Variables: TaskVariables }>();

// GET /reports/:id needs a task granted `read` on reports://demo/<id>
app.get(
  '/reports/:id',
  requireTask({ verifier, action: 'read', resource: (c) => `reports://demo/${c.req.param('id')}` }),
  (c) => {
    const task = c.get('task');
    console.log(`reports-api: ${task.workload} read report ${c.req.param('id')} (task ${task.task}, grant ${task.grant})`);
    return c.json({ report: c.req.param('id'), status: 'ready', rows: 3, for: task.workload, purpose: task.intent.purpose });
  },
);

const hostname = process.env.HOST ?? '127.0.0.1';
const server = serve({ fetch: app.fetch, hostname, port: Number(process.env.PORT ?? 8081) }, (info) => {
  console.log(`reports-api listening on http://${hostname}:${info.port} (audience reports-api, broker ${broker})`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    verifier.close();
    server.close();
  });
}
