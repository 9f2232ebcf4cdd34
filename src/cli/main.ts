#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { startDevMode } from '../dev/dev-mode.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { startBroker } from '../server.js';

const USAGE = `usage: jit-broker <command> [options]

commands:
  serve --config FILE     run the broker (config also from JIT_CONFIG; env overrides: see README)
  check-config --config FILE
                          validate a config file and print every problem by its path
  dev [--port N]          dev mode: memory store, demo OIDC issuer, demo policy (no Redis needed)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: { config: { type: 'string', short: 'c' }, port: { type: 'string', short: 'p' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: false,
  });
  if (!command || values.help || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const configPath = values.config ?? process.env.JIT_CONFIG;
  switch (command) {
    case 'serve': {
      if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
      const config = loadConfig(configPath);
      const log = createLogger({ level: config.log.level });
      const runtime = await startBroker(config, { log });
      onSignal(() => runtime.close());
      return -1;
    }
    case 'check-config': {
      if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
      loadConfig(configPath);
      process.stdout.write(`${configPath}: ok\n`);
      return 0;
    }
    case 'dev': {
      const log = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
      const port = values.port !== undefined ? Number(values.port) : process.env.PORT ? Number(process.env.PORT) : undefined;
      const dev = await startDevMode({ log, ...(port !== undefined ? { port } : {}) });
      process.stdout.write(
        [
          `jit-broker dev mode listening on ${dev.broker.url} (memory store, demo issuer ${dev.issuer.issuer})`,
          'Get a task token for the demo workload k8s://dev/ns/demo/sa/report-builder:',
          '',
          `  ${dev.curl}`,
          '',
          'Keys: ' + `${dev.broker.url}/.well-known/jwks.json` + '   Ctrl-C to stop.',
          '',
        ].join('\n'),
      );
      onSignal(() => dev.close());
      return -1;
    }
    default:
      process.stderr.write(`unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

function onSignal(close: () => Promise<void>): void {
  const stop = () => {
    void close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exitCode = 78; // EX_CONFIG
    } else {
      console.error(`jit-broker: ${(err as Error).message ?? String(err)}`);
      process.exitCode = 1;
    }
  },
);
