import { newCredential } from '../../auth/credential.js';
import { UsageError } from '../usage.js';

/**
 * `jit-broker credential new`: a random bearer credential (256 bits, base64url) and its SHA-256
 * for the config. The two values go to stdout, one `name: value` line each (easy to script);
 * what to do with them goes to stderr. Nothing is stored or logged.
 */
export function credentialCommand(args: string[]): number {
  const [sub, ...rest] = args;
  if (sub !== 'new' || rest.length > 0) throw new UsageError('credential needs the subcommand new (and nothing else)');
  const { credential, sha256 } = newCredential();
  process.stdout.write(`credential: ${credential}\ncredential_sha256: ${sha256}\n`);
  process.stderr.write(
    'Give the credential to the resource server or operator (it sends "Authorization: Bearer <credential>"); it is not shown again.\n' +
      'Put credential_sha256 in the config: resource_servers[].credential_sha256, or operators[].credential_sha256 (with a name and role auditor or admin).\n',
  );
  return 0;
}
