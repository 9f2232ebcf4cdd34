import type { TailOptions } from '../../src/operator/audit-log.js';
import type { z } from 'zod';
import type { oidcConfigSchema } from '../../src/attestation/oidc/index.js';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { startBroker, type BrokerRuntime } from '../../src/server.js';
import type { OidcIssuer } from '../../src/dev/oidc-issuer.js';
import type { Clock } from '../../src/util/clock.js';
import { testLogger } from './log-capture.js';
import { redisUrl, TEST_KEY_PUBLICATION_SECRET, uniquePrefix } from './redis.js';

export const AUDIENCE = 'jit-broker';

type OidcIssuerInput = NonNullable<z.input<typeof oidcConfigSchema>['issuers']>[number];

/** The test issuer as a broker's `attestation.oidc` entry (Kubernetes mapping, cluster "test"), with `extra` settings. */
export function issuerEntry(issuer: OidcIssuer, extra: Partial<OidcIssuerInput> = {}): OidcIssuerInput {
  return { issuer: issuer.issuer, audiences: [AUDIENCE], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster: 'test' }, ...extra };
}

/**
 * A broker on a free loopback port, backed by the harness's real Redis under a unique prefix. It
 * logs at trace level into the run's log capture (scanned for secrets when the run ends), and to
 * `destination` at the configured level when one is given.
 */
export async function startTestBroker(
  issuer: OidcIssuer,
  overrides: Partial<ConfigInput> & { prefix?: string } = {},
  opts: { destination?: NodeJS.WritableStream; clock?: Clock; auditTails?: TailOptions } = {},
): Promise<BrokerRuntime & { prefix: string }> {
  const prefix = overrides.prefix ?? uniquePrefix('broker');
  const { prefix: _p, ...rest } = overrides;
  const config = parseConfig({
    issuer: 'https://broker.test',
    listen: { host: '127.0.0.1', port: 0 },
    store: { kind: 'redis', url: redisUrl(), key_prefix: prefix },
    attestation: {
      oidc: {
        issuers: [issuerEntry(issuer)],
      },
    },
    // Matrix tests send many bad credentials from one address: the limits get their own tests.
    limits: { failed_attestations: { burst: 1_000_000 }, issuance: { rate: 1_000_000, burst: 1_000_000 } },
    policies: [
      {
        name: 'payments',
        workloads: ['k8s://test/ns/payments/sa/*'],
        audiences: ['db.payments'],
        actions: ['read', 'write'],
        resources: ['db://payments/**'],
        max_ttl: '10m',
        max_lifetime: '1h',
      },
    ],
    ...rest,
    // Every test broker shares one publication secret unless the test sets its own.
    tokens: { key_publication_secret: TEST_KEY_PUBLICATION_SECRET, ...rest.tokens },
  });
  const log = testLogger({ level: config.log.level, destination: opts.destination }) ?? silentLogger;
  const runtime = await startBroker(config, { log, ...(opts.clock ? { clock: opts.clock } : {}), ...(opts.auditTails ? { auditTails: opts.auditTails } : {}) });
  return Object.assign(runtime, { prefix });
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, headers: res.headers, json };
}
