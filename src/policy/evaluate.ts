import type { Workload } from '../attestation/attestor.js';
import type { Intent } from '../protocol/intent.js';
import { compileActions, compileGlob, compileResources, type Matcher } from '../protocol/match.js';
import type { Confirmation } from '../protocol/claims.js';
import type { BindingRequirement, Rule } from './rules.js';
import { cut } from '../util/text.js';

/** What was asked for but not allowed, by the closest rule (or by no rule at all). */
export interface Refusal {
  audience?: string;
  actions: string[];
  resources: string[];
  /** The rule scopes tokens to resources, but the request named none. */
  resourcesRequired?: boolean;
  /** The rule's binding requirement, which the token's binding does not meet. */
  binding?: Exclude<BindingRequirement, 'none'>;
}

/** The proof-of-possession bindings a token could carry: `mtls` (cnf.x5t#S256), `dpop` (cnf.jkt). */
export type Bindings = ReadonlySet<'mtls' | 'dpop'>;

/** The binding of a confirmation, as a set of at most one. */
export function bindingsOf(cnf: Confirmation | undefined): Bindings {
  return new Set(cnf === undefined ? [] : 'jkt' in cnf ? ['dpop' as const] : ['mtls' as const]);
}

/** Whether a token with one of `bindings` meets the rule's requirement. */
export function meetsBinding(required: BindingRequirement, bindings: Bindings): boolean {
  return required === 'none' || (required === 'any' ? bindings.size > 0 : bindings.has(required));
}

export type Decision =
  | {
      allowed: true;
      rule: string;
      /** Granted intent: the intersection of request and rule (what the rule covers of the request). */
      audience: string;
      actions: string[];
      resources: string[];
      maxTtlMs: number | undefined;
      maxLifetimeMs: number | undefined;
      requireBinding: BindingRequirement;
    }
  | {
      allowed: false;
      /** Public sentence naming what was refused. */
      reason: string;
      refused: Refusal;
      /** Closest rule considered, for the operator log; undefined when no rule matched the workload. */
      closestRule: string | undefined;
    };

interface CompiledRule {
  rule: Rule;
  workloads: Matcher[];
  /** Whether the rule names resources at all (then a request must name some). */
  scopesResources: boolean;
  resource: Matcher;
  action: Matcher;
  audiences: Set<string>;
  actors: Matcher[];
}

/**
 * How `evaluate` reads a request: `actor`, a workload acting for the evaluated one (only rules
 * whose `actors` name it are candidates); `narrow`, grant the actions a rule allows of those asked
 * for (at least one) instead of refusing the rest.
 */
export interface EvaluateOptions {
  actor?: string;
  narrow?: boolean;
}

/** Default deny: a request is allowed only when one rule covers all of it. */
export class Policy {
  private readonly rules: CompiledRule[];

  constructor(rules: Rule[]) {
    this.rules = rules.map((rule) => ({
      rule,
      workloads: rule.workloads.map(compileGlob),
      scopesResources: rule.resources.length > 0,
      resource: compileResources(rule.resources),
      action: compileActions(rule.actions),
      audiences: new Set(rule.audiences),
      actors: rule.actors.map(compileGlob),
    }));
  }

  get size(): number {
    return this.rules.length;
  }

  /** The rules in evaluation order (read-only: explain and the offline policy check walk them). */
  get ruleList(): readonly Rule[] {
    return this.rules.map((r) => r.rule);
  }

  /**
   * `bindings`: the binding the token would carry (default: the evidence's own, a client
   * certificate's); explain passes every binding the evidence could have.
   */
  evaluate(workload: Pick<Workload, 'id'> & Partial<Workload>, intent: Intent, bindings: Bindings = bindingsOf(workload.confirmation), opts: EvaluateOptions = {}): Decision {
    const { actor } = opts;
    const candidates = this.rules.filter((r) => r.workloads.some((m) => m(workload.id)) && (actor === undefined || r.actors.some((m) => m(actor))));
    if (candidates.length === 0) {
      return {
        allowed: false,
        reason: actor === undefined ? `no policy rule allows workload ${workload.id}` : `no policy rule lets workload ${actor} act for workload ${workload.id}`,
        refused: { audience: intent.audience, actions: [...intent.actions], resources: [...intent.resources] },
        closestRule: undefined,
      };
    }
    let closest: { rule: Rule; refused: Refusal; weight: number; compiled: CompiledRule } | undefined;
    for (const c of candidates) {
      const refused: Refusal = {
        actions: intent.actions.filter((a) => !c.action(a)),
        resources: intent.resources.filter((r) => !c.resource(r)),
      };
      if (!c.audiences.has(intent.audience)) refused.audience = intent.audience;
      // An empty resource list must not read as "any resource" under a rule that scopes them.
      if (c.scopesResources && intent.resources.length === 0) refused.resourcesRequired = true;
      if (c.rule.require_binding !== 'none' && !meetsBinding(c.rule.require_binding, bindings)) refused.binding = c.rule.require_binding;
      const weight =
        // A rule that would allow all but the binding is the most useful one to name.
        (refused.audience ? 1000 : 0) +
        (refused.binding ? 0.5 : 0) +
        (refused.resourcesRequired ? 1 : 0) +
        refused.actions.length +
        refused.resources.length;
      if (weight === 0) return allowedBy(c, intent);
      if (!closest || weight < closest.weight) closest = { rule: c.rule, refused, weight, compiled: c };
    }
    const { rule, refused, compiled } = closest!;
    // Narrowing: the closest rule allows all but some of the actions (it refuses the fewest): it grants the rest.
    const actionsOnly = closest!.weight === refused.actions.length && refused.actions.length < dedupe(intent.actions).length;
    if (opts.narrow === true && actionsOnly) return allowedBy(compiled, intent);
    return { allowed: false, reason: describeRefusal(workload.id, refused), refused, closestRule: rule.name };
  }
}

/** What a rule grants of a request: the actions it allows of those asked for (all of them unless narrowing). */
function allowedBy(c: CompiledRule, intent: Intent): Decision {
  return {
    allowed: true,
    rule: c.rule.name,
    audience: intent.audience,
    actions: dedupe(intent.actions.filter((a) => c.action(a))),
    resources: dedupe(intent.resources),
    maxTtlMs: c.rule.max_ttl,
    maxLifetimeMs: c.rule.max_lifetime,
    requireBinding: c.rule.require_binding,
  };
}

function dedupe(values: string[]): string[] {
  return [...new Set(values)];
}

/** At most a few items, each clipped: the reason goes into the response and the audit event. */
function list(kind: string, values: string[]): string {
  const shown = values.slice(0, 3).map((v) => `"${v.length > 100 ? `${cut(v, 100)}…` : v}"`);
  const more = values.length > 3 ? ` and ${values.length - 3} more` : '';
  return `${kind}${values.length > 1 ? 's' : ''} ${shown.join(', ')}${more}`;
}

function describeRefusal(workloadId: string, r: Refusal): string {
  const parts: string[] = [];
  if (r.audience) parts.push(list('audience', [r.audience]));
  if (r.actions.length) parts.push(list('action', r.actions));
  if (r.resources.length) parts.push(list('resource', r.resources));
  const what = parts.length ? `${parts.join('; ')} not allowed for workload ${workloadId}` : `request not allowed for workload ${workloadId}`;
  const needs = [
    ...(r.resourcesRequired ? ['name at least one resource (the rule scopes tokens to resources)'] : []),
    ...(r.binding ? [`a bound token is required (${BINDING_HOW[r.binding]})`] : []),
  ];
  return needs.length ? `${what}${parts.length ? '; ' : ': '}${needs.join('; ')}` : what;
}

const BINDING_HOW = {
  mtls: 'present a client certificate',
  dpop: 'send a DPoP proof',
  any: 'present a client certificate or send a DPoP proof',
} as const;
