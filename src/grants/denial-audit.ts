import type { Logger } from '../log.js';
import { DenialBudget, type DenialBudgetOptions } from '../limits/denial-budget.js';
import type { Clock } from '../util/clock.js';
import { unmatchedPartition } from './codec.js';
import { workloadTag } from './ids.js';
import type { AuditEvent, GrantStore } from './store.js';

export interface DenialAuditOptions {
  store: GrantStore;
  clock: Clock;
  log: Logger;
  budget: DenialBudgetOptions;
  retentionMs: number;
  /** How long a summary gathers the denials past the budget. Default 1 min. */
  windowMs?: number;
}

/** Where a denial came from: its source address (normalised), and whether any rule names its workload. */
export interface DenialSource {
  source?: string;
  unmatched: boolean;
}

/** The denials past the budget bound for one stream, in one window. */
interface Tally {
  count: number;
  since: number;
  /** The workload of the stream (matched), or the latest one denied (an unmatched partition). */
  workload: string;
  from: DenialSource;
}

const SUMMARY_WINDOW_MS = 60_000;
/** Stands for the workloads of denials counted once the tallies are full. */
const MANY_WORKLOADS = '*';

/**
 * Records the broker's denials (policy refusals, the live-grant cap, the issuance rate) within
 * the audit budget: a denial is written to the store (clipped, into a capped stream) while its
 * source address and its workload have budget; past it, it is only counted, and each stream gets
 * one summary event per window carrying the count. Redis therefore grows by at most one clipped
 * event per denial under the budget, and by one summary per stream and window past it.
 *
 * The tallies are bounded too: one per workload stream (at most `maxTracked`), one per unmatched
 * partition, and one for everything beyond. A failed write never turns a denial into success.
 */
export class DenialAudit {
  private readonly budget: DenialBudget;
  private readonly windowMs: number;
  /** By stream; Map order is the order windows opened, so the due ones come first. */
  private readonly tallies = new Map<string, Tally>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly opts: DenialAuditOptions) {
    this.budget = new DenialBudget(opts.budget);
    this.windowMs = opts.windowMs ?? SUMMARY_WINDOW_MS;
    this.timer = setInterval(() => void this.flushDue(opts.clock()), this.windowMs);
    this.timer.unref();
  }

  /** Writes the denial, or counts it into its stream's summary when over budget. Never throws. */
  async record(event: AuditEvent, from: DenialSource): Promise<void> {
    const now = this.opts.clock();
    await this.flushDue(now);
    if (this.budget.admit(from.source, workloadTag(event.workload), now)) {
      await this.write(event, from);
      return;
    }
    const key = from.unmatched ? `u:${unmatchedPartition(from.source ?? event.workload)}` : `w:${workloadTag(event.workload)}`;
    const tally = this.tallies.get(key) ?? (this.tallies.size < this.opts.budget.maxTracked ? undefined : this.tallies.get(MANY_WORKLOADS));
    if (tally) {
      tally.count++;
      if (from.unmatched && tally.workload !== MANY_WORKLOADS) tally.workload = event.workload;
      return;
    }
    const full = this.tallies.size >= this.opts.budget.maxTracked;
    this.tallies.set(full ? MANY_WORKLOADS : key, {
      count: 1,
      since: now,
      workload: full ? MANY_WORKLOADS : event.workload,
      // An unmatched partition's summary goes back to that partition, whichever workload it names.
      from: full ? { unmatched: true } : from.unmatched ? { unmatched: true, source: from.source ?? event.workload } : from,
    });
  }

  /** Stops the window timer and writes what the open windows counted (best effort). */
  close(): void {
    clearInterval(this.timer);
    void this.flushDue(Infinity);
  }

  /** Writes the summaries of the windows that are over. */
  private async flushDue(now: number): Promise<void> {
    const due: Tally[] = [];
    for (const [key, tally] of this.tallies) {
      if (tally.since + this.windowMs > now) break;
      this.tallies.delete(key);
      due.push(tally);
    }
    await Promise.all(due.map((t) => this.write(summary(t, Math.min(now, this.opts.clock())), t.from)));
  }

  private async write(event: AuditEvent, from: DenialSource): Promise<void> {
    try {
      await this.opts.store.appendAudit(event, {
        retentionMs: this.opts.retentionMs,
        unmatched: from.unmatched,
        ...(from.source !== undefined ? { source: from.source } : {}),
      });
    } catch (e) {
      this.opts.log.warn({ workload: event.workload, err: (e as Error).message }, 'denial audit write failed');
    }
  }
}

function summary(t: Tally, at: number): AuditEvent {
  const whose = t.workload === MANY_WORKLOADS ? 'of many workloads' : t.from.unmatched ? 'of workloads no rule names (the latest named here)' : 'of this workload';
  return {
    type: 'grant.denied',
    at,
    workload: t.workload,
    reason: `over the audit budget: ${t.count} denials ${whose} since ${new Date(t.since).toISOString()} not recorded one by one`,
    count: t.count,
  };
}
