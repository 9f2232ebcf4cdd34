/**
 * The bench PKI, made by the dev CA at start-up: a root for trust domain example.org, an
 * intermediate under it (as SPIRE with an upstream CA issues), one workload X.509-SVID from the
 * intermediate, and the broker's server certificate for 127.0.0.1/localhost.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCA, issueCertificate, type Credential } from '../src/dev/dev-ca.js';

export const TRUST_DOMAIN = 'example.org';
export const SVID_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/load`;

export interface BenchPki {
  root: Credential;
  intermediate: Credential;
  /** The workload's SVID; its chainPem is leaf + intermediate, what the client presents. */
  workload: Credential;
  server: Credential;
}

export async function createBenchPki(): Promise<BenchPki> {
  const root = await createCA({ trustDomain: TRUST_DOMAIN });
  const intermediate = await issueCertificate(root, { ca: true, uris: [`spiffe://${TRUST_DOMAIN}`], subject: 'CN=bench intermediate' });
  const workload = await issueCertificate(intermediate, { uris: [SVID_ID] });
  const server = await issueCertificate(root, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
  return { root, intermediate, workload, server };
}

/** Paths of the broker's certificate, key and trust bundle (the root only). */
export interface BrokerTlsFiles {
  cert: string;
  key: string;
  bundle: string;
}

/** The broker's side on disk, in `dir`. */
export function writeBrokerTlsFiles(dir: string, pki: BenchPki): BrokerTlsFiles {
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  return {
    cert: write('server.pem', pki.server.chainPem),
    key: write('server-key.pem', pki.server.keyPem),
    bundle: write(`${TRUST_DOMAIN}.pem`, pki.root.certPem),
  };
}

/** What a workload SDK configures: its SVID chain and key, and the root to trust the broker with. */
export function clientTls(pki: BenchPki): { ca: string; cert: string; key: string } {
  return { ca: pki.root.certPem, cert: pki.workload.chainPem, key: pki.workload.keyPem };
}
