/**
 * The workload client's task.token() on a live task, in-process: what a workload pays per call
 * to get its token (a cached token, no renewal due). The task is started against a real broker
 * (memory store, loopback HTTP) with a real OIDC issuer, as a workload would.
 */
import { parseConfig } from '../src/config/load.js';
import { startOidcIssuer } from '../src/dev/oidc-issuer.js';
import { silentLogger } from '../src/log.js';
import { BrokerClient, platformToken } from '../src/sdk/index.js';
import { startBroker } from '../src/server.js';
import { measure, type OpCost } from './sign.js';

export async function measureClientToken(iterations = 200_000): Promise<OpCost> {
  const issuer = await startOidcIssuer({ alg: 'ES256' });
  const config = parseConfig({
    issuer: 'https://broker.bench',
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'memory' },
    attestation: { oidc: { issuers: [{ issuer: issuer.issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'bench' } }] } },
    policies: [{ name: 'bench', workloads: ['k8s://bench/ns/bench/sa/*'], audiences: ['db.bench'], actions: ['read'], resources: ['db://bench/**'] }],
  });
  const broker = await startBroker(config, { log: silentLogger });
  try {
    const client = new BrokerClient({
      url: broker.url,
      attestation: platformToken(() => issuer.mintServiceAccountToken({ cluster: 'bench', namespace: 'bench', serviceAccount: 'sdk', audience: 'jit-broker', ttlSeconds: 600 })),
    });
    const task = await client.startTask({ audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench' });
    try {
      return await measure(() => task.token(), iterations);
    } finally {
      await task.end();
    }
  } finally {
    await broker.close();
    await issuer.close();
  }
}
