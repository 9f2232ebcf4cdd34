import type { Evidence, Workload } from '../attestation/attestor.js';
import type { X509Evidence } from '../attestation/x509.js';
import { InvalidClient, InvalidToken, UnreadableGrant } from '../errors.js';
import { isLive } from '../grants/codec.js';
import type { ActorLink, Grant } from '../grants/store.js';
import { bindingsOf, type Decision, type Policy } from '../policy/evaluate.js';
import { actorChain, MAX_ACTOR_CHAIN, type Confirmation, type TaskTokenClaims } from '../protocol/claims.js';
import type { GrantedIntent, Intent } from '../protocol/intent.js';
import { TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT } from '../protocol/token.js';
import { checkBinding } from '../tokens/binding.js';
import { recordMismatch } from '../tokens/record-match.js';

/**
 * Agent delegation (RFC 8693 §1.1, §4.1, §4.4): a workload (the actor) acts for another (the
 * subject). The actor proves itself with an actor token: a platform token (attested like any
 * evidence) or one of its own live task tokens (with that token's proof of possession). The
 * policy must name the actor in a rule of the subject's (`actors`), and the grant is what both
 * the subject's rule and the actor's own rules allow.
 */

/** An actor token as the token endpoint received it. */
export type ActorToken = { kind: 'platform'; token: string } | { kind: 'task'; token: string };

/** The verified actor: who it is, the chain it heads, and the binding its token asked for. */
export interface Actor {
  id: string;
  /** Who vouched for the actor (its attestor's issuer or trust domain). */
  issuer: string;
  /** The grant's actors: this one first, then those its own task token acted for. */
  chain: ActorLink[];
  /** The binding the actor's task token carried: the issued token keeps it (absent for a platform token). */
  confirmation?: Confirmation;
  /** When the actor's token expires (ms): the delegated token never outlives it. */
  expiresAt: number;
}

/** An actor token that is invalid or unacceptable: RFC 8693 §2.2.2 answers `invalid_request`. Counts as a failed authentication. */
export class ActorRefused extends InvalidClient {}

/** The actor token of a token request, by its RFC 8693 §3 type; undefined when none was sent. */
export function actorTokenOf(token: string | undefined, type: string | undefined): ActorToken | undefined {
  if (token === undefined && type === undefined) return undefined;
  if (token === undefined) throw new ActorRefused('actor_token_type was sent without an actor_token');
  if (type === undefined) throw new ActorRefused('actor_token_type is required with an actor_token (RFC 8693 §2.1)');
  if (type === TOKEN_TYPE_JWT || type === TOKEN_TYPE_ID_TOKEN) return { kind: 'platform', token };
  if (type === TOKEN_TYPE_ACCESS_TOKEN) return { kind: 'task', token };
  throw new ActorRefused(`actor_token_type must be ${TOKEN_TYPE_JWT} or ${TOKEN_TYPE_ID_TOKEN} (a platform token) or ${TOKEN_TYPE_ACCESS_TOKEN} (the actor's task token)`);
}

/** What verifying an actor token needs from the broker. */
export interface ActorDeps {
  attest(evidence: Evidence): Promise<Workload>;
  verifyTaskToken(token: string): Promise<TaskTokenClaims>;
  getGrant(id: string): Promise<Grant | null>;
  now: number;
  /** The key of the request's DPoP proof, if it had one (already checked for this request). */
  proofJkt?: string;
  /** The request's client certificate, if any. */
  certificate?: X509Evidence;
}

/**
 * Verifies an actor token on its own path: a platform token through its attestor; a task token
 * as a task token (signature, expiry, its grant live and this its latest token, the record
 * vouching for it) and with its proof of possession, since a stolen bound token must not act.
 */
export async function verifyActor(actor: ActorToken, deps: ActorDeps): Promise<Actor> {
  if (actor.kind === 'platform') {
    const workload = await deps.attest({ kind: 'oidc', token: actor.token }).catch((e: unknown) => {
      if (e instanceof InvalidClient) throw new ActorRefused(e.description);
      throw e;
    });
    return { id: workload.id, issuer: workload.issuer, chain: [{ sub: workload.id, issuer: workload.issuer }], expiresAt: workload.evidenceExpiresAt };
  }
  const claims = await deps.verifyTaskToken(actor.token).catch((e: unknown) => {
    if (e instanceof InvalidToken) throw new ActorRefused(`not a valid task token: ${e.description}`);
    throw e;
  });
  const grant = await deps.getGrant(claims.grant).catch((e: unknown) => {
    if (e instanceof UnreadableGrant) return null;
    throw e;
  });
  if (!grant || !isLive(grant, deps.now) || grant.token_jti !== claims.jti || recordMismatch(claims, grant) !== undefined)
    throw new ActorRefused('the task token is not active (its grant ended, or a renewal superseded it)');
  const cnf = claims.cnf;
  if (cnf && 'jkt' in cnf) {
    if (deps.proofJkt !== cnf.jkt) throw new ActorRefused('the task token is bound to a DPoP key: send a DPoP proof signed by that key');
  } else if (cnf) {
    checkBinding(claims, deps.certificate, (m) => new ActorRefused(`the task token ${m.replace(/^this token /, '')}`));
  }
  const chain: ActorLink[] = [{ sub: claims.sub, issuer: grant.issuer }, ...actorChain(claims.act).map((sub) => ({ sub }))];
  return { id: claims.sub, issuer: grant.issuer, chain, ...(cnf ? { confirmation: cnf } : {}), expiresAt: claims.exp * 1000 };
}

/** A chain longer than MAX_ACTOR_CHAIN, or naming the subject as its own actor, is refused. */
export function checkChain(subject: string, chain: readonly ActorLink[]): void {
  if (chain.length > MAX_ACTOR_CHAIN) throw new ActorRefused(`a delegation chain has at most ${MAX_ACTOR_CHAIN} actors; this one would have ${chain.length}`);
  if (chain[0]?.sub === subject) throw new ActorRefused('the actor is the subject itself: send the subject token alone');
}

/**
 * The policy's decision on a delegated request: a rule of the subject's that names the actor in
 * `actors`, and one of the actor's own rules, must each allow the audience, the resources and the
 * binding; the actions granted are those both allow of the requested ones (at least one). The
 * decision is the subject's rule's (its name, caps and binding requirement), with the actions narrowed,
 * and the actor's caps applied too. `exact` (renewal) refuses any narrowing: the grant must still hold whole.
 */
export function delegatedDecision(policy: Policy, subject: string, actor: string, intent: Intent | GrantedIntent, cnf: Confirmation | undefined, exact = false): Decision {
  const bindings = bindingsOf(cnf);
  const forSubject = policy.evaluate({ id: subject }, intent, bindings, { actor, narrow: !exact });
  if (!forSubject.allowed) return forSubject;
  const asActor = policy.evaluate({ id: actor }, { ...intent, actions: forSubject.actions }, bindings, { narrow: !exact });
  if (!asActor.allowed) return { ...asActor, reason: `the actor's own rules refuse: ${asActor.reason}` };
  return {
    ...forSubject,
    actions: asActor.actions,
    maxTtlMs: minOf(forSubject.maxTtlMs, asActor.maxTtlMs),
    maxLifetimeMs: minOf(forSubject.maxLifetimeMs, asActor.maxLifetimeMs),
  };
}

const minOf = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined ? b : b === undefined ? a : Math.min(a, b));
