import { parseArgs } from 'node:util';
import { loadConfig } from '../../config/load.js';
import { probeConfig } from '../../config/probe.js';
import { configWarnings } from '../../config/warnings.js';
import type { Config } from '../../config/schema.js';
import { ConfigError } from '../../errors.js';
import { loadTlsMaterial } from '../../tls/material.js';
import type { Command } from '../usage.js';

/**
 * The config as `serve` would load it, with the files it names (serve refuses to start without
 * them); warnings go to stderr. Throws ConfigError (exit 78) listing every problem by its path.
 * `policy check` validates through this too.
 */
export function checkConfigFile(path: string, warn: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Config {
  const config = loadConfig(path);
  if (config.tls) loadTlsMaterial({ cert: config.tls.cert, key: config.tls.key, bundles: config.tls.client_ca_bundles });
  for (const warning of configWarnings(config)) warn(`${path}: warning: ${warning}`);
  return config;
}

export const checkConfig: Command = {
  name: 'check-config',
  help: `usage: jit-broker check-config --config FILE [--probe]

Loads FILE (or the file JIT_CONFIG names) as serve would, env overrides included, with the TLS
files it names, and prints every problem once, by its path (an unrecognized key with the key it
is probably a typo of). Warnings (a config that loads but grants no one anything: no attestation
source, no rule, a rule no source can produce ids for, an audience no rule grants) go to stderr
and do not fail. Env overrides JIT__<PATH> take the type of the setting (JSON for lists and maps).

With --probe, also reaches what the config names and prints one line per probe: the Redis store
(a PING within store.command_timeout) and each OIDC issuer's keys (fetched as serve does).

options:
  -c, --config FILE   the YAML config
      --probe         also reach Redis and each issuer's keys
exit: 0 valid (and every probe answered), 69 a probe failed, 78 config error`,
  async run(args) {
    const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' }, probe: { type: 'boolean' } }, allowPositionals: false });
    const configPath = values.config ?? process.env.JIT_CONFIG;
    if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
    const config = checkConfigFile(configPath);
    process.stdout.write(`${configPath}: ok\n`);
    if (!values.probe) return 0;
    let failed = 0;
    for (const r of await probeConfig(config)) {
      if (!r.ok) failed++;
      process.stdout.write(`${configPath}: probe: ${r.target}: ${r.ok ? 'ok' : 'FAILED'}: ${r.detail}\n`);
    }
    if (failed > 0) {
      process.stderr.write(`${configPath}: ${failed} probe${failed === 1 ? '' : 's'} failed\n`);
      return 69;
    }
    return 0;
  },
};
