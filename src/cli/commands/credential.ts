import { parseArgs } from 'node:util';
import { newCredential } from '../../auth/credential.js';
import { subcommand, UsageError, type Command } from '../usage.js';

/**
 * `jit-broker credential new`: a random bearer credential (256 bits, base64url) and its SHA-256
 * for the config. The two values go to stdout, one `name: value` line each (easy to script);
 * what to do with them goes to stderr. Nothing is stored or logged. This is the one command that
 * prints a credential: printing it is its purpose.
 */
export const credential: Command = {
  name: 'credential',
  help: `usage: jit-broker credential new

Prints a random bearer credential (256 bits, base64url) and its SHA-256 (hex), one per line:
  credential: <secret>          give it to the resource server or operator; it is not shown again
  credential_sha256: <hex>      put it in the config: resource_servers[].credential_sha256 or
                                operators[].credential_sha256
Nothing is stored. Works offline. exit: 0`,
  async run(args) {
    const [, rest] = subcommand(args, 'credential', ['new']);
    const { positionals } = parseArgs({ args: rest, options: {}, allowPositionals: true });
    if (positionals.length > 0) throw new UsageError('credential new takes no arguments');
    const { credential: secret, sha256 } = newCredential();
    process.stdout.write(`credential: ${secret}\ncredential_sha256: ${sha256}\n`);
    process.stderr.write(
      'Give the credential to the resource server or operator (it sends "Authorization: Bearer <credential>"); it is not shown again.\n' +
        'Put credential_sha256 in the config: resource_servers[].credential_sha256, or operators[].credential_sha256 (with a name and role auditor or admin).\n',
    );
    return 0;
  },
};
