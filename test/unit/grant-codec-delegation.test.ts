import { describe, expect, it } from 'vitest';
import { grantFromRecord, grantToRecord } from '../../src/grants/codec.js';
import { newGrantId } from '../../src/grants/ids.js';
import type { Grant } from '../../src/grants/store.js';

/** The grant record's delegation chain (act): written after cnf, and records from before it still decode. */
const workload = 'k8s://test/ns/payments/sa/api';
const base = (): Grant => ({
  id: newGrantId(workload),
  workload,
  workload_kind: 'oidc',
  issuer: 'https://issuer.test',
  rule: 'payments',
  audience: 'db.payments',
  actions: ['read'],
  resources: ['db://payments/orders'],
  purpose: 'p',
  task: 't',
  status: 'active',
  created_at: 1_000,
  expires_at: 2_000,
  generation: 1,
  token_jti: 'j',
  token_exp: 1_500,
});
const act = [{ sub: 'k8s://test/ns/agents/sa/api', issuer: 'https://issuer.test' }, { sub: 'k8s://test/ns/planner/sa/api' }];

describe('grant record: delegation chain', () => {
  it('round-trips act with and without a binding (cnf written as null before it)', () => {
    for (const g of [{ ...base(), act }, { ...base(), act, cnf: { jkt: 'k' } }]) {
      const record = grantToRecord(g);
      expect(grantFromRecord(g.id, record)).toEqual({ ok: true, value: g });
    }
    expect(grantToRecord({ ...base(), act }).split('\n')[6]).toContain(',null,[{');
  });

  it('writes an undelegated grant as before, and decodes records written before act existed', () => {
    const g = base();
    const old = `active\n2000\n1\nj\n1500\n${workload}\n["oidc","https://issuer.test","payments","db.payments",["read"],["db://payments/orders"],"p","t",1000]\n\n`;
    expect(grantToRecord(g)).toBe(old);
    expect(grantFromRecord(g.id, old)).toEqual({ ok: true, value: g });
    const bound = old.replace(',1000]', ',1000,{"jkt":"k"}]');
    expect(grantFromRecord(g.id, bound)).toEqual({ ok: true, value: { ...g, cnf: { jkt: 'k' } } });
  });

  it('refuses a chain longer than four actors, or an empty one', () => {
    const five = Array.from({ length: 5 }, (_, i) => ({ sub: `k8s://test/ns/a${i}/sa/api` }));
    expect(grantFromRecord(base().id, grantToRecord({ ...base(), act: five })).ok).toBe(false);
    expect(grantFromRecord(base().id, grantToRecord({ ...base(), act: [] })).ok).toBe(false);
  });
});
