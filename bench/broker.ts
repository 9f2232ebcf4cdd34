/**
 * The broker under load runs as its own process, through the real CLI (`serve --config`), so its
 * CPU can be read from /proc apart from the load generator's.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { withNodeChild, type ClientTls, type ServerProcess } from './child.js';

export { cpuSeconds, requestJson, type ClientTls } from './child.js';
export type BrokerProcess = ServerProcess;

/**
 * Runs `fn` against a broker started with `config` (written to DIR/NAME.yaml), and stops the
 * broker afterwards whatever happens. `tls` is what the readiness probe trusts (HTTPS brokers).
 */
export async function withBroker<T>(
  opts: { name: string; dir: string; url: string; config: Record<string, unknown>; tls?: ClientTls },
  fn: (broker: BrokerProcess) => Promise<T>,
): Promise<T> {
  const configPath = join(opts.dir, `${opts.name}.yaml`);
  writeFileSync(configPath, stringify(opts.config));
  const args = ['src/cli/main.ts', 'serve', '--config', configPath];
  return withNodeChild({ name: `broker "${opts.name}"`, url: opts.url, readyPath: '/readyz', args, ...(opts.tls ? { tls: opts.tls } : {}) }, fn);
}
