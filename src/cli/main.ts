#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { configWarnings } from '../config/warnings.js';
import { DEV_SPIFFE_ID, startDevMode } from '../dev/dev-mode.js';
import { initCaDir, issueToDir } from '../dev/dev-ca.js';
import { parseDuration } from '../util/duration.js';
import { ConfigError } from '../errors.js';
import { createLogger } from '../log.js';
import { startBroker } from '../server.js';
import { loadTlsMaterial } from '../tls/material.js';
import { credentialCommand } from './commands/credential.js';
import { UsageError } from './usage.js';

const USAGE = `usage: jit-broker <command> [options]

commands:
  serve --config FILE     run the broker (config also from JIT_CONFIG; env overrides: see README)
  check-config --config FILE
                          validate a config file and print every problem by its path
  credential new          print a random bearer credential and the SHA-256 to put in the config
                          (resource_servers[].credential_sha256)
  dev [--port N]          dev mode: memory store, demo OIDC issuer, dev CA, demo policy (no Redis needed)
  dev-ca init --dir DIR [--trust-domain TD] [--force]
                          create a throwaway CA for a trust domain (DIR/ca.pem, DIR/ca-key.pem)
  dev-ca issue --dir DIR --spiffe-id ID [--out NAME] [--ttl 24h]
                          issue an X.509-SVID (DIR/NAME.pem, DIR/NAME-key.pem)
  dev-ca issue --dir DIR --server [--dns NAME]... [--ip ADDR]... [--out NAME]
                          issue a server certificate (default localhost and 127.0.0.1)
`;

/** `jit-broker dev-ca init|issue`: the dev CA on disk (see src/dev/dev-ca.ts). */
async function devCa(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      dir: { type: 'string', short: 'd' },
      'trust-domain': { type: 'string' },
      force: { type: 'boolean' },
      'spiffe-id': { type: 'string' },
      server: { type: 'boolean' },
      dns: { type: 'string', multiple: true },
      ip: { type: 'string', multiple: true },
      out: { type: 'string', short: 'o' },
      ttl: { type: 'string' },
    },
    allowPositionals: false,
  });
  if (!values.dir) throw new UsageError('dev-ca needs --dir DIR');
  if (sub === 'init') {
    const td = values['trust-domain'] ?? 'example.org';
    const made = await initCaDir(values.dir, td, { force: values.force ?? false });
    process.stdout.write(`dev CA for trust domain ${td}: ${made.cert} (key ${made.key}, keep it private)\n`);
    return 0;
  }
  if (sub === 'issue') {
    let ttlMs: number | undefined;
    if (values.ttl !== undefined) {
      try {
        ttlMs = parseDuration(values.ttl);
      } catch {
        throw new UsageError('--ttl must be a duration such as 1h or 24h');
      }
    }
    const made = await issueToDir(values.dir, {
      name: values.out ?? (values.server ? 'server' : 'workload'),
      ...(values['spiffe-id'] ? { spiffeId: values['spiffe-id'] } : {}),
      ...(values.server ? { server: true } : {}),
      ...(values.dns ? { dns: values.dns } : {}),
      ...(values.ip ? { ips: values.ip } : {}),
      ...(ttlMs !== undefined ? { ttlMs } : {}),
    });
    process.stdout.write(`${made.id ? `X.509-SVID for ${made.id}` : 'server certificate'}: ${made.cert} (key ${made.key})\n`);
    return 0;
  }
  throw new UsageError('dev-ca needs a subcommand: init or issue');
}


async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'dev-ca') return devCa(rest);
  if (command === 'credential') return credentialCommand(rest);
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
      const log = createLogger({ level: config.log.level, buffered: true });
      const runtime = await startBroker(config, { log });
      onSignal(() => runtime.close());
      // `kill -USR2 <pid>`: rotate this instance's signing key now (its next key is already published).
      process.on('SIGUSR2', () => runtime.keyring.rotateNow());
      return -1;
    }
    case 'check-config': {
      if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
      const config = loadConfig(configPath);
      // The files it names must load too: serve would refuse to start on them.
      if (config.tls) loadTlsMaterial({ cert: config.tls.cert, key: config.tls.key, bundles: config.tls.client_ca_bundles });
      for (const warning of configWarnings(config)) process.stderr.write(`${configPath}: warning: ${warning}\n`);
      process.stdout.write(`${configPath}: ok\n`);
      return 0;
    }
    case 'dev': {
      const log = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
      const port = values.port !== undefined ? Number(values.port) : process.env.PORT ? Number(process.env.PORT) : undefined;
      const dev = await startDevMode({ log, ...(port !== undefined ? { port } : {}) });
      process.stdout.write(
        [
          `jit-broker dev mode listening on ${dev.broker.url} (memory store, demo issuer ${dev.issuer.issuer}, dev CA in ${dev.certificates.dir})`,
          'Get a task token for the demo workload k8s://dev/ns/demo/sa/report-builder (platform token):',
          '',
          `  ${dev.curl}`,
          '',
          `Get a certificate-bound task token for ${DEV_SPIFFE_ID} (mTLS with its X.509-SVID):`,
          '',
          `  ${dev.curlMtls}`,
          '',
          `Operator API as the demo operator "${dev.operator.name}" (role admin; its credential is random, made for this run): who holds what right now:`,
          '',
          `  ${dev.curlOperator}`,
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
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`jit-broker: ${(err as Error).message}\n${USAGE}`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      console.error(err.message);
      process.exitCode = 78; // EX_CONFIG
    } else {
      console.error(`jit-broker: ${(err as Error).message ?? String(err)}`);
      process.exitCode = 1;
    }
  },
);
