/**
 * The contract every attestor keeps (as every grant store runs grant-store-contract.ts): the
 * module's shape, the Workload it returns for good evidence, and a 401 that neither echoes the
 * evidence nor returns a workload for bad evidence.
 */
import { describe, expect, it } from 'vitest';
import type { Attestor, AttestorModule, Evidence } from '../../src/attestation/attestor.js';
import { AttestationFailed, BrokerError } from '../../src/errors.js';

export interface AttestorFixture<E extends Evidence> {
  module: AttestorModule<any, E>;
  attestor: Attestor<E>;
  /** Whatever makes the attestor ready (fetching an issuer's keys). */
  ready?(): Promise<void>;
  /** Evidence this attestor accepts, and the workload id it must yield. */
  valid(): Promise<{ evidence: E; id: string }>;
  /** Evidence it must refuse, each with a label; `secret` is text that must not appear in the error. */
  invalid(): Promise<{ label: string; evidence: E; secret?: string }[]>;
}

export function attestorContract<E extends Evidence>(name: string, fixture: () => AttestorFixture<E>): void {
  describe(`attestor contract: ${name}`, () => {
    it('exports kind, config schema and factory, and the attestor has the same kind and is ready', async () => {
      const f = fixture();
      await f.ready?.();
      expect(f.module.kind).toBe(f.attestor.kind);
      expect(typeof f.module.create).toBe('function');
      expect(typeof f.module.configSchema.safeParse).toBe('function');
      expect(f.attestor.notReady()).toBeUndefined();
    });

    it('returns a frozen Workload with a URI id, verified string attributes and a future evidence expiry', async () => {
      const f = fixture();
      const { evidence, id } = await f.valid();
      const w = await f.attestor.attest(evidence);
      expect(w.id).toBe(id);
      expect(() => new URL(w.id)).not.toThrow();
      expect(w.kind).toBe(f.attestor.kind);
      expect(w.issuer.length).toBeGreaterThan(0);
      expect(Object.isFrozen(w)).toBe(true);
      for (const [k, v] of Object.entries(w.attributes)) expect(typeof v, k).toBe('string');
      expect(w.evidenceExpiresAt).toBeGreaterThan(Date.now());
      // The same evidence again (possibly from a cache) yields the same workload.
      expect(await f.attestor.attest(evidence)).toEqual(w);
    });

    it('refuses bad evidence with AttestationFailed (401) and a description that does not echo it', async () => {
      const f = fixture();
      const cases = await f.invalid();
      expect(cases.length).toBeGreaterThan(0);
      for (const c of cases) {
        let error: unknown;
        try {
          await f.attestor.attest(c.evidence);
        } catch (e) {
          error = e;
        }
        expect(error, c.label).toBeInstanceOf(AttestationFailed);
        const b = error as BrokerError;
        expect(b.status, c.label).toBe(401);
        expect(b.description.length, c.label).toBeGreaterThan(10);
        if (c.secret) expect(b.description, c.label).not.toContain(c.secret);
      }
    });
  });
}
