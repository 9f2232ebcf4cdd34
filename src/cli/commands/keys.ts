import { parseArgs } from 'node:util';
import { BrokerClient, CONNECTION_HELP, connectionOptions } from '../client.js';
import { renderTable, time } from '../table.js';
import { out, printJson, subcommand, type Command } from '../usage.js';

interface KeyRow {
  kid: string;
  alg: string;
  created_at: string;
  retire_at: string;
  expires_at: string;
  this_instance: boolean;
  state?: string;
}

interface RotateResult {
  instance: string;
  rotated: boolean;
  previous_kid?: string;
  current_kid?: string;
  note: string;
}

export const keys: Command = {
  name: 'keys',
  help: `usage: jit-broker keys ls [connection]
       jit-broker keys rotate [connection]

  ls      every published signing key, newest first, and which of them the answering instance
          holds (GET /v1/keys; role auditor).
  rotate  the instance that ANSWERS this request moves to its next, already published key now
          (POST /v1/keys/rotate; role admin). Only that one instance: every broker instance signs
          with keys of its own, so behind a load balancer other instances keep theirs (each
          rotates on its own schedule; to rotate one in particular, point --url at it, or send
          it SIGUSR2). The previous key stays published until its tokens expire.

${CONNECTION_HELP}
exit: 0 ok (rotate: also when the next key was not ready and nothing rotated; see the note),
      1 the broker refused or failed, 2 usage`,
  async run(args) {
    const [sub, rest] = subcommand(args, 'keys', ['ls', 'rotate']);
    const { values } = parseArgs({ args: rest, options: connectionOptions, allowPositionals: false });
    const client = new BrokerClient(values);
    if (sub === 'ls') {
      const answer = await client.json<{ instance: string; keys: KeyRow[] }>('GET', '/v1/keys');
      if (values.json) {
        printJson(answer);
        return 0;
      }
      out(`instance that answered: ${answer.instance}`);
      out(
        renderTable(
          [
            { header: 'KID', value: (k: KeyRow) => k.kid },
            { header: 'ALG', value: (k) => k.alg },
            { header: 'CREATED', value: (k) => time(k.created_at) },
            { header: 'RETIRES', value: (k) => time(k.retire_at) },
            { header: 'UNPUBLISHED', value: (k) => time(k.expires_at) },
            { header: 'THIS INSTANCE', value: (k) => (k.this_instance ? (k.state ?? 'yes') : 'no') },
          ],
          answer.keys,
          '(no published keys)',
        ),
      );
      return 0;
    }
    const r = await client.json<RotateResult>('POST', '/v1/keys/rotate');
    if (values.json) printJson(r);
    else {
      out(r.rotated ? `rotated instance ${r.instance}: ${r.previous_kid ?? '-'} -> ${r.current_kid ?? '-'}` : `instance ${r.instance} did not rotate`);
      out(r.note);
    }
    return 0;
  },
};
