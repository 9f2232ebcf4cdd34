import { parseArgs } from 'node:util';
import { z } from 'zod';
import { loadConfig, readYamlFile } from '../../config/load.js';
import { configWarnings } from '../../config/warnings.js';
import { ConfigError } from '../../errors.js';
import { Policy } from '../../policy/evaluate.js';
import { explain, explainRequestSchema, type Explanation, type ExplainRequest, type RuleRefusal } from '../../policy/explain.js';
import { issuesToProblems } from '../../util/issues.js';
import { BrokerClient, CONNECTION_HELP, connectionOptions } from '../client.js';
import { cell, renderFields } from '../table.js';
import { out, printJson, subcommand, UsageError, type Command } from '../usage.js';
import { checkConfigFile } from './check-config.js';

/** One case of a `policy check --cases` file: an explain request and what it must decide. */
const caseSchema = explainRequestSchema.extend({
  /** Shown in the report (default: the case's position). */
  name: z.string().min(1).max(200).optional(),
  expect: z.enum(['allow', 'deny']),
  /** allow: the rule that must allow it; deny: the rule that must be named closest. */
  rule: z.string().min(1).max(64).optional(),
});
const casesSchema = z.array(caseSchema).max(10_000);
type PolicyCase = z.output<typeof caseSchema>;

export const policy: Command = {
  name: 'policy',
  help: `usage: jit-broker policy explain --workload W [--evidence-kind oidc|x509] --audience A
                          --action X [--action Y]... [--resource R]... [--purpose P] [--task T]
                          ([connection] | --config FILE)
       jit-broker policy check --config FILE [--cases FILE] [--skip-files] [--json]

  explain  the decision for a workload and intent, the rule that allows it or, for a denial, the
           parts of the intent no rule allows and the closest rule. Asks the broker
           (POST /v1/policy/explain; role auditor) unless --config FILE is given: then offline,
           from that config's policy.
  check    offline, for the CI of a policy repository: loads FILE as check-config does (every
           problem by its path; --skip-files does not read the TLS files it names, for a CI
           without them), then runs each case of the YAML list in --cases:
             - name: reports may read            # optional
               workload: k8s://prod/ns/reports/sa/builder
               evidence_kind: oidc               # optional: oidc | x509
               intent: { audience: reports-api, actions: [read], resources: [reports://q4] }
               expect: allow                     # allow | deny
               rule: reports-read                # optional: allow: the rule that allows;
                                                 #   deny: the closest rule named
           and prints one line per case.

${CONNECTION_HELP}
exit: 0 ok (explain: whatever the decision; check: every case passed), 1 a case failed or the
      broker refused, 2 usage, 78 config error (the config or the cases file is invalid)`,
  async run(args) {
    const [sub, rest] = subcommand(args, 'policy', ['explain', 'check']);
    return sub === 'explain' ? explainCommand(rest) : check(rest);
  },
};

async function explainCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...connectionOptions,
      config: { type: 'string', short: 'c' },
      workload: { type: 'string' },
      'evidence-kind': { type: 'string' },
      audience: { type: 'string' },
      action: { type: 'string', multiple: true },
      resource: { type: 'string', multiple: true },
      purpose: { type: 'string' },
      task: { type: 'string' },
    },
    allowPositionals: false,
  });
  if (!values.workload || !values.audience || !values.action?.length) throw new UsageError('policy explain needs --workload, --audience and at least one --action');
  const request = {
    workload: values.workload,
    ...(values['evidence-kind'] !== undefined ? { evidence_kind: values['evidence-kind'] } : {}),
    intent: {
      audience: values.audience,
      actions: values.action,
      ...(values.resource ? { resources: values.resource } : {}),
      ...(values.purpose !== undefined ? { purpose: values.purpose } : {}),
      ...(values.task !== undefined ? { task: values.task } : {}),
    },
  };
  let explanation: Explanation;
  if (values.config !== undefined) {
    const parsed = explainRequestSchema.safeParse(request);
    if (!parsed.success) throw new UsageError(issuesToProblems(parsed.error.issues).join('; '));
    explanation = explainOffline(new Policy(loadConfig(values.config).policies), parsed.data);
  } else {
    explanation = await new BrokerClient(values).json<Explanation>('POST', '/v1/policy/explain', { body: request });
  }
  if (values.json) printJson(explanation);
  else out(describe(explanation));
  return 0;
}

const explainOffline = (p: Policy, r: ExplainRequest): Explanation =>
  explain(p, { id: r.workload, ...(r.evidence_kind ? { evidenceKind: r.evidence_kind } : {}) }, { audience: r.intent.audience, actions: r.intent.actions, resources: r.intent.resources });

function refusalText(r: RuleRefusal): string {
  const parts = [
    r.workload !== undefined ? `workload ${r.workload}` : undefined,
    r.audience !== undefined ? `audience ${r.audience}` : undefined,
    r.actions.length ? `action${r.actions.length > 1 ? 's' : ''} ${r.actions.join(' ')}` : undefined,
    r.resources.length ? `resource${r.resources.length > 1 ? 's' : ''} ${r.resources.join(' ')}` : undefined,
    r.resources_required ? 'no resource named (the rule needs one)' : undefined,
    r.evidence_kind ? `evidence ${r.evidence_kind.presented} (a bound token needs ${r.evidence_kind.required})` : undefined,
  ].filter((x): x is string => x !== undefined);
  return parts.length ? parts.join('; ') : 'nothing on its own (no single rule allows all of it together)';
}

const ms = (v: number | null): string | undefined => (v === null ? undefined : v % 60_000 === 0 ? `${v / 60_000}m` : `${v / 1000}s`);

/** An explanation for a person. */
export function describe(e: Explanation): string {
  if (e.decision === 'allow') {
    return renderFields([
      ['decision', 'allow'],
      ['workload', e.workload],
      ['rule', e.rule],
      ['audience', e.granted?.audience],
      ['actions', e.granted?.actions.join(' ')],
      ['resources', e.granted?.resources.join(' ')],
      ['max ttl', ms(e.granted?.max_ttl_ms ?? null)],
      ['max lifetime', ms(e.granted?.max_lifetime_ms ?? null)],
      ['bound token', e.granted?.require_binding ? `required${e.evidence_kind === null ? ' (assumed x509 evidence)' : ''}` : 'not required'],
    ]);
  }
  return renderFields([
    ['decision', 'deny'],
    ['workload', e.workload],
    ['reason', e.reason],
    ['no rule allows', e.not_allowed ? refusalText(e.not_allowed) : undefined],
    ['closest rule', e.closest_rule ? `${e.closest_rule.name} (refuses ${refusalText(e.closest_rule.refused)})` : undefined],
    ['rules for workload', e.rules_for_workload],
  ]);
}

function loadCases(path: string): PolicyCase[] {
  const raw = readYamlFile(path);
  const parsed = casesSchema.safeParse(raw ?? []);
  if (!parsed.success) throw new ConfigError(issuesToProblems(parsed.error.issues).map((p) => `${path}: ${p.startsWith('(root)') ? p.replace('(root)', 'cases') : `cases${p.startsWith('[') ? '' : '.'}${p}`}`));
  return parsed.data;
}

interface CaseResult {
  index: number;
  name: string;
  expect: 'allow' | 'deny';
  rule?: string;
  ok: boolean;
  /** Why it failed, for a person. */
  problem?: string;
  explanation: Explanation;
}

function runCase(p: Policy, c: PolicyCase, index: number): CaseResult {
  const explanation = explainOffline(p, c);
  const got = explanation.decision === 'allow' ? explanation.rule : (explanation.closest_rule?.name ?? null);
  let problem: string | undefined;
  if (explanation.decision !== c.expect) problem = `expected ${c.expect}, got ${explanation.decision}${explanation.rule ? ` by rule ${explanation.rule}` : ''}`;
  else if (c.rule !== undefined && got !== c.rule) problem = `expected ${c.expect === 'allow' ? 'rule' : 'closest rule'} ${c.rule}, got ${got ?? 'none'}`;
  return { index, name: c.name ?? `case ${index + 1}`, expect: c.expect, ...(c.rule ? { rule: c.rule } : {}), ok: problem === undefined, ...(problem ? { problem } : {}), explanation };
}

async function check(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, cases: { type: 'string' }, 'skip-files': { type: 'boolean' }, json: { type: 'boolean' } },
    allowPositionals: false,
  });
  const configPath = values.config ?? process.env.JIT_CONFIG;
  if (!configPath) throw new ConfigError(['--config FILE (or JIT_CONFIG) is required']);
  const warn = (line: string) => process.stderr.write(`${line}\n`);
  const config = values['skip-files']
    ? (() => {
        const c = loadConfig(configPath);
        for (const w of configWarnings(c)) warn(`${configPath}: warning: ${w}`);
        return c;
      })()
    : checkConfigFile(configPath, warn);
  const cases = values.cases !== undefined ? loadCases(values.cases) : [];
  const p = new Policy(config.policies);
  const results = cases.map((c, i) => runCase(p, c, i));
  const failed = results.filter((r) => !r.ok);
  if (values.json) {
    printJson({ config: configPath, rules: p.size, cases: results.length, failed: failed.length, results });
  } else {
    out(`${configPath}: policy ok (${p.size} rule${p.size === 1 ? '' : 's'})`);
    for (const r of results) {
      const what = r.explanation.decision === 'allow' ? `allow by rule ${r.explanation.rule}` : `deny (${r.explanation.reason})`;
      out(`${r.ok ? 'ok  ' : 'FAIL'}  ${cell(r.name)}: ${r.ok ? cell(what) : cell(r.problem)}`);
    }
    if (results.length) out(`${results.length} case${results.length === 1 ? '' : 's'}, ${failed.length} failed`);
  }
  return failed.length ? 1 : 0;
}
