import type { Operator } from '../auth/operators.js';
import type { KeyList, KeyRow, RotateResult } from '../protocol/operator.js';
import { auditOperator, instanceName, iso, type OperatorDeps } from './deps.js';

export type { KeyRow, RotateResult };

/** GET /v1/keys (auditor): every published key (authenticated by the publication secret, not revoked), newest first; and the revoked ones. */
export async function listKeys(
  deps: OperatorDeps,
  op: Operator,
): Promise<KeyList> {
  const now = deps.clock();
  const [published, marks] = await Promise.all([deps.store.publishedKeys(now), deps.store.revokedKeys(now)]);
  const held = new Map(deps.keyring.heldKeys().map((k) => [k.kid, k.state]));
  const keys = published
    .sort((a, b) => b.created_at - a.created_at || (a.kid < b.kid ? -1 : 1))
    .map((k): KeyRow => {
      const state = held.get(k.kid);
      return {
        kid: k.kid,
        alg: typeof k.jwk.alg === 'string' ? k.jwk.alg : 'unknown',
        created_at: iso(k.created_at),
        retire_at: iso(k.retire_at),
        expires_at: iso(k.expires_at),
        this_instance: state !== undefined,
        ...(state ? { state } : {}),
      };
    });
  await auditOperator(deps, op, 'keys.list', { count: keys.length }, true);
  const revoked = marks.sort((a, b) => b.revoked_at - a.revoked_at).map((m) => ({ kid: m.kid, revoked_at: iso(m.revoked_at), by: m.by }));
  return { instance: instanceName(deps), keys, revoked };
}


/**
 * POST /v1/keys/rotate (admin): the instance that answers moves to its next (already published)
 * key now. Other instances keep theirs (each rotates on its own schedule); the previous key stays
 * published for its overlap, so its tokens still verify. Audited first: an unaudited rotation is
 * refused.
 */
export async function rotateKey(deps: OperatorDeps, op: Operator): Promise<RotateResult> {
  const instance = instanceName(deps);
  const before = deps.keyring.heldKeys().find((k) => k.state === 'current')?.kid;
  const next = deps.keyring.heldKeys().find((k) => k.state === 'next')?.kid;
  await auditOperator(deps, op, 'keys.rotate', { instance, ...(next ? { kid: next } : {}) });
  const { previous, current } = await deps.keyring.rotateNow();
  const rotated = current !== undefined && current !== (previous ?? before);
  return {
    instance,
    rotated,
    ...(previous ? { previous_kid: previous } : {}),
    ...(current ? { current_kid: current } : {}),
    note: rotated
      ? `rotated on the instance that answered (${instance}) only: other instances keep their own keys; the previous key stays published until its tokens expire`
      : `not rotated on ${instance}: its next key is not published yet (retry shortly)`,
  };
}
