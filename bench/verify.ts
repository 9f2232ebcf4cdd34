import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { createMemoryGrantStore } from '../src/grants/memory-store.js';
import { silentLogger } from '../src/log.js';
import { Keyring } from '../src/tokens/keyring.js';
import { signTaskToken, taskTokenClaims } from '../src/tokens/mint.js';
import { createVerifier } from '../src/verify/index.js';
import { measure, type OpCost } from './sign.js';

export interface ResourceVerifyCosts {
  /** jose.jwtVerify on the token, local JWKS, the same checks jose can express (alg, typ, iss, aud, exp). */
  jose: OpCost;
  /** createVerifier().verify(token): strict parse, signature, claims, JWKS from its cache. */
  verify: OpCost;
  /** The same with the intent checks: an action and a resource matched against a granted glob. */
  verifyIntent: OpCost;
}

/**
 * A resource server's per-request cost of checking a task token, on one broker-minted ES256 token:
 * bare jose next to jit-broker/verify, in the same run. The verifier's JWKS comes from a real HTTP
 * server (the keyring's own JWKS document), fetched once; the loops never touch the network.
 */
export async function measureResourceVerify(): Promise<ResourceVerifyCosts> {
  const keyring = new Keyring({ alg: 'ES256', rotationMs: 3_600_000, overlapMs: 1_200_000, store: createMemoryGrantStore({ log: silentLogger }), clock: Date.now, log: silentLogger });
  await keyring.start();
  const jwksDoc = await keyring.jwks();
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(jwksDoc));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const claims = taskTokenClaims({
    issuer: 'http://bench',
    workloadId: 'k8s://bench/ns/bench/sa/loader',
    grantId: 'g_00000000000000000000000000000000_00000000000000000000000000000000',
    jti: 'j'.repeat(22),
    intent: { audience: 'db.bench', actions: ['read', 'write'], resources: ['db://bench/orders/*', 'db://bench/customers/**'], purpose: 'bench', task: 'bench' },
    issuedAt: Date.now(),
    expiresAt: Date.now() + 3_600_000,
  });
  const token = signTaskToken(claims, keyring.signingKey());
  const verifier = createVerifier({ issuer: 'http://bench', audience: 'db.bench', jwksUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` });
  try {
    const local = createLocalJWKSet(jwksDoc);
    const ops = {
      jose: () => jwtVerify(token, local, { algorithms: ['ES256'], typ: 'at+jwt', issuer: 'http://bench', audience: 'db.bench', requiredClaims: ['exp'] }),
      verify: () => verifier.verify(token),
      verifyIntent: () => verifier.verify(token, { action: 'read', resource: 'db://bench/customers/42/orders/7' }),
    };
    // Three interleaved rounds, the median of each: the three see the same machine, not one its quiet minute.
    const rounds: Record<keyof typeof ops, OpCost[]> = { jose: [], verify: [], verifyIntent: [] };
    for (let round = 0; round < 3; round++) {
      for (const key of Object.keys(ops) as (keyof typeof ops)[]) rounds[key].push(await measure(ops[key]));
    }
    const median = (cs: OpCost[]) => [...cs].sort((x, y) => x.opsPerSec - y.opsPerSec)[1]!;
    const [jose, verify, verifyIntent] = [median(rounds.jose), median(rounds.verify), median(rounds.verifyIntent)];
    if (verifier.stats.jwksFetches !== 1) throw new Error(`the verifier fetched the JWKS ${verifier.stats.jwksFetches} times`);
    return { jose, verify, verifyIntent };
  } finally {
    verifier.close();
    server.close();
    keyring.stop();
  }
}
