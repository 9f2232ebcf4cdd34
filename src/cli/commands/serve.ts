import { parseArgs } from 'node:util';
import { loadConfig } from '../../config/load.js';
import { ConfigError } from '../../errors.js';
import { createLogger } from '../../log.js';
import { startBroker } from '../../server.js';
import { onSignal } from '../signals.js';
import type { Command } from '../usage.js';

/** `jit-broker serve`: the production broker from a config file. */
export const serve: Command = {
  name: 'serve',
  help: `usage: jit-broker serve --config FILE

Runs the broker with the config FILE (or the file JIT_CONFIG names). Env overrides such as
REDIS_URL, PORT, JIT_ISSUER, LOG_LEVEL and JIT__<PATH> apply (see README). Stops cleanly on
SIGTERM or SIGINT; SIGUSR2 rotates this instance's signing key now.

options:
  -c, --config FILE   the YAML config
exit: 0 stopped cleanly, 1 could not start, 78 config error`,
  async run(args) {
    const { values } = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, allowPositionals: false });
    const configPath = values.config ?? process.env.JIT_CONFIG;
    if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
    const config = loadConfig(configPath);
    const log = createLogger({ level: config.log.level, buffered: true });
    const runtime = await startBroker(config, { log });
    onSignal(() => runtime.close());
    // `kill -USR2 <pid>`: rotate this instance's signing key now (its next key is already published).
    process.on('SIGUSR2', () => runtime.keyring.rotateNow());
    return -1;
  },
};
