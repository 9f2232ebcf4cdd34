/**
 * A broker that can attest no one is not ready (issue 15, item 1): with no attestation source in
 * its config, /readyz answers 503 naming the check, and the config warning is logged at start.
 * Real HTTP on a loopback port, the memory store.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startBroker, type BrokerRuntime } from '../../src/server.js';

const lines: string[] = [];
let broker: BrokerRuntime;

beforeAll(async () => {
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const config = parseConfig({
    issuer: 'http://127.0.0.1',
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'memory' },
    policies: [{ name: 'r', workloads: ['spiffe://example.org/*'], audiences: ['api'], actions: ['read'] }],
  });
  broker = await startBroker(config, { log: createLogger({ level: 'warn', destination }) });
});
afterAll(async () => {
  await broker?.close();
});

describe('serve without an attestation source', () => {
  it('is alive but not ready, and says which check fails', async () => {
    expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);
    const res = await fetch(`${broker.url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'not_ready', failing: ['attestation'] });
  });

  it('logs the config warning once', () => {
    expect(lines.filter((l) => l.includes('no attestation source is configured (attestation.oidc issuers'))).toHaveLength(1);
  });
});
