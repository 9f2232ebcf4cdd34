import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { taskTokenClaims } from '../src/tokens/mint.js';

/** In-process cost of one ES256 task-token sign (jose over WebCrypto), the floor under issuance. */
export async function measureSign(iterations = 5000): Promise<{ opsPerSec: number; usPerOp: number }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const kid = (await exportJWK(publicKey)).x!.slice(0, 16);
  const claims = taskTokenClaims({
    issuer: 'http://bench',
    workloadId: 'k8s://bench/ns/bench/sa/loader',
    grantId: 'g_000000000000_00000000000000000000000000000000',
    jti: 'j'.repeat(22),
    intent: { audience: 'db.bench', actions: ['read'], resources: ['db://bench/t'], purpose: 'bench', task: 'bench' },
    issuedAt: Date.now(),
    expiresAt: Date.now() + 300_000,
  });
  const sign = () => new SignJWT({ ...claims }).setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' }).sign(privateKey);
  for (let i = 0; i < 500; i++) await sign(); // warm-up
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await sign();
  const ns = Number(process.hrtime.bigint() - start);
  return { opsPerSec: Math.round((iterations * 1e9) / ns), usPerOp: Math.round(ns / iterations / 100) / 10 };
}
