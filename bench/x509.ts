/**
 * In-process cost of X.509-SVID attestation, next to the signing costs in sign.ts: what a new
 * client certificate costs once (parse + path validation) and what every further request on it
 * costs (the attestor's cache hit). `material` is the trust bundle as the broker loads it
 * (loadTlsMaterial): anchors are parsed once at load, not per request.
 */
import { createX509Attestor, x509ConfigSchema, type X509Evidence } from '../src/attestation/x509.js';
import { parseCertificate, validateChain } from '../src/attestation/x509-chain.js';
import { silentLogger } from '../src/log.js';
import type { TlsMaterial } from '../src/tls/material.js';
import { TRUST_DOMAIN, type BenchPki } from './pki.js';
import { measure, type OpCost } from './sign.js';

/** A cache miss: leaf and intermediate parsed from DER, then the path to the root validated. */
export async function measureChainValidation(pki: BenchPki, material: TlsMaterial): Promise<OpCost> {
  const ders = [pki.workload.der, pki.intermediate.der];
  return measure(() => {
    const result = validateChain(ders.map(parseCertificate), material.bundles, Date.now(), TRUST_DOMAIN);
    if (!result.ok) throw new Error(`bench chain does not validate: ${result.problem}`);
  }, 2000);
}

/**
 * The hot path of a keep-alive connection: one attest of a chain the attestor has validated
 * before. The chain is leaf, intermediate and root, as Node's getPeerCertificate(true) hands it
 * to the broker after a verified handshake (the root comes from the broker's own `ca`).
 */
export async function measureCachedAttest(pki: BenchPki, material: TlsMaterial): Promise<OpCost> {
  const attestor = createX509Attestor(x509ConfigSchema.parse({}), { clock: Date.now, log: silentLogger, tls: { current: material } });
  const evidence: X509Evidence = { kind: 'x509', chain: [pki.workload.der, pki.intermediate.der, pki.root.der], source: 'handshake' };
  await attestor.attest(evidence); // fills the cache; any failure surfaces here
  return measure(() => attestor.attest(evidence));
}
