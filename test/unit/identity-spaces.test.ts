/**
 * Identities are scoped to their attestation source (issue 11, item 7): config load refuses any
 * set of sources (OIDC issuers with their preset or template, X.509 trust domains and subject
 * mappings) under which two of them could produce the same workload id, naming both.
 */
import { describe, expect, it } from 'vitest';
import { configProblems as problems } from '../helpers/config.js';

const base = {
  issuer: 'https://broker.example.com',
  store: { kind: 'memory' },
  policies: [{ name: 'r', workloads: ['ci://*'], audiences: ['a'], actions: ['read'] }],
};
const oidc = (...issuers: { issuer: string; mapping: Record<string, unknown> }[]) => ({
  ...base,
  attestation: { oidc: { issuers: issuers.map((i) => ({ audiences: ['jit-broker'], ...i })) } },
});
const template = (issuer: string, t: string) => ({ issuer, mapping: { template: t } });
const k8s = (issuer: string, cluster: string) => ({ issuer, mapping: { preset: 'kubernetes', cluster } });
const github = (issuer: string) => ({ issuer, mapping: { preset: 'github' } });
const x509 = (subjects: unknown[] = []) => ({
  tls: { client_ca_bundles: { 'example.org': '/dev/null', 'example.org.eu': '/dev/null' } },
  attestation: { x509: { subjects } },
});
const joined = (raw: unknown) => problems(raw).join('\n');

describe('attestation sources: distinct workload id spaces', () => {
  it('refuses {iss_host} as the only difference of two issuers on one host (tenantA, tenantB), naming both', () => {
    const msg = joined(oidc(template('https://idp.example/tenantA', 'ci://{iss_host}/{sub}'), template('https://idp.example/tenantB', 'ci://{iss_host}/{sub}')));
    expect(msg).toMatch(/attestation\.oidc\.issuers\[1\]\.mapping: .*https:\/\/idp\.example\/tenantB.*same workload id.*https:\/\/idp\.example\/tenantA/);
    expect(msg).toContain('"ci://idp.example/"');
  });

  it('accepts tenants told apart by {iss_path} (or a distinct literal); {iss_host} suffices on distinct hosts', () => {
    expect(problems(oidc(template('https://idp.example/tenantA', 'ci://{iss_host}{iss_path}/{sub}'), template('https://idp.example/tenantB', 'ci://{iss_host}{iss_path}/{sub}')))).toEqual([]);
    expect(problems(oidc(template('https://idp.example/tenantA', 'ci://a/{sub}'), template('https://idp.example/tenantB', 'ci://b/{sub}')))).toEqual([]);
    expect(problems(oidc(template('https://a.example', 'ci://{iss_host}/{sub}'), template('https://b.example', 'ci://{iss_host}/{sub}')))).toEqual([]);
  });

  it('refuses two kubernetes presets with one cluster name, and accepts distinct ones', () => {
    expect(joined(oidc(k8s('https://k8s-a.example', 'prod'), k8s('https://k8s-b.example', 'prod')))).toMatch(
      /issuers\[1\]\.mapping: .*https:\/\/k8s-b\.example \(preset kubernetes, cluster prod\).*same workload id.*https:\/\/k8s-a\.example/,
    );
    expect(problems(oidc(k8s('https://k8s-a.example', 'prod'), k8s('https://k8s-b.example', 'prod.eu'), k8s('https://k8s-c.example', 'pro')))).toEqual([]);
  });

  it('refuses a template whose fixed prefix is not distinct from (or is a prefix of) another source', () => {
    // No per-source prefix at all: both produce ci://<sub>.
    expect(joined(oidc(template('https://a.example', 'ci://{sub}'), template('https://b.example', 'ci://{sub}')))).toMatch(/issuers\[1\]\.mapping: .*same workload id/);
    // One prefix inside the other's id space.
    expect(joined(oidc(template('https://a.example', 'ci://{sub}'), template('https://b.example', 'ci://fixed/{sub}')))).toMatch(/issuers\[1\]\.mapping: .*same workload id/);
    expect(joined(oidc(k8s('https://k8s.example', 'prod'), template('https://b.example', 'k8s://{cluster}/ns/{ns}/sa/{sa}')))).toMatch(
      /issuers\[1\]\.mapping: .*https:\/\/b\.example.*same workload id.*https:\/\/k8s\.example \(preset kubernetes, cluster prod\)/,
    );
    expect(joined(oidc(github('https://token.actions.githubusercontent.com'), template('https://b.example', 'github://{repository}/{sub}')))).toMatch(/same workload id/);
    // Compared without regard to case: CI:// and ci:// are one scheme.
    expect(joined(oidc(template('https://a.example', 'CI://x/{sub}'), template('https://b.example', 'ci://X/{sub}')))).toMatch(/same workload id/);
  });

  it('refuses two github presets (ids github://owner/repo/… carry no issuer)', () => {
    expect(joined(oidc(github('https://token.actions.githubusercontent.com'), github('https://token.actions.githubusercontent.com/acme')))).toMatch(
      /issuers\[1\]\.mapping: .*githubusercontent\.com\/acme \(preset github\).*same workload id/,
    );
  });

  it('reserves spiffe:// for X.509-SVIDs: a template producing it is refused, with or without X.509 configured', () => {
    expect(joined(oidc(template('https://a.example', 'spiffe://{iss_host}/{sub}')))).toMatch(/issuers\[0\]\.mapping\.template: .*spiffe:\/\/ is reserved for X\.509-SVIDs/);
    expect(joined(oidc(template('https://a.example', 'SPIFFE://example.org/{sub}')))).toMatch(/spiffe:\/\/ is reserved/);
    const sources = oidc(template('https://a.example', 'spiffe://example.org/{sub}'));
    expect(joined({ ...sources, tls: x509().tls, attestation: { ...sources.attestation, ...x509().attestation } })).toMatch(/spiffe:\/\/ is reserved/);
  });

  it('accepts every kind side by side when each has its own id space', () => {
    const sources = oidc(k8s('https://k8s.example', 'prod'), github('https://token.actions.githubusercontent.com'), template('https://idp.example/tenantA', 'ci://{iss_host}{iss_path}/{sub}'));
    const certificates = x509([{ trust_domain: 'example.org', subject: 'CN=batch, O=Acme', workload: 'spiffe://example.org/batch' }]);
    expect(problems({ ...sources, tls: certificates.tls, attestation: { ...sources.attestation, ...certificates.attestation } })).toEqual([]);
  });

  it('refuses two X.509 subject mappings onto one workload id, naming both', () => {
    const msg = joined({
      ...base,
      ...x509([
        { trust_domain: 'example.org', subject: 'CN=batch, O=Acme', workload: 'spiffe://example.org/batch' },
        { trust_domain: 'example.org', subject: 'CN=cron, O=Acme', workload: 'spiffe://example.org/batch' },
      ]),
    });
    expect(msg).toMatch(/attestation\.x509\.subjects\[1\]\.workload: .*CN=cron, O=Acme.*CN=batch, O=Acme/);
  });

  it('refuses one subject mapped twice in a trust domain (the second mapping would never apply)', () => {
    const msg = joined({
      ...base,
      ...x509([
        { trust_domain: 'example.org', subject: 'CN=batch, O=Acme', workload: 'spiffe://example.org/batch' },
        { trust_domain: 'example.org', subject: 'CN=batch,O=Acme', workload: 'spiffe://example.org/batch2' },
      ]),
    });
    expect(msg).toMatch(/attestation\.x509\.subjects\[1\]\.subject: repeats the subject of attestation\.x509\.subjects\[0\]/);
  });
});
