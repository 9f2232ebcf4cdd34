#!/usr/bin/env node
/**
 * `jit-broker`: dispatch only. Each command lives in commands/ (one file each) and parses its own
 * arguments with node:util parseArgs. Exit codes: 0 ok, 1 failure, 2 usage, 78 config (EX_CONFIG).
 */
import { ConfigError } from '../errors.js';
import { BrokerError } from './client.js';
import { EXIT, UsageError, type Command } from './usage.js';
import { packageVersion } from '../util/package-version.js';

/**
 * The commands, in the overview's order. Each is loaded only when run (or its help is asked for):
 * `--help`, `--version` and the operator commands start without loading the server, dev mode or
 * the demo OIDC issuer.
 */
const COMMANDS: readonly { name: string; summary: string; load: () => Promise<Command> }[] = [
  {
    name: 'serve',
    load: async () => (await import('./commands/serve.js')).serve,
    summary: `serve --config FILE [--port N] [--host ADDR]
                          run the broker (config also from JIT_CONFIG; env overrides: docs/configuration.md)`,
  },
  {
    name: 'check-config',
    load: async () => (await import('./commands/check-config.js')).checkConfig,
    summary: `check-config --config FILE
                          validate a config file and print every problem by its path`,
  },
  {
    name: 'dev',
    load: async () => (await import('./commands/dev.js')).dev,
    summary: 'dev [--port N]          dev mode: memory store, demo OIDC issuer, dev CA, demo policy (no Redis needed)',
  },
  {
    name: 'demo-issuer',
    load: async () => (await import('./commands/demo-issuer.js')).demoIssuer,
    summary: `demo-issuer [--port N] [--issuer URL] [--jwks-file FILE] [--key-file FILE]
                          DEMO ONLY: an OIDC issuer that signs a token for anyone who asks (compose)`,
  },
  {
    name: 'dev-ca',
    load: async () => (await import('./commands/dev-ca.js')).devCa,
    summary: `dev-ca init --dir DIR [--trust-domain TD] [--force]
                          create a throwaway CA for a trust domain (DIR/ca.pem, DIR/ca-key.pem)
  dev-ca issue --dir DIR --spiffe-id ID [--out NAME] [--ttl 24h]
                          issue an X.509-SVID (DIR/NAME.pem, DIR/NAME-key.pem)
  dev-ca issue --dir DIR --server [--dns NAME]... [--ip ADDR]... [--out NAME]
                          issue a server certificate (default localhost and 127.0.0.1)`,
  },
  {
    name: 'credential',
    load: async () => (await import('./commands/credential.js')).credential,
    summary: `credential new          print a random bearer credential and the SHA-256 to put in the config
                          (resource_servers[].credential_sha256 or operators[].credential_sha256)`,
  },
  {
    name: 'grants',
    load: async () => (await import('./commands/grants.js')).grants,
    summary: `grants ls [filters] | show ID | revoke SELECTOR --reason TEXT [--dry-run]
                          who holds what right now; one grant with its events; the kill switch`,
  },
  {
    name: 'workloads',
    load: async () => (await import('./commands/workloads.js')).workloads,
    summary: `workloads ls [--limit N] [--cursor C | --all]
                          workloads with their live grant counts and last activity`,
  },
  {
    name: 'audit',
    load: async () => (await import('./commands/audit.js')).audit,
    summary: `audit ls [filters] [--ndjson] | tail [--last-event-id ID]
                          the event log, merged in time order; a live tail (Server-Sent Events)`,
  },
  {
    name: 'keys',
    load: async () => (await import('./commands/keys.js')).keys,
    summary: `keys ls | rotate        published signing keys; rotate the key of the instance that answers`,
  },
  {
    name: 'policy',
    load: async () => (await import('./commands/policy.js')).policy,
    summary: `policy explain --workload W --audience A --action X... | check --config FILE [--cases FILE]
                          why the policy allows or denies a request; offline policy tests for CI`,
  },
];

const USAGE = `usage: jit-broker <command> [options]

commands:
${COMMANDS.map((c) => `  ${c.summary}`).join('\n')}

  help COMMAND, COMMAND --help   that command's options
  --version                      print the version

exit: 0 ok, 1 failure, 2 usage, 78 config error
`;

const find = (name: string | undefined) => COMMANDS.find((c) => c.name === name);

/** A help flag among the arguments (before `--`). */
const wantsHelp = (args: string[]): boolean => {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--help' || a === '-h');
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(USAGE);
    return EXIT.usage;
  }
  if (name === '--help' || name === '-h') {
    process.stdout.write(USAGE);
    return EXIT.ok;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`jit-broker ${packageVersion()}\n`);
    return EXIT.ok;
  }
  if (name === 'help') {
    if (rest.length === 0) {
      process.stdout.write(USAGE);
      return EXIT.ok;
    }
    const entry = find(rest[0]);
    if (!entry || rest.length > 1) {
      process.stderr.write(`jit-broker: no help for "${rest.join(' ')}": unknown command\n${USAGE}`);
      return EXIT.usage;
    }
    process.stdout.write(`${(await entry.load()).help}\n`);
    return EXIT.ok;
  }
  const entry = find(name);
  if (!entry) {
    process.stderr.write(`jit-broker: unknown command "${name}"\n${USAGE}`);
    return EXIT.usage;
  }
  const command = await entry.load();
  if (wantsHelp(rest)) {
    process.stdout.write(`${command.help}\n`);
    return EXIT.ok;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      // An unexpected positional is not echoed: it may be a secret typed in the wrong place.
      const message = (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' ? 'unexpected argument (a value without its --flag?)' : (err as Error).message;
      process.stderr.write(`jit-broker ${command.name}: ${message}\n(see jit-broker ${command.name} --help)\n`);
      return EXIT.usage;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exitCode = EXIT.config;
    } else if (err instanceof BrokerError) {
      console.error(`jit-broker: the broker refused: ${err.message}`);
      process.exitCode = EXIT.failure;
    } else {
      console.error(`jit-broker: ${(err as Error).message ?? String(err)}`);
      process.exitCode = EXIT.failure;
    }
  },
);
