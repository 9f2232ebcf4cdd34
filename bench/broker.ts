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
 * broker afterwards whatever happens. It runs this tree's sources with tsx, or a `build`'s dist/. `tls` is what the readiness probe trusts (HTTPS brokers).
 */
export async function withBroker<T>(
  opts: { name: string; dir: string; url: string; config: Record<string, unknown>; tls?: ClientTls; build?: string },
  fn: (broker: BrokerProcess) => Promise<T>,
): Promise<T> {
  const configPath = join(opts.dir, `${opts.name}.yaml`);
  writeFileSync(configPath, stringify(opts.config));
  // `build`: a checkout with `npm run build` done, whose dist/ runs instead of this tree's sources.
  const entry = opts.build ? join(opts.build, 'dist/cli/main.js') : 'src/cli/main.ts';
  const args = [entry, 'serve', '--config', configPath];
  const child = { name: `broker "${opts.name}"`, url: opts.url, readyPath: '/readyz', args, ...(opts.tls ? { tls: opts.tls } : {}) };
  return withNodeChild({ ...child, ...(opts.build ? { compiled: { cwd: opts.build } } : {}) }, fn);
}
