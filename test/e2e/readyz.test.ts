/**
 * Anonymous /readyz says only whether the broker is ready and which checks fail, by name (issue
 * 11, finding 8): it used to answer issuer URLs and internal error text to anyone. The details go
 * to the log, once per change. Real HTTP, the harness's Redis, the real local OIDC issuer (taken
 * down), the broker's clock moved by hand past the key cache's max_stale.
 */
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { BrokerRuntime } from '../../src/server.js';
import { AUDIENCE, issuerEntry, postJson, startTestBroker } from '../helpers/broker.js';

const clock = { now: Math.floor(Date.now() / 1000) * 1000 };
const lines: string[] = [];
let issuer: OidcIssuer;
let broker: BrokerRuntime;

beforeAll(async () => {
  issuer = await startOidcIssuer({ alg: 'ES256', clock: () => clock.now });
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  broker = await startTestBroker(
    issuer,
    {
      log: { level: 'info' },
      attestation: { oidc: { issuers: [issuerEntry(issuer, { discovery: true, key_cache: { ttl: '1m', refresh_cooldown: '10s', max_stale: '5m', fetch_timeout: '300ms' } })] } },
    },
    { destination, clock: () => clock.now },
  );
});
afterAll(async () => {
  await broker?.close();
  await issuer?.close();
});

const readyz = async () => {
  const res = await fetch(`${broker.url}/readyz`);
  return { status: res.status, text: await res.text(), retryAfter: res.headers.get('retry-after') };
};
const start = async () =>
  postJson(`${broker.url}/v1/tasks`, {
    attestation: { kind: 'oidc', token: await issuer.mintServiceAccountToken({ cluster: 'test', namespace: 'payments', serviceAccount: 'api', audience: AUDIENCE, ttlSeconds: 3 * 3600 }) },
    intent: { audience: 'db.payments', actions: ['read'], resources: ['db://payments/orders'], purpose: 'readyz' },
  });

describe('anonymous /readyz', () => {
  it('answers only ready, or not_ready with the failing checks by name; the reasons go to the log', async () => {
    const ready = await readyz();
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ status: 'ready' });

    issuer.setMode('down');
    clock.now += 6 * 60_000; // past max_stale: the issuer's keys are unusable
    expect((await start()).status).toBe(503);

    const notReady = await readyz();
    expect(notReady.status).toBe(503);
    expect(notReady.retryAfter).toBe('1');
    expect(JSON.parse(notReady.text)).toEqual({ status: 'not_ready', failing: ['attestation_oidc'] });
    expect(notReady.text).not.toContain(issuer.issuer);
    expect(notReady.text).not.toContain('127.0.0.1');

    // The operator finds the reason in the log: the check by name, the issuer, what went wrong.
    const logged = lines.filter((l) => l.includes('"check":"attestation_oidc"'));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.join('')).toContain(issuer.issuer);
    expect(logged.join('')).toContain('HTTP 500');
    // Asked again with nothing changed: no new line (an anonymous caller cannot flood the log).
    const before = lines.length;
    await readyz();
    await readyz();
    expect(lines.slice(before).filter((l) => l.includes('"check":"attestation_oidc"'))).toEqual([]);

    issuer.setMode('ok');
    clock.now += 11_000; // the next fetch is due
    expect((await start()).status).toBe(201);
    expect(JSON.parse((await readyz()).text)).toEqual({ status: 'ready' });
    expect(lines.slice(before).some((l) => l.includes('"check":"attestation_oidc"') && l.includes('ready again'))).toBe(true);
  });
});
