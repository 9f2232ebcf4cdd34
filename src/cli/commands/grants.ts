import { parseArgs } from 'node:util';
import { BrokerClient, CONNECTION_HELP, connectionOptions } from '../client.js';
import { cell, renderFields, renderTable, time, type Column } from '../table.js';
import { intFlag, out, printJson, subcommand, UsageError, type Command } from '../usage.js';

/** One grant as GET /v1/grants answers it (the fields the table shows; --json prints all). */
export interface GrantRow {
  grant: string;
  workload: string;
  evidence?: { kind: string; issuer: string };
  task?: string;
  purpose?: string;
  intent?: { audience: string; actions: string[]; resources: string[] };
  rule?: string;
  created_at?: string;
  expires_at?: string;
  token_expires_at?: string;
  generation?: number;
  status: string;
  closed_by?: string;
  kid?: string;
  binding?: string;
}

interface GrantEvent {
  id?: string;
  type: string;
  at: number | string;
  reason?: string;
  operator?: string;
  generation?: number;
}

const GRANT_COLUMNS: Column<GrantRow>[] = [
  { header: 'GRANT', value: (g) => g.grant },
  { header: 'WORKLOAD', value: (g) => g.workload, max: 60 },
  { header: 'AUDIENCE', value: (g) => g.intent?.audience, max: 40 },
  { header: 'ACTIONS', value: (g) => g.intent?.actions.join(' '), max: 30 },
  { header: 'RULE', value: (g) => g.rule, max: 30 },
  { header: 'STATUS', value: (g) => g.status },
  { header: 'EXPIRES', value: (g) => time(g.expires_at) },
  { header: 'TASK', value: (g) => g.task, max: 40 },
];

const FILTERS = ['workload', 'task', 'audience', 'issuer', 'rule', 'status', 'since', 'until'] as const;
const STATUSES = ['active', 'ended', 'revoked', 'expired'];
/** The kill switch's selectors: exactly one per revocation. */
const SELECTORS = { grant: 'grant', workload: 'workload', task: 'task', audience: 'audience', issuer: 'issuer', rule: 'rule', 'key-id': 'key_id' } as const;

export const grants: Command = {
  name: 'grants',
  help: `usage: jit-broker grants ls [--workload W] [--task T] [--audience A] [--issuer I] [--rule R]
                          [--status active|ended|revoked|expired] [--since T] [--until T]
                          [--limit N] [--cursor C | --all] [connection]
       jit-broker grants show GRANT_ID [connection]
       jit-broker grants revoke (--grant ID | --workload W | --task T | --audience A | --issuer I
                          | --rule R | --key-id KID) --reason TEXT [--dry-run] [connection]

  ls      grants newest first (GET /v1/grants; role auditor). --since/--until are RFC 3339 times.
          One page per call (--limit, default the broker's); the next page's --cursor goes to
          stderr. --all follows the cursor to the end.
  show    one grant and its event history (GET /v1/grants/{id}).
  revoke  the kill switch (POST /v1/grants/revoke; role admin): every live grant the selector
          matches expires now and its tokens introspect inactive. --workload takes a glob
          (spiffe://td/ns/*). Each call does bounded work: the command calls again with the
          returned cursor until the broker says done, printing progress to stderr. --dry-run
          counts what would be revoked and changes nothing. --reason is recorded in the audit log.

${CONNECTION_HELP}
exit: 0 ok, 1 the broker refused or failed (its error_description is printed), 2 usage`,
  async run(args) {
    const [sub, rest] = subcommand(args, 'grants', ['ls', 'show', 'revoke']);
    if (sub === 'ls') return ls(rest);
    if (sub === 'show') return show(rest);
    return revoke(rest);
  },
};

async function ls(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...connectionOptions,
      ...Object.fromEntries(FILTERS.map((f) => [f, { type: 'string' } as const])),
      limit: { type: 'string' },
      cursor: { type: 'string' },
      all: { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (typeof v.status === 'string' && !STATUSES.includes(v.status)) throw new UsageError(`--status must be one of ${STATUSES.join(', ')}`);
  if (v.all && v.cursor !== undefined) throw new UsageError('--all starts at the newest grant: leave out --cursor');
  const limit = intFlag(v.limit as string | undefined, 'limit', 1, 1000);
  const client = new BrokerClient(values);
  const query: Record<string, string | number | undefined> = Object.fromEntries(FILTERS.map((f) => [f, v[f] as string | undefined]));
  query.limit = limit;
  let cursor = v.cursor as string | undefined;
  const rows: GrantRow[] = [];
  for (;;) {
    const page = await client.json<{ grants: GrantRow[]; cursor?: string }>('GET', '/v1/grants', { query: { ...query, cursor } });
    if (!v.all) {
      if (values.json) printJson(page);
      else {
        out(renderTable(GRANT_COLUMNS, page.grants, '(no grants match)'));
        if (page.cursor) process.stderr.write(`more: add --cursor ${page.cursor} (or use --all)\n`);
      }
      return 0;
    }
    rows.push(...page.grants);
    if (!page.cursor) break;
    cursor = page.cursor;
  }
  if (values.json) printJson({ grants: rows });
  else out(renderTable(GRANT_COLUMNS, rows, '(no grants match)'));
  return 0;
}

async function show(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: connectionOptions, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError('grants show needs one grant id');
  const client = new BrokerClient(values);
  const g = await client.json<GrantRow & { events?: GrantEvent[] }>('GET', `/v1/grants/${encodeURIComponent(positionals[0]!)}`);
  if (values.json) {
    printJson(g);
    return 0;
  }
  out(
    renderFields([
      ['grant', g.grant],
      ['status', g.status + (g.closed_by ? ` (by ${g.closed_by})` : '')],
      ['workload', g.workload],
      ['evidence', g.evidence ? `${g.evidence.kind} from ${g.evidence.issuer}` : undefined],
      ['task', g.task],
      ['purpose', g.purpose],
      ['audience', g.intent?.audience],
      ['actions', g.intent?.actions.join(' ')],
      ['resources', g.intent?.resources.join(' ')],
      ['rule', g.rule],
      ['created', time(g.created_at)],
      ['expires', time(g.expires_at)],
      ['token expires', time(g.token_expires_at)],
      ['generation', g.generation],
      ['signing key', g.kid],
      ['binding', g.binding],
    ]),
  );
  out('events:');
  out(
    renderTable(
      [
        { header: 'AT', value: (e: GrantEvent) => time(e.at) },
        { header: 'TYPE', value: (e) => e.type },
        { header: 'GEN', value: (e) => e.generation },
        { header: 'BY', value: (e) => e.operator },
        { header: 'REASON', value: (e) => e.reason, max: 80 },
      ],
      g.events ?? [],
    ),
  );
  return 0;
}

interface RevokeAnswer {
  revoked: number;
  done: boolean;
  cursor?: string;
  /** Dry run: the live grants this call matched. */
  grants?: string[];
  /** By key id: whether the answering instance held the key (it stopped signing with it). */
  key?: { kid: string; held_by_this_instance: boolean; instance: string };
}

async function revoke(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...connectionOptions,
      ...Object.fromEntries(Object.keys(SELECTORS).map((f) => [f, { type: 'string' } as const])),
      reason: { type: 'string' },
      'dry-run': { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const v = values as Record<string, string | boolean | undefined>;
  const chosen = Object.entries(SELECTORS).filter(([flag]) => v[flag] !== undefined);
  if (chosen.length !== 1) throw new UsageError(`grants revoke needs exactly one selector: ${Object.keys(SELECTORS).map((s) => `--${s}`).join(', ')}`);
  const [flag, field] = chosen[0]!;
  if (typeof v.reason !== 'string' || v.reason.trim() === '') throw new UsageError('grants revoke needs --reason TEXT (it goes into the audit log)');
  const dryRun = v['dry-run'] === true;
  const client = new BrokerClient(values);
  const selector = { [field]: v[flag] as string };
  let total = 0;
  let calls = 0;
  let cursor: string | undefined;
  let key: RevokeAnswer['key'];
  const matched: string[] = [];
  const verb = dryRun ? 'would revoke' : 'revoked';
  for (;;) {
    const answer = await client.json<RevokeAnswer>('POST', '/v1/grants/revoke', {
      body: { selector, reason: v.reason, ...(dryRun ? { dry_run: true } : {}), ...(cursor !== undefined ? { cursor } : {}) },
    });
    calls += 1;
    total += answer.revoked;
    if (answer.grants) matched.push(...answer.grants);
    key ??= answer.key;
    if (answer.done) break;
    if (!answer.cursor) throw new Error('the broker said the revocation is not done but gave no cursor to continue with');
    cursor = answer.cursor;
    // Progress for the person at the terminal; stdout stays the result alone.
    process.stderr.write(`${verb} ${total} grant${total === 1 ? '' : 's'} so far (${calls} call${calls === 1 ? '' : 's'}), continuing…\n`);
  }
  if (values.json) {
    printJson({ selector, dry_run: dryRun, revoked: total, done: true, calls, ...(dryRun ? { grants: matched } : {}), ...(key ? { key } : {}) });
    return 0;
  }
  out(`${verb} ${total} grant${total === 1 ? '' : 's'} matching ${flag} ${cell(JSON.stringify(v[flag]))}${dryRun ? ' (dry run: nothing changed)' : ''} in ${calls} call${calls === 1 ? '' : 's'}`);
  if (dryRun && matched.length) out(matched.map((g) => `  ${cell(g)}`).join('\n'));
  if (key)
    out(
      `signing key ${cell(key.kid)}: marked revoked, so every broker refuses it and leaves it out of the JWKS within a JWKS cache period; ` +
        (key.held_by_this_instance ? `the instance that answered (${cell(key.instance)}) held it and stopped signing with it at once` : `the instance that answered (${cell(key.instance)}) did not hold it`),
    );
  return 0;
}
