/**
 * The HTTP floor under the same load as issuance: same connections, same request body, a
 * response of the same size (bench/floor-server.ts in its own process, CPU read like the broker's).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../src/util/net.js';
import { withNodeChild } from './child.js';
import { JSON_HEADERS, fixed, load, type Measured } from './load.js';

export async function floorScenario(dir: string, issuance: { request: string; response: string }): Promise<Measured> {
  const port = await freePort();
  const responsePath = join(dir, 'floor-response.json');
  writeFileSync(responsePath, issuance.response, { mode: 0o600 }); // holds a (bench) token
  const url = `http://127.0.0.1:${port}`;
  const bytes = `${issuance.request.length} B in, ${issuance.response.length} B out`;
  return withNodeChild({ name: 'HTTP floor', url, readyPath: '/healthz', args: ['bench/floor-server.ts', String(port), responsePath] }, (floor) =>
    load({
      key: 'floor',
      label: `HTTP floor: hono on @hono/node-server, POST body read and fixed JSON answered (${bytes})`,
      servers: [floor],
      cpu: [{ who: 'floor', pids: [floor.pid] }],
      traffic: fixed({ method: 'POST', path: '/v1/tasks', headers: JSON_HEADERS, body: issuance.request, verifyBody: (b) => b.includes('"access_token"') }),
    }),
  );
}
