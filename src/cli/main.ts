#!/usr/bin/env node
/**
 * `jit-broker`: dispatch only. Each command lives in commands/ (one file each) and parses its own
 * arguments with node:util parseArgs. Exit codes: 0 ok, 1 failure, 2 usage, 78 config (EX_CONFIG).
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { checkConfig } from './commands/check-config.js';
import { credential } from './commands/credential.js';
import { dev } from './commands/dev.js';
import { devCa } from './commands/dev-ca.js';
import { serve } from './commands/serve.js';
import { EXIT, UsageError, type Command } from './usage.js';

const COMMANDS: readonly Command[] = [serve, checkConfig, dev, devCa, credential];

const USAGE = `usage: jit-broker <command> [options]

commands:
${COMMANDS.map((c) => `  ${c.summary}`).join('\n')}

  help COMMAND, COMMAND --help   that command's options
  --version                      print the version

exit: 0 ok, 1 failure, 2 usage, 78 config error
`;

function version(): string {
  // src/cli/main.ts and dist/cli/main.js both sit two levels below package.json.
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

const find = (name: string | undefined): Command | undefined => COMMANDS.find((c) => c.name === name);

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
    process.stdout.write(`jit-broker ${version()}\n`);
    return EXIT.ok;
  }
  if (name === 'help') {
    if (rest.length === 0) {
      process.stdout.write(USAGE);
      return EXIT.ok;
    }
    const command = find(rest[0]);
    if (!command || rest.length > 1) {
      process.stderr.write(`jit-broker: no help for "${rest.join(' ')}": unknown command\n${USAGE}`);
      return EXIT.usage;
    }
    process.stdout.write(`${command.help}\n`);
    return EXIT.ok;
  }
  const command = find(name);
  if (!command) {
    process.stderr.write(`jit-broker: unknown command "${name}"\n${USAGE}`);
    return EXIT.usage;
  }
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
    } else {
      console.error(`jit-broker: ${(err as Error).message ?? String(err)}`);
      process.exitCode = EXIT.failure;
    }
  },
);
