import { z } from 'zod';
import { taskAuthorizationDetailSchema } from './intent.js';

export const TASK_TOKEN_TYP = 'at+jwt';

/** Confirmation claim: RFC 8705 §3.1 (mTLS) or RFC 9449 §6.1 (DPoP). */
export const confirmationSchema = z.union([z.object({ 'x5t#S256': z.string().min(1) }).strict(), z.object({ jkt: z.string().min(1) }).strict()]);
export type Confirmation = z.infer<typeof confirmationSchema>;

/** Delegation chains are bounded: an actor, and at most this many actors in all (RFC 8693 §4.1 nests them). */
export const MAX_ACTOR_CHAIN = 4;

/** RFC 8693 §4.1 `act`: the acting party, with the actors before it nested (the current actor outermost). */
export interface ActorClaim {
  sub: string;
  act?: ActorClaim;
}
/**
 * Written out level by level, not as a recursive schema: the nesting bound is the shape itself
 * (a deeper `act` is an unknown member), and the OpenAPI document needs no self-reference.
 */
const actorLevel = (inner: z.ZodType<ActorClaim> | undefined): z.ZodType<ActorClaim> =>
  inner ? z.object({ sub: z.string().min(1).max(2048), act: inner.optional() }).strict() : z.object({ sub: z.string().min(1).max(2048) }).strict();
export const actorClaimSchema: z.ZodType<ActorClaim> = Array.from({ length: MAX_ACTOR_CHAIN }).reduce<z.ZodType<ActorClaim> | undefined>(
  (inner) => actorLevel(inner),
  undefined,
)!;

/** The nested `act` claim of a chain of actor ids (the current actor first); undefined for none. */
export function actorClaim(chain: readonly string[]): ActorClaim | undefined {
  const [sub, ...rest] = chain;
  if (sub === undefined) return undefined;
  const act = actorClaim(rest);
  return act ? { sub, act } : { sub };
}

/** The actor ids of a nested `act` claim, the current actor first. */
export function actorChain(act: ActorClaim | undefined): string[] {
  return act === undefined ? [] : [act.sub, ...actorChain(act.act)];
}

/**
 * The claims of a task token as a verifier must find them: the shape is checked after the
 * signature, so a token this broker did not mint cannot pass for one.
 */
export const taskTokenClaimsSchema = z.object({
  iss: z.string().min(1),
  sub: z.string().min(1).max(2048),
  aud: z.string().min(1),
  iat: z.number().int().nonnegative(),
  nbf: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
  jti: z.string().min(1).max(256),
  client_id: z.string().min(1),
  grant: z.string().min(1).max(256),
  txn: z.string().min(1),
  scope: z.string(),
  authorization_details: z.array(taskAuthorizationDetailSchema).min(1),
  cnf: confirmationSchema.optional(),
  /** A delegated token: the workload acting for `sub` (RFC 8693 §4.1). */
  act: actorClaimSchema.optional(),
});
/** Claims of a task token (RFC 9068 §2.2 + RFC 9396 §9.1 + the grant's own). */
export type TaskTokenClaims = z.infer<typeof taskTokenClaimsSchema>;
