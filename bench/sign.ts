import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { createMemoryGrantStore } from '../src/grants/memory-store.js';
import { silentLogger } from '../src/log.js';
import { Keyring } from '../src/tokens/keyring.js';
import { signTaskToken, taskTokenClaims } from '../src/tokens/mint.js';

export interface OpCost {
  opsPerSec: number;
  usPerOp: number;
}

/** Runs `op` after a warm-up and reports its mean cost (one at a time: in-process cost, not throughput under load). */
export async function measure(op: () => unknown, iterations = 5000): Promise<OpCost> {
  for (let i = 0; i < 500; i++) await op();
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await op();
  const ns = Number(process.hrtime.bigint() - start);
  return { opsPerSec: Math.round((iterations * 1e9) / ns), usPerOp: Math.round(ns / iterations / 100) / 10 };
}

const claims = () =>
  taskTokenClaims({
    issuer: 'http://bench',
    workloadId: 'k8s://bench/ns/bench/sa/loader',
    grantId: 'g_00000000000000000000000000000000_00000000000000000000000000000000',
    jti: 'j'.repeat(22),
    intent: { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' },
    issuedAt: Date.now(),
    expiresAt: Date.now() + 300_000,
  });

/** The broker's own ES256 task-token sign (node:crypto, synchronous): the signing floor under issuance. */
export async function measureSign(): Promise<OpCost> {
  const keyring = new Keyring({ alg: 'ES256', rotationMs: 3_600_000, overlapMs: 1_200_000, store: createMemoryGrantStore({ log: silentLogger }), clock: Date.now, log: silentLogger });
  await keyring.start();
  const key = keyring.signingKey();
  const c = claims();
  const result = await measure(() => signTaskToken(c, key));
  keyring.stop();
  return result;
}

/** The same sign through jose over WebCrypto, for comparison (what the broker used before). */
export async function measureJoseSign(): Promise<OpCost> {
  const { privateKey } = await generateKeyPair('ES256');
  const c = claims();
  return measure(() => new SignJWT({ ...c }).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: 'at+jwt' }).sign(privateKey));
}

/** One inbound ES256 token verify (jose jwtVerify against a local JWKS): the attestation floor without the cache. */
export async function measureVerify(): Promise<OpCost> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] });
  const token = await new SignJWT({ ...claims() }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(privateKey);
  return measure(() => jwtVerify(token, jwks, { algorithms: ['ES256'], issuer: 'http://bench', audience: 'db.bench' }));
}
