import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BrokerClient, CONNECTION_HELP, connectionOptions, errorOf, sseEvents } from '../client.js';
import { cell, renderTable, time, type Column } from '../table.js';
import { intFlag, out, printJson, subcommand, UsageError, type Command } from '../usage.js';

/** One audit event (lifecycle or operator action), the fields the table shows; --json prints all. */
export interface AuditRow {
  id?: string;
  type: string;
  at: number | string;
  workload?: string;
  grant?: string;
  rule?: string;
  reason?: string;
  audience?: string;
  action?: string;
  operator?: string;
  role?: string;
  selector?: string;
  count?: number;
  kid?: string;
}

const what = (e: AuditRow): string => (e.type === 'operator.action' && e.action ? `operator.${e.action}` : e.type);
const detail = (e: AuditRow): string =>
  [e.audience && `aud=${e.audience}`, e.rule && `rule=${e.rule}`, e.selector && `selector=${e.selector}`, e.count !== undefined && `count=${e.count}`, e.kid && `kid=${e.kid}`, e.reason && `reason=${e.reason}`]
    .filter(Boolean)
    .join(' ');

const COLUMNS: Column<AuditRow>[] = [
  { header: 'AT', value: (e) => time(e.at) },
  { header: 'TYPE', value: what },
  { header: 'WORKLOAD', value: (e) => e.workload, max: 60 },
  { header: 'GRANT', value: (e) => e.grant },
  { header: 'BY', value: (e) => e.operator, max: 30 },
  { header: 'DETAIL', value: detail, max: 100 },
];

const FILTERS = ['since', 'until', 'type', 'workload', 'grant', 'order'] as const;

interface AuditPage {
  order?: 'asc' | 'desc';
  events: AuditRow[];
  /** The next page's cursor (asc: also when caught up, to continue later). */
  cursor?: string | null;
  /** desc: no older events; asc: caught up with the log. */
  done?: boolean;
}

/** Whether another page follows now (an asc walk that caught up keeps its cursor for later). */
const more = (p: { cursor?: string | null; done?: boolean }): p is { cursor: string } => Boolean(p.cursor) && p.done !== true;

export const audit: Command = {
  name: 'audit',
  help: `usage: jit-broker audit ls [--since T] [--until T] [--type TYPE[,TYPE]] [--workload W | --grant ID]
                          [--order desc|asc] [--limit N] [--cursor C | --all] [--ndjson] [connection]
       jit-broker audit tail [--type TYPE[,TYPE]] [--workload W | --grant ID] [--since T]
                          [--last-event-id ID] [--count N] [connection]

  ls      audit events in time order (GET /v1/audit; role auditor): issued, denied, renewed,
          ended, revoked, replay_detected, key events and operator actions with the operator's
          name. Newest first (--order asc: oldest first); T is RFC 3339 or ms since the epoch.
          One page per call; the next page's --cursor goes to stderr; --all follows it.
          --ndjson writes the broker's NDJSON export as it comes (for a SIEM; oldest first
          unless --order desc; the cursor to continue from goes to stderr).
  tail    follows the log live (GET /v1/audit/stream) until Ctrl-C, or until --count N events.
          Reconnects by itself where it stopped (Last-Event-ID); --last-event-id ID starts after
          a given event. With --json each event is one JSON line.

${CONNECTION_HELP}
exit: 0 ok, 1 the broker refused or failed, 2 usage`,
  async run(args) {
    const [sub, rest] = subcommand(args, 'audit', ['ls', 'tail']);
    return sub === 'ls' ? ls(rest) : tail(rest);
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
      ndjson: { type: 'boolean' },
    },
    allowPositionals: false,
  });
  const v = values as Record<string, string | boolean | undefined>;
  if (v.all && v.cursor !== undefined) throw new UsageError('--all starts at the beginning: leave out --cursor');
  if (v.ndjson && v.json) throw new UsageError('choose one of --json and --ndjson');
  if (typeof v.order === 'string' && v.order !== 'asc' && v.order !== 'desc') throw new UsageError('--order must be asc or desc');
  const limit = intFlag(v.limit as string | undefined, 'limit', 1, 10000);
  const client = new BrokerClient(values);
  const query: Record<string, string | number | undefined> = { ...Object.fromEntries(FILTERS.map((f) => [f, v[f] as string | undefined])), limit };
  if (v.ndjson) {
    const res = await client.open('GET', '/v1/audit', { query: { ...query, cursor: v.cursor as string | undefined, format: 'ndjson' }, headers: { accept: 'application/x-ndjson' } });
    if ((res.statusCode ?? 0) >= 400) {
      let text = '';
      for await (const chunk of res) text += String(chunk);
      throw errorOf(res.statusCode ?? 0, text);
    }
    for await (const chunk of res) process.stdout.write(chunk as Buffer);
    const next = res.headers['audit-cursor'];
    if (typeof next === 'string' && res.headers['audit-done'] !== 'true') process.stderr.write(`more: add --cursor ${next}\n`);
    else if (typeof next === 'string') process.stderr.write(`caught up; to continue later: --cursor ${next}\n`);
    return 0;
  }
  let cursor = v.cursor as string | undefined;
  const rows: AuditRow[] = [];
  for (;;) {
    const page = await client.json<AuditPage>('GET', '/v1/audit', { query: { ...query, cursor } });
    if (!v.all) {
      if (values.json) printJson(page);
      else {
        out(renderTable(COLUMNS, page.events, '(no events)'));
        if (more(page)) process.stderr.write(`more: add --cursor ${page.cursor} (or use --all)\n`);
      }
      return 0;
    }
    rows.push(...page.events);
    if (!more(page)) break;
    cursor = page.cursor;
  }
  if (values.json) printJson({ events: rows });
  else out(renderTable(COLUMNS, rows, '(no events)'));
  return 0;
}

/** One line per event for a person watching. */
const line = (e: AuditRow): string =>
  [time(e.at), what(e), e.workload, e.grant, e.operator && `by ${e.operator}`, detail(e)].filter((x) => x !== undefined && x !== '').map((x) => cell(x as string)).join('  ');

async function tail(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...connectionOptions,
      type: { type: 'string' },
      workload: { type: 'string' },
      grant: { type: 'string' },
      since: { type: 'string' },
      'last-event-id': { type: 'string' },
      count: { type: 'string' },
    },
    allowPositionals: false,
  });
  const count = intFlag(values.count, 'count', 1, 1_000_000_000);
  const client = new BrokerClient(values);
  const query = { type: values.type, workload: values.workload, grant: values.grant, since: values.since };
  let lastId = values['last-event-id'];
  let seen = 0;
  let failures = 0;
  for (;;) {
    let res;
    try {
      res = await client.open('GET', '/v1/audit/stream', { query, headers: { accept: 'text/event-stream', ...(lastId !== undefined ? { 'last-event-id': lastId } : {}) } });
    } catch (e) {
      // The broker restarting or a proxy timing out: retry a few times, then give up (exit 1).
      if (++failures > 5) throw e;
      process.stderr.write(`jit-broker: ${(e as Error).message}; retrying${lastId ? ` from event ${lastId}` : ''}\n`);
      await sleep(1000 * failures);
      continue;
    }
    if ((res.statusCode ?? 0) >= 400) {
      let text = '';
      for await (const chunk of res) text += String(chunk);
      throw errorOf(res.statusCode ?? 0, text);
    }
    failures = 0;
    if (seen === 0 && !values.json) process.stderr.write(`following the audit log of ${client.origin} (Ctrl-C to stop)\n`);
    for await (const ev of sseEvents(res)) {
      if (ev.id !== undefined) lastId = ev.id;
      if (ev.event === 'error') {
        // The broker could not read the log for a moment: it says so and ends the stream; we resume.
        const problem = (() => {
          try {
            return (JSON.parse(ev.data) as { error_description?: string }).error_description;
          } catch {
            return undefined;
          }
        })();
        process.stderr.write(`jit-broker: the broker says: ${cell(problem ?? ev.data)}\n`);
        continue;
      }
      if (ev.event !== 'message') continue; // 'ready' and anything newer
      let event: AuditRow;
      try {
        event = JSON.parse(ev.data) as AuditRow;
      } catch {
        continue;
      }
      if (values.json) out(JSON.stringify(event));
      else out(line(event));
      seen += 1;
      if (count !== undefined && seen >= count) {
        res.destroy();
        return 0;
      }
    }
    process.stderr.write(`jit-broker: the stream ended; reconnecting${lastId ? ` from event ${lastId}` : ''}\n`);
    await sleep(1000);
  }
}

