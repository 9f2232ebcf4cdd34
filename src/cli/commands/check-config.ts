import { parseArgs } from 'node:util';
import { loadConfig } from '../../config/load.js';
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
  help: `usage: jit-broker check-config --config FILE

Loads FILE (or the file JIT_CONFIG names) as serve would, env overrides included, with the TLS
files it names, and prints every problem once, by its path (an unrecognized key with the key it
is probably a typo of). Warnings (a config that loads but grants no one anything: no attestation
source, no rule, a rule no source can produce ids for, an audience no rule grants) go to stderr
and do not fail. Env overrides JIT__<PATH> take the type of the setting (JSON for lists and maps).

options:
  -c, --config FILE   the YAML config
exit: 0 valid, 78 config error`,
  async run(args) {
    const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, allowPositionals: false });
    const configPath = values.config ?? process.env.JIT_CONFIG;
    if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
    checkConfigFile(configPath);
    process.stdout.write(`${configPath}: ok\n`);
    return 0;
  },
};
