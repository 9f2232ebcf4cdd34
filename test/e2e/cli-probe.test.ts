/**
 * `check-config --probe` (issue 15, item 1): reaches the Redis store and each OIDC issuer's keys
 * and prints one result per probe; exit 69 when one does not answer. The harness's real Redis, a
 * real local OIDC issuer, and a port nothing listens on and an issuer taken down for the failures.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcIssuer, type OidcIssuer } from '../../src/dev/oidc-issuer.js';
import { cli, configDir } from '../helpers/cli.js';
import { freePort, redisUrl } from '../helpers/redis.js';

const files = configDir('jit-cli-probe-');
let live: OidcIssuer;
let gone: OidcIssuer;
beforeAll(async () => {
  live = await startOidcIssuer({ alg: 'ES256' });
  gone = await startOidcIssuer({ alg: 'ES256' });
  await gone.close();
});
afterAll(async () => {
  await live?.close();
  files.cleanup();
});

const entry = (issuer: string, cluster: string) => ({ issuer, audiences: ['jit-broker'], algorithms: ['ES256'], mapping: { preset: 'kubernetes', cluster } });
const config = (url: string, issuers: ReturnType<typeof entry>[]) => ({
  issuer: 'https://broker.test',
  store: { kind: 'redis', url, command_timeout: '1s' },
  attestation: { oidc: { issuers } },
  policies: [{ name: 'r', workloads: ['k8s://a/**', 'k8s://b/**'], audiences: ['api'], actions: ['read'] }],
});
const env = { JIT_KEY_PUBLICATION_SECRET: 'p'.repeat(32), JIT_CONFIG: undefined, REDIS_URL: undefined };

describe('check-config --probe', () => {
  it('reports Redis and each issuer reached (exit 0)', async () => {
    const path = files.write('live.yaml', config(redisUrl(), [entry(live.issuer, 'a')]));
    const r = await cli(['check-config', '--config', path, '--probe'], env);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(`${path}: ok`);
    expect(lines[1]).toMatch(new RegExp(`^${path}: probe: store redis://.*: ok: reachable \\(PONG\\)$`));
    expect(lines[2]).toMatch(new RegExp(`^${path}: probe: issuer ${live.issuer}: ok: \\d+ keys?$`));
    expect(lines).toHaveLength(3);
  });

  it('reports each probe that fails, and exits 69', async () => {
    const path = files.write('down.yaml', config(`redis://127.0.0.1:${await freePort()}`, [entry(live.issuer, 'a'), entry(gone.issuer, 'b')]));
    const r = await cli(['check-config', '--config', path, '--probe'], env);
    expect(r.code).toBe(69);
    const lines = r.stdout.trim().split('\n');
    expect(lines[1]).toMatch(/: probe: store redis:\/\/127\.0\.0\.1:\d+: FAILED: .+/);
    expect(lines[2]).toMatch(new RegExp(`: probe: issuer ${live.issuer}: ok: `));
    expect(lines[3]).toMatch(new RegExp(`: probe: issuer ${gone.issuer}: FAILED: .+`));
    expect(r.stderr).toContain(`${path}: 2 probes failed`);
  });
});
