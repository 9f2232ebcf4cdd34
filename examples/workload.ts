/**
 * The demo workload "report-builder": starts a task with the jit-broker SDK, calls the demo
 * resource server with the task's token, and ends the task.
 *
 * Against dev mode (`npm run dev`, its `export` line pasted into this shell) and the example
 * resource server (`npm run example:resource-server` in another shell):
 *
 *   npm run example:workload
 *
 * Needs JIT_URL and JIT_CA; REPORTS_URL is the resource server (default http://127.0.0.1:8081).
 * It attests with a platform token: dev mode's GET /dev/platform-token stands in for the
 * Kubernetes projected service-account token a pod would read with platformToken({ file }).
 */
import { readFileSync } from 'node:fs';
import { get } from 'node:https';
import { BrokerClient, platformToken } from 'jit-broker/sdk';

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: start dev mode (npm run dev) and paste the export line it prints`);
  return value;
}

const broker = env('JIT_URL');
const ca = readFileSync(env('JIT_CA'), 'utf8');
const reports = process.env.REPORTS_URL ?? 'http://127.0.0.1:8081';

/** A fresh demo service-account token from dev mode (dev mode only; HTTPS with its CA). */
function devPlatformToken(): Promise<string> {
  return new Promise((resolve, reject) => {
    get(`${broker}/dev/platform-token`, { ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET /dev/platform-token: HTTP ${res.statusCode}`))));
    }).on('error', reject);
  });
}

const client = new BrokerClient({ url: broker, ca, attestation: platformToken(devPlatformToken) });

const task = await client.startTask(
  { audience: 'reports-api', actions: ['read'], resources: ['reports://demo/2026-q4'], purpose: 'build the quarterly report' },
  { ttl: '5m', lifetime: '15m' },
);
console.log(`task started: grant ${task.grant}, token valid until ${task.expiresAt.toISOString()}`);
let token: string;
try {
  // task.fetch adds `Authorization: Bearer <task token>` (renewed ahead of expiry)
  const res = await task.fetch(`${reports}/reports/2026-q4`);
  console.log(`reports-api answered ${res.status}: ${await res.text()}`);
  token = await task.token();
} finally {
  await task.end(); // the grant expires now: its tokens are dead everywhere introspection is used
}
console.log(`task ended: grant ${task.grant}`);

// The same token after the end: the resource server's introspection says the grant is over.
const after = await fetch(`${reports}/reports/2026-q4`, { headers: { authorization: `Bearer ${token}` } });
console.log(`after the end, reports-api answered ${after.status}: ${await after.text()}`);
