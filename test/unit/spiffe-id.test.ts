import { describe, expect, it } from 'vitest';
import { parseSpiffeId, trustDomainProblem } from '../../src/attestation/spiffe-id.js';

const TD_255 = Array.from({ length: 4 }, () => 'a'.repeat(63)).join('.'); // 4 labels of 63 + 3 dots
const ID_PREFIX = 'spiffe://example.org/';
const ID_2048 = ID_PREFIX + 'p'.repeat(2048 - ID_PREFIX.length);

describe('parseSpiffeId: valid IDs', () => {
  const valid: [string, { requirePath?: boolean }, { trustDomain: string; path: string }][] = [
    ['spiffe://example.org/ns/payments/sa/api', { requirePath: true }, { trustDomain: 'example.org', path: '/ns/payments/sa/api' }],
    ['spiffe://example.org/a', { requirePath: true }, { trustDomain: 'example.org', path: '/a' }],
    ['spiffe://td-1_x.example/Mixed.Case-Path_09', { requirePath: true }, { trustDomain: 'td-1_x.example', path: '/Mixed.Case-Path_09' }],
    ['spiffe://example.org/..a/b..', { requirePath: true }, { trustDomain: 'example.org', path: '/..a/b..' }],
    ['spiffe://example.org', {}, { trustDomain: 'example.org', path: '' }],
    ['spiffe://example.org', { requirePath: false }, { trustDomain: 'example.org', path: '' }],
    [`spiffe://${TD_255}/x`, { requirePath: true }, { trustDomain: TD_255, path: '/x' }],
    [ID_2048, { requirePath: true }, { trustDomain: 'example.org', path: ID_2048.slice('spiffe://example.org'.length) }],
  ];

  it.each(valid)('%s %o', (id, opts, expected) => {
    expect(parseSpiffeId(id, opts)).toEqual({ ok: true, value: { id, ...expected } });
  });

  it('the fixtures sit exactly on the limits', () => {
    expect(TD_255).toHaveLength(255);
    expect(Buffer.byteLength(ID_2048)).toBe(2048);
  });
});

describe('parseSpiffeId: invalid IDs, each with its reason', () => {
  const invalid: [string, string, { requirePath?: boolean }?][] = [
    ['spiffe://Example.org/ns/a', 'the trust domain must be lowercase'],
    ['spiffe://EXAMPLE.ORG', 'the trust domain must be lowercase'],
    ['spiffe://example.org:8443/ns/a', 'the trust domain must not carry a port'],
    ['spiffe://admin@example.org/ns/a', 'the trust domain must not carry userinfo'],
    ['spiffe://user:pw@example.org/ns/a', 'the trust domain must not carry userinfo'],
    ['spiffe://example.org/ns/a?x=1', 'a SPIFFE ID must not have a query'],
    ['spiffe://example.org?x=1', 'a SPIFFE ID must not have a query'],
    ['spiffe://example.org/ns/a#frag', 'a SPIFFE ID must not have a fragment'],
    ['spiffe://example.org#frag', 'a SPIFFE ID must not have a fragment'],
    ['spiffe://example.org/ns//a', 'the path must not contain empty segments ("//")'],
    ['spiffe://example.org//ns', 'the path must not contain empty segments ("//")'],
    ['spiffe://example.org/ns/./a', 'the path must not contain "." or ".." segments'],
    ['spiffe://example.org/ns/../a', 'the path must not contain "." or ".." segments'],
    ['spiffe://example.org/.', 'the path must not contain "." or ".." segments'],
    ['spiffe://example.org/..', 'the path must not contain "." or ".." segments'],
    ['spiffe://example.org/ns/a/', 'the path must not end with "/"'],
    ['spiffe://example.org/', 'the path must not end with "/"'],
    ['spiffe://example.org//', 'the path must not end with "/"'],
    ['SPIFFE://example.org/ns/a', 'the scheme must be "spiffe" in lowercase'],
    ['Spiffe://example.org/ns/a', 'the scheme must be "spiffe" in lowercase'],
    ['https://example.org/ns/a', 'the scheme must be "spiffe://"'],
    ['spiffe:/example.org/ns/a', 'the scheme must be "spiffe://"'],
    ['spiffe:example.org/ns/a', 'the scheme must be "spiffe://"'],
    ['example.org/ns/a', 'the scheme must be "spiffe://"'],
    ['', 'the scheme must be "spiffe://"'],
    ['spiffe://example.org/ns/pay%20ments', 'the path must not be percent-encoded'],
    ['spiffe://example.org/%2e%2e', 'the path must not be percent-encoded'],
    ['spiffe://exa%6Dple.org/ns/a', 'the trust domain must not be percent-encoded'],
    ['spiffe://example.org/ns/pay ments', 'path segments may only contain A-Z, a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://example.org/ns/a*', 'path segments may only contain A-Z, a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://example.org/ns/caf\u00e9', 'path segments may only contain A-Z, a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://example.org/ns/a\nb', 'path segments may only contain A-Z, a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://exa mple.org/ns/a', 'the trust domain may only contain a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://example+org/ns/a', 'the trust domain may only contain a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://[::1]/ns/a', 'the trust domain may only contain a-z, 0-9, ".", "-" and "_" (no IP literal)'],
    ['spiffe:///ns/a', 'the trust domain is empty'],
    ['spiffe://', 'the trust domain is empty'],
    [`spiffe://${TD_255}a/x`, 'the trust domain is longer than 255 bytes'],
    [`${ID_2048}p`, 'a SPIFFE ID is at most 2048 bytes'],
    // 1035 characters but 2049 bytes: the limit counts UTF-8 bytes.
    [ID_PREFIX + '\u00e9'.repeat(1014), 'a SPIFFE ID is at most 2048 bytes'],
    ['spiffe://example.org', 'a workload SPIFFE ID must have a path (spiffe://trust-domain/path)', { requirePath: true }],
  ];

  it.each(invalid)('%j', (id, problem, opts) => {
    expect(parseSpiffeId(id, opts)).toEqual({ ok: false, problem });
  });

  it('requirePath does not change the verdict on an ID with a path', () => {
    expect(parseSpiffeId('spiffe://example.org/ns/a/', { requirePath: true })).toEqual({ ok: false, problem: 'the path must not end with "/"' });
    expect(parseSpiffeId('spiffe://example.org/', { requirePath: true })).toEqual({ ok: false, problem: 'the path must not end with "/"' });
  });
});

describe('trustDomainProblem', () => {
  it.each([
    ['example.org', undefined],
    ['a', undefined],
    ['my_td-1.internal', undefined],
    [TD_255, undefined],
    ['', 'the trust domain is empty'],
    [`${TD_255}x`, 'the trust domain is longer than 255 bytes'],
    ['Example.org', 'the trust domain must be lowercase'],
    ['example.org:443', 'the trust domain must not carry a port'],
    ['u@example.org', 'the trust domain must not carry userinfo'],
    ['ex%41mple.org', 'the trust domain must not be percent-encoded'],
    ['example.org/ns', 'the trust domain may only contain a-z, 0-9, ".", "-" and "_"'],
    ['spiffe://example.org', 'the trust domain must not carry a port'],
    ['b\u00fccher.de', 'the trust domain may only contain a-z, 0-9, ".", "-" and "_"'],
  ])('%j', (name, problem) => {
    expect(trustDomainProblem(name)).toBe(problem);
  });
});
