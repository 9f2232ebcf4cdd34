import { createHash } from 'node:crypto';
import { randomHex } from '../util/random.js';

/**
 * Every key about one workload's grants carries the hash tag {w:<tag>}, so one Lua script can
 * touch them all atomically, on standalone Redis and on Redis Cluster alike. Grant ids embed the
 * tag, so any grant id routes to its slot without a lookup.
 */
export function workloadTag(workloadId: string): string {
  return createHash('sha256').update(workloadId).digest('hex').slice(0, 12);
}

const GRANT_ID = /^g_([0-9a-f]{12})_([0-9a-f]{32})$/;

export function newGrantId(workloadId: string): string {
  return `g_${workloadTag(workloadId)}_${randomHex(16)}`;
}

/** The workload tag inside a grant id, or undefined when the id is malformed. */
export function tagOfGrantId(grantId: string): string | undefined {
  return GRANT_ID.exec(grantId)?.[1];
}

export const isGrantId = (value: string): boolean => GRANT_ID.test(value);

/** Key names, all under one prefix. */
export function grantKeys(prefix: string, tag: string) {
  const slot = `${prefix}{w:${tag}}`;
  return {
    grant: (id: string) => `${slot}:grant:${id}`,
    /** zset grant id → expires_at, live grants only (drives the active cap). */
    live: `${slot}:live`,
    /** zset grant id → created_at, every grant within retention. */
    all: `${slot}:grants`,
    /** zset grant id → created_at, per task id. */
    task: (task: string) => `${slot}:task:${task}`,
    /** stream of audit events. */
    audit: `${slot}:audit`,
  };
}
