import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { loadConfig } from '../../config/load.js';
import { ConfigError } from '../../errors.js';
import { createLogger } from '../../log.js';
import { startBroker } from '../../server.js';
import { onSignal } from '../signals.js';
import { UsageError, type Command } from '../usage.js';

/** `jit-broker serve`: the production broker from a config file. */
export const serve: Command = {
  name: 'serve',
  help: `usage: jit-broker serve --config FILE [--port N] [--host ADDR]

Runs the broker with the config FILE (or the file JIT_CONFIG names). Env overrides such as
REDIS_URL, PORT, JIT_ISSUER, LOG_LEVEL and JIT__<PATH> apply (docs/configuration.md); --port and
--host override listen.port and listen.host over both. Stops cleanly on SIGTERM or SIGINT;
SIGUSR2 rotates this instance's signing key now (signal the broker's own PID, not npx's or
npm's: or run \`jit-broker keys rotate\` from the operator CLI).

options:
  -c, --config FILE   the YAML config
  -p, --port N        listen port (0 to 65535; 0 picks a free one), over listen.port and PORT
      --host ADDR     listen address (an IP address or a host name), over listen.host
exit: 0 stopped cleanly, 1 could not start, 2 usage, 78 config error`,
  async run(args) {
    const { values } = parseArgs({
      args,
      options: { config: { type: 'string', short: 'c' }, port: { type: 'string', short: 'p' }, host: { type: 'string' } },
      allowPositionals: false,
    });
    const port = listenPort(values.port);
    const host = listenHost(values.host);
    const configPath = values.config ?? process.env.JIT_CONFIG;
    if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
    const loaded = loadConfig(configPath);
    const config = { ...loaded, listen: { ...loaded.listen, ...(port !== undefined ? { port } : {}), ...(host !== undefined ? { host } : {}) } };
    const log = createLogger({ level: config.log.level, buffered: true });
    const runtime = await startBroker(config, { log });
    onSignal(() => runtime.close());
    // `kill -USR2 <pid>`: rotate this instance's signing key now (its next key is already published).
    process.on('SIGUSR2', () => void runtime.keyring.rotateNow());
    return -1;
  },
};

/** `--port`: a whole number 0..65535 (the same range as listen.port), else a usage error. */
export function listenPort(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new UsageError('--port must be a port number from 0 to 65535 (0 picks a free one)');
  return Number(value);
}

/** `--host`: an IP address or a DNS host name (no scheme, port or path), else a usage error. */
export function listenHost(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const name = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
  if (isIP(value) === 0 && !name.test(value)) throw new UsageError('--host must be an IP address or a host name (e.g. 127.0.0.1, ::, localhost)');
  return value;
}
