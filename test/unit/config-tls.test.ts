import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configProblems } from '../helpers/config.js';

const base = {
  issuer: 'https://broker.example.com',
  store: { kind: 'memory' },
  policies: [{ name: 'r', workloads: ['spiffe://example.org/*'], audiences: ['a'], actions: ['read'] }],
};
const bundles = { 'example.org': '/etc/jit/example.org.pem' };
const subject = (trust_domain: string, workload: string) => ({ trust_domain, subject: 'CN=batch, O=Acme', workload });

const problems = configProblems;

describe('config: tls and attestation.x509', () => {
  it('accepts a complete setup and applies the defaults', () => {
    const cfg = parseConfig({
      ...base,
      tls: { cert: '/etc/jit/tls.pem', key: '/etc/jit/tls-key.pem', client_ca_bundles: bundles },
      attestation: { x509: { subjects: [subject('example.org', 'spiffe://example.org/legacy/batch')], forwarded: { trusted_proxies: ['10.0.0.0/8', '::1'] } } },
    });
    expect(cfg.tls).toEqual({ cert: '/etc/jit/tls.pem', key: '/etc/jit/tls-key.pem', client_ca_bundles: bundles, reload_interval: 5000 });
    expect(cfg.attestation.x509?.forwarded).toEqual({ header: 'x-forwarded-client-cert', format: 'xfcc', trusted_proxies: ['10.0.0.0/8', '::1'] });
    expect(cfg.attestation.x509?.subjects).toHaveLength(1);
  });

  it('tls.cert and tls.key go together', () => {
    expect(problems({ ...base, tls: { cert: '/c.pem' } })).toEqual(['tls.key: tls.cert and tls.key go together']);
    expect(problems({ ...base, tls: { key: '/k.pem' } })).toEqual(['tls.cert: tls.cert and tls.key go together']);
    expect(problems({ ...base, tls: { client_ca_bundles: bundles } })).toEqual([]);
  });

  it('attestation.x509 needs at least one client CA bundle', () => {
    const message = 'attestation.x509: needs tls.client_ca_bundles (the CAs that validate client certificates)';
    expect(problems({ ...base, attestation: { x509: {} } })).toEqual([message]);
    expect(problems({ ...base, tls: { cert: '/c.pem', key: '/k.pem' }, attestation: { x509: {} } })).toEqual([message]);
    expect(problems({ ...base, tls: { client_ca_bundles: {} }, attestation: { x509: {} } })).toEqual([message]);
  });

  it('a subject mapping needs a bundle for its trust domain, and its workload in that trust domain', () => {
    expect(
      problems({
        ...base,
        tls: { client_ca_bundles: bundles },
        attestation: { x509: { subjects: [subject('example.org', 'spiffe://example.org/ok'), subject('other.org', 'spiffe://other.org/batch')] } },
      }),
    ).toEqual(['attestation.x509.subjects[1].trust_domain: has no bundle in tls.client_ca_bundles']);
    expect(
      problems({ ...base, tls: { client_ca_bundles: bundles }, attestation: { x509: { subjects: [subject('example.org', 'spiffe://other.org/batch')] } } }),
    ).toEqual(['attestation.x509.subjects[0].workload: must be in trust domain example.org']);
  });

  it('a subject mapping needs a valid trust domain, distinguished name and workload SPIFFE ID', () => {
    expect(
      problems({
        ...base,
        tls: { client_ca_bundles: bundles },
        attestation: {
          x509: {
            subjects: [
              { trust_domain: 'Example.org', subject: 'CN=a', workload: 'spiffe://example.org/a' },
              { trust_domain: 'example.org', subject: 'CN=a', workload: 'spiffe://example.org' },
              { trust_domain: 'example.org', subject: '', workload: 'spiffe://example.org/a' },
            ],
          },
        },
      }),
    ).toEqual(
      // Follow-up issues (e.g. "has no bundle" for the invalid trust domain) may come too.
      expect.arrayContaining([
        'attestation.x509.subjects[0].trust_domain: the trust domain must be lowercase',
        'attestation.x509.subjects[1].workload: must be a SPIFFE ID: a workload SPIFFE ID must have a path (spiffe://trust-domain/path)',
        'attestation.x509.subjects[2].subject: Too small: expected string to have >=1 characters',
      ]),
    );
  });

  it('refuses a client_ca_bundles key that is not a trust domain name', () => {
    const cases: [string, string][] = [
      ['Example.org', 'the trust domain must be lowercase'],
      ['example.org:443', 'the trust domain must not carry a port'],
      ['spiffe://example.org', 'the trust domain must not carry a port'],
      ['', 'the trust domain is empty'],
    ];
    for (const [key, reason] of cases) {
      const list = problems({ ...base, tls: { client_ca_bundles: { [key]: '/b.pem', 'ok.org': '/ok.pem' } } });
      expect(list, key).toHaveLength(1);
      expect(list[0], key).toMatch(new RegExp(`^tls\\.client_ca_bundles\\.${key.replace(/[.:/]/g, '\\$&')}: not a trust domain name: ${reason}$`));
    }
  });

  it('refuses trusted_proxies entries that are not an address or CIDR block', () => {
    const message = 'must be an IP address or CIDR block such as 10.0.0.0/8';
    const bad = ['10.0.0.0/33', '::/129', '10.0.0.1/8/2', 'localhost', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/a', '300.1.1.1', ''];
    const list = problems({ ...base, tls: { client_ca_bundles: bundles }, attestation: { x509: { forwarded: { trusted_proxies: ['10.0.0.0/8', ...bad] } } } });
    expect(list).toEqual(bad.map((_, i) => `attestation.x509.forwarded.trusted_proxies[${i + 1}]: ${message}`));
    const good = ['10.0.0.0/8', '0.0.0.0/0', '192.168.1.7', '192.168.1.7/32', '::1', '::/0', '2001:db8::/32', '::ffff:10.0.0.0/104'];
    expect(problems({ ...base, tls: { client_ca_bundles: bundles }, attestation: { x509: { forwarded: { trusted_proxies: good } } } })).toEqual([]);
  });

  it('forwarded needs at least one trusted proxy and a header name', () => {
    expect(problems({ ...base, tls: { client_ca_bundles: bundles }, attestation: { x509: { forwarded: { trusted_proxies: [] } } } })).toEqual([
      'attestation.x509.forwarded.trusted_proxies: Too small: expected array to have >=1 items',
    ]);
    expect(
      problems({ ...base, tls: { client_ca_bundles: bundles }, attestation: { x509: { forwarded: { header: 'x cert', trusted_proxies: ['::1'] } } } }),
    ).toEqual(['attestation.x509.forwarded.header: must be an HTTP header name']);
  });

  it('tls.reload_interval must be between 100ms and 1h', () => {
    for (const reload_interval of ['99ms', '0s', '61m', '2h']) {
      expect(problems({ ...base, tls: { client_ca_bundles: bundles, reload_interval } }), reload_interval).toEqual([
        'tls.reload_interval: must be between 100ms and 1h',
      ]);
    }
    for (const [reload_interval, ms] of [['100ms', 100], ['1h', 3_600_000], ['30s', 30_000]] as const) {
      expect(parseConfig({ ...base, tls: { client_ca_bundles: bundles, reload_interval } }).tls?.reload_interval, reload_interval).toBe(ms);
    }
  });
});
