/**
 * Human output for the operator commands: a table of rows (columns padded to their widest cell,
 * long cells clipped with "…"), and a two-column list of fields for one record. Scripts use
 * `--json` instead; nothing here is meant to be parsed.
 */

export interface Column<T> {
  header: string;
  value: (row: T) => string | number | boolean | undefined | null;
  /** Clip cells longer than this (the full value is in --json). */
  max?: number;
}

/** One printable line: control characters from the broker (or a workload's strings) never reach the terminal raw. */
export function cell(value: string | number | boolean | undefined | null): string {
  if (value === undefined || value === null || value === '') return '-';
  // eslint-disable-next-line no-control-regex -- escaping control characters is the point
  return String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function clip(text: string, max: number | undefined): string {
  if (max === undefined || [...text].length <= max) return text;
  return `${[...text].slice(0, Math.max(1, max - 1)).join('')}…`;
}

const width = (text: string): number => [...text].length;

/** The rows as a table with a header line; `empty` when there are none. */
export function renderTable<T>(columns: Column<T>[], rows: readonly T[], empty = '(none)'): string {
  if (rows.length === 0) return `${empty}\n`;
  const cells = rows.map((row) => columns.map((c) => clip(cell(c.value(row)), c.max)));
  const widths = columns.map((c, i) => Math.max(width(c.header), ...cells.map((r) => width(r[i]!))));
  const line = (values: string[]) =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v + ' '.repeat(widths[i]! - width(v))))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

/** `name: value` lines, names aligned, for one record (`grants show`). */
export function renderFields(fields: [string, string | number | boolean | undefined | null][]): string {
  const w = Math.max(...fields.map(([name]) => width(name)));
  return fields.map(([name, value]) => `${name}:${' '.repeat(w - width(name) + 1)}${cell(value)}`).join('\n') + '\n';
}

/** An RFC 3339 time as a table shows it: to the second, UTC. */
export function time(value: string | number | undefined): string {
  if (value === undefined) return '-';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
