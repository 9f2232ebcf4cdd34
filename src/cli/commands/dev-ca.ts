import { parseArgs } from 'node:util';
import { initCaDir, issueToDir } from '../../dev/dev-ca.js';
import { parseDuration } from '../../util/duration.js';
import { subcommand, UsageError, type Command } from '../usage.js';

/** `jit-broker dev-ca init|issue`: the dev CA on disk (see src/dev/dev-ca.ts). */
export const devCa: Command = {
  name: 'dev-ca',
  help: `usage: jit-broker dev-ca init --dir DIR [--trust-domain TD] [--force]
       jit-broker dev-ca issue --dir DIR --spiffe-id ID [--out NAME] [--ttl 24h]
       jit-broker dev-ca issue --dir DIR --server [--dns NAME]... [--ip ADDR]... [--out NAME] [--ttl 24h]

A throwaway CA for development and tests (never for production).
  init    create DIR/ca.pem and DIR/ca-key.pem for trust domain TD (default example.org);
          --force replaces an existing CA
  issue   an X.509-SVID for --spiffe-id (DIR/NAME.pem, DIR/NAME-key.pem; NAME default workload),
          or with --server a server certificate (default names localhost and 127.0.0.1;
          NAME default server)

options:
  -d, --dir DIR  -o, --out NAME  --trust-domain TD  --force  --spiffe-id ID  --server
  --dns NAME (repeatable)  --ip ADDR (repeatable)  --ttl DURATION (e.g. 1h, 24h)`,
  async run(args) {
    const [sub, rest] = subcommand(args, 'dev-ca', ['init', 'issue']);
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
  },
};
