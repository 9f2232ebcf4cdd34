/** Just the resource-server verify rows (npx tsx bench/verify-only.ts), without the full bench. */
import { measureResourceVerify } from './verify.js';

const r = await measureResourceVerify();
const line = (label: string, c: { opsPerSec: number; usPerOp: number }) => console.log(`${label.padEnd(62)} ${String(c.opsPerSec).padStart(7)}/s  ${c.usPerOp} µs`);
line('jose.jwtVerify (local JWKS; alg, typ, iss, aud, exp)', r.jose);
line('jit-broker/verify verify() (JWKS cached)', r.verify);
line('jit-broker/verify verify() + action and resource checks', r.verifyIntent);
