import { createHash } from 'node:crypto';
import { randomBase64url } from '../util/random.js';

/**
 * Every key about one workload's grants carries the hash tag {w:<tag>}, so one Lua script can
 * touch them all atomically, on standalone Redis and on Redis Cluster alike. Grant ids embed the
 * tag, so any grant id routes to its slot without a lookup.
 *
 * The tag is 128 bits of SHA-256: workload ids can be chosen by whoever runs the workload (a
 * branch name, say), and a shorter tag would let one search for an id whose tag equals a
 * victim's, to share the victim's keys (its cap, listings and audit stream).
 *
 * Tag and id are base64url, not hex: a grant id is a member of two sorted sets per grant, and
 * Redis keeps a sorted set compact (listpack) only while every member is at most 64 bytes. In
 * hex the id was 68 bytes, and each index entry cost several times as much (bench/ measures it).
 */
const TAG_BYTES = 16;

/** Recent tags: one request derives its workload's tag several times (id, validation, keys). */
const tags = new Map<string, string>();
const TAGS_REMEMBERED = 1_000;

export function workloadTag(workloadId: string): string {
  let tag = tags.get(workloadId);
  if (tag === undefined) {
    tag = createHash('sha256').update(workloadId).digest().subarray(0, TAG_BYTES).toString('base64url');
    if (tags.size >= TAGS_REMEMBERED) tags.clear();
    tags.set(workloadId, tag);
  }
  return tag;
}

/** g_<workload tag>_<128 random bits>: 47 characters, both parts base64url of fixed length 22. */
const GRANT_ID = /^g_([A-Za-z0-9_-]{22})_([A-Za-z0-9_-]{22})$/;

export function newGrantId(workloadId: string): string {
  return `g_${workloadTag(workloadId)}_${randomBase64url(16)}`;
}

/** The workload tag inside a grant id, or undefined when the id is malformed. */
export function tagOfGrantId(grantId: string): string | undefined {
  return GRANT_ID.exec(grantId)?.[1];
}

export const isGrantId = (value: string): boolean => GRANT_ID.test(value);

/** A used DPoP proof's name in its workload's slot: bounded, whatever the jti's length. */
export const usedProofDigest = (proof: { jkt: string; jti: string }): string =>
  createHash('sha256').update(`${proof.jkt}\n${proof.jti}`).digest().subarray(0, 16).toString('base64url');

/** Key names, all under one prefix. */
export function grantKeys(prefix: string, tag: string) {
  const slot = `${prefix}{w:${tag}}`;
  return {
    grant: (id: string) => `${slot}:grant:${id}`,
    /** zset grant id → expires_at, live grants only (drives the active cap). */
    live: `${slot}:live`,
    /** zset grant id → created_at, every grant within retention. */
    all: `${slot}:grants`,
    /** stream of lifecycle audit events (trimmed by age). */
    audit: `${slot}:audit`,
    /** stream of the workload's denials (clipped, capped in length). */
    denials: `${slot}:denials`,
    /** hash: the workload's issuance token bucket (see lib.lua bucket_take). */
    rate: `${slot}:rate`,
    /** marker: a DPoP proof (by the digest of its key and jti) was used; expires with the proof (GrantStore.useProofJti). */
    usedProof: (digest: string) => `${slot}:dpop:${digest}`,
    /** marker: this grant id was voided before its record arrived (see close-grant.lua). */
    voided: (id: string) => `${slot}:void:${id}`,
  };
}
