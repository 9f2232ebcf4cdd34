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
 * It attests with a platform token: dev mode's GET /dev/platform-token (or JIT_PLATFORM_TOKEN_URL,
 * e.g. the compose demo issuer's GET /token) stands in for the Kubernetes projected
 * service-account token a pod would read with platformToken({ file }). JIT_CA is needed only for
 * an HTTPS broker.
 */
import { readFileSync } from 'node:fs';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { BrokerClient, platformToken } from 'jit-broker/sdk';

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: start dev mode (npm run dev) and paste the export line it prints`);
  return value;
}

const broker = env('JIT_URL');
const ca = process.env.JIT_CA ? readFileSync(process.env.JIT_CA, 'utf8') : undefined;
const reports = process.env.REPORTS_URL ?? 'http://127.0.0.1:8081';
const tokenUrl = process.env.JIT_PLATFORM_TOKEN_URL ?? `${broker}/dev/platform-token`;

/** A fresh demo service-account token from dev mode or the demo issuer (demos only). */
function demoPlatformToken(): Promise<string> {
  return new Promise((resolve, reject) => {
    const onResponse = (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${new URL(tokenUrl).pathname}: HTTP ${res.statusCode}`))));
    };
    (tokenUrl.startsWith('https:') ? httpsGet(tokenUrl, { ...(ca ? { ca } : {}) }, onResponse) : httpGet(tokenUrl, onResponse)).on('error', reject);
  });
}

const client = new BrokerClient({ url: broker, ...(ca ? { ca } : {}), attestation: platformToken(demoPlatformToken) });

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
