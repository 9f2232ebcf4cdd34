import { parseArgs } from 'node:util';
import { BrokerClient, CONNECTION_HELP, connectionOptions } from '../client.js';
import { renderTable, time, type Column } from '../table.js';
import { intFlag, out, printJson, subcommand, UsageError, type Command } from '../usage.js';

interface WorkloadRow {
  workload: string;
  live_grants: number;
  last_activity?: string;
  last_seen?: string;
}

const COLUMNS: Column<WorkloadRow>[] = [
  { header: 'WORKLOAD', value: (w) => w.workload, max: 80 },
  { header: 'LIVE', value: (w) => w.live_grants },
  { header: 'LAST ACTIVITY', value: (w) => time(w.last_activity) },
];

export const workloads: Command = {
  name: 'workloads',
  help: `usage: jit-broker workloads ls [--limit N] [--cursor C | --all] [connection]

Workloads that had grants within the audit retention, most recently seen first, with how many
live grants each holds now and its last activity (GET /v1/workloads; role auditor). One page per
call; the next page's --cursor goes to stderr; --all follows it to the end.

${CONNECTION_HELP}
exit: 0 ok, 1 the broker refused or failed, 2 usage`,
  async run(args) {
    const [, rest] = subcommand(args, 'workloads', ['ls']);
    const { values } = parseArgs({ args: rest, options: { ...connectionOptions, limit: { type: 'string' }, cursor: { type: 'string' }, all: { type: 'boolean' } }, allowPositionals: false });
    if (values.all && values.cursor !== undefined) throw new UsageError('--all starts at the newest workload: leave out --cursor');
    const limit = intFlag(values.limit, 'limit', 1, 1000);
    const client = new BrokerClient(values);
    let cursor = values.cursor;
    const rows: WorkloadRow[] = [];
    for (;;) {
      const page = await client.json<{ workloads: WorkloadRow[]; cursor?: string }>('GET', '/v1/workloads', { query: { limit, cursor } });
      if (!values.all) {
        if (values.json) printJson(page);
        else {
          out(renderTable(COLUMNS, page.workloads, '(no workloads)'));
          if (page.cursor) process.stderr.write(`more: add --cursor ${page.cursor} (or use --all)\n`);
        }
        return 0;
      }
      rows.push(...page.workloads);
      if (!page.cursor) break;
      cursor = page.cursor;
    }
    if (values.json) printJson({ workloads: rows });
    else out(renderTable(COLUMNS, rows, '(no workloads)'));
    return 0;
  },
};
