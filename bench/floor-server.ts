/**
 * The HTTP floor: what a task start costs without the task. hono on @hono/node-server, as the
 * broker serves, reading the JSON body with the broker's own reader (src/http/body.ts, size limit
 * while streaming) and answering 201 with a fixed document through the broker's own json()
 * helper: a real issuance response, so both sides of the wire carry what issuance carries. No
 * attestation, policy, Redis or signing: the broker's issuance can get at most this fast.
 *
 * Usage: node --import tsx bench/floor-server.ts <port> <response.json>
 */
import { readFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { readJson } from '../src/http/body.js';
import { json } from '../src/http/errors.js';

const port = Number(process.argv[2]);
const responsePath = process.argv[3];
if (!Number.isInteger(port) || !responsePath) throw new Error('usage: floor-server.ts <port> <response.json>');
const response = JSON.parse(readFileSync(responsePath, 'utf8')) as object;

const app = new Hono();
app.get('/healthz', () => json(200, { status: 'ok' }));
app.post('/v1/tasks', async (c) => {
  await readJson(c, 65_536);
  return json(201, response);
});

// The broker's server timeouts (src/server.ts), so the floor's Node server does the same bookkeeping.
const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1', serverOptions: { requestTimeout: 10_000, headersTimeout: 5000, connectionsCheckingInterval: 1000 } });
const close = () => {
  server.close(() => process.exit(0));
  (server as { closeAllConnections?: () => void }).closeAllConnections?.(); // idle keep-alive connections too
};
process.once('SIGTERM', close);
process.once('SIGINT', close);
