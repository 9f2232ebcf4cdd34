import type { Attestor, Evidence, Workload } from './attestation/attestor.js';
import type { Config } from './config/schema.js';
import { AccessDenied, AttestationFailed, InvalidRequest, OutcomeUnknown, Unavailable } from './errors.js';
import { UndeliveredGrants } from './grants/undelivered.js';
import { DuplicateGrantId } from './grants/codec.js';
import { newGrantId } from './grants/ids.js';
import type { GrantStore } from './grants/store.js';
import type { Logger } from './log.js';
import type { Decision, Policy } from './policy/evaluate.js';
import { TTL_CAP_MS, TTL_FLOOR_MS } from './policy/rules.js';
import type { GrantedIntent } from './protocol/intent.js';
import type { TaskStartRequest, TaskStartResponse } from './protocol/tasks.js';
import { taskStartRequestSchema } from './protocol/tasks.js';
import type { Keyring } from './tokens/keyring.js';
import { newTokenId, signTaskToken, taskTokenClaims } from './tokens/mint.js';
import type { Clock } from './util/clock.js';
import { parseDuration } from './util/duration.js';
import { issuesToProblems, type Issue } from './util/issues.js';
import { randomHex } from './util/random.js';

export interface BrokerDeps {
  config: Config;
  store: GrantStore;
  policy: Policy;
  keyring: Keyring;
  attestors: Partial<Record<Evidence['kind'], Attestor>>;
  clock: Clock;
  log: Logger;
}

/** What the transport knows about the caller, apart from the body. */
export interface CallContext {
  remoteAddress?: string;
  /** Client certificate evidence from the TLS handshake or a trusted proxy header. */
  certificate?: Extract<Evidence, { kind: 'x509' }>;
}

/**
 * The pipeline: evidence → attest → authorize(intent) → record → mint. One function per
 * operation; REST routes, the token endpoint, the SDK and the CLI are thin adapters over these.
 */
export class Broker {
  private readonly voider: UndeliveredGrants;

  constructor(private readonly deps: BrokerDeps) {
    this.voider = new UndeliveredGrants(deps.store, deps.clock, deps.log);
  }

  /** Stops background work (retries of undelivered grants). */
  close(): void {
    this.voider.close();
  }

  /** POST /v1/tasks: attest the workload, authorize its intent, record the grant, mint its token. */
  async startTask(body: unknown, ctx: CallContext = {}): Promise<TaskStartResponse> {
    const { config, store, clock, log } = this.deps;
    const req = parseBody(body);
    const ttlMs = requestedTtl(req.ttl, config.tokens.default_ttl, config.tokens.max_ttl);
    const workload = await this.attest(req, ctx);
    const intent = { ...req.intent, resources: req.intent.resources ?? [] };

    const decision = this.deps.policy.evaluate(workload, intent);
    if (!decision.allowed) {
      await this.auditDenial(workload, intent.audience, intent.actions, decision);
      throw new AccessDenied(decision.reason, { detail: `closest rule: ${decision.closestRule ?? 'none'}` });
    }

    const now = clock();
    const lifetimeMs = Math.min(
      req.lifetime === undefined ? config.grants.default_lifetime : parseWireDuration(req.lifetime, 'lifetime'),
      decision.maxLifetimeMs ?? Infinity,
      config.grants.max_lifetime,
    );
    if (lifetimeMs < TTL_FLOOR_MS) throw new InvalidRequest('lifetime must be at least 30s');
    const grantEnd = now + lifetimeMs;
    const tokenExp = Math.min(now + Math.min(ttlMs, decision.maxTtlMs ?? Infinity), grantEnd, workload.evidenceExpiresAt);
    if (tokenExp - now < TTL_FLOOR_MS) {
      throw new AttestationFailed(
        `the presented evidence expires in ${Math.max(0, Math.floor((workload.evidenceExpiresAt - now) / 1000))}s; present evidence valid for at least 30s`,
      );
    }

    const granted: GrantedIntent = {
      audience: decision.audience,
      actions: decision.actions,
      resources: decision.resources,
      purpose: intent.purpose,
      task: intent.task ?? `task_${randomHex(12)}`,
    };
    const grantId = newGrantId(workload.id);
    const jti = newTokenId();
    // Sign before recording: the token exists only in memory until its grant is written, and is
    // dropped if the write fails (no token without a grant).
    const key = this.deps.keyring.signingKey();
    const claims = taskTokenClaims({
      issuer: config.issuer,
      workloadId: workload.id,
      grantId,
      jti,
      intent: granted,
      issuedAt: now,
      expiresAt: tokenExp,
      ...(workload.confirmation ? { cnf: workload.confirmation } : {}),
    });
    const token = signTaskToken(claims, key);
    const grant = await store.createGrant(
      {
        id: grantId,
        workload: workload.id,
        workload_kind: workload.kind,
        issuer: workload.issuer,
        rule: decision.rule,
        audience: granted.audience,
        actions: granted.actions,
        resources: granted.resources,
        purpose: granted.purpose,
        task: granted.task,
        created_at: now,
        expires_at: grantEnd,
        token_jti: jti,
        token_exp: claims.exp * 1000,
        ...(workload.confirmation ? { cnf: workload.confirmation } : {}),
      },
      { now, maxActive: config.grants.max_active_per_workload, retentionMs: config.grants.audit_retention },
    ).catch((e: unknown) => {
      // 128 random bits make this a bug, never an input error: fail closed like a store fault.
      if (e instanceof DuplicateGrantId) throw new Unavailable('grant could not be recorded', { detail: e.message });
      // The caller gets a 503 and no token; the grant may still land: void it.
      if (e instanceof OutcomeUnknown) this.voider.add(grantId, workload.id);
      throw e;
    });
    log.info({ grant: grant.id, workload: workload.id, rule: decision.rule, jti, exp: claims.exp }, 'task token issued');
    return {
      access_token: token,
      token_type: 'Bearer',
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      grant: grant.id,
      workload: workload.id,
      expires_in: claims.exp - claims.iat,
      expires_at: new Date(claims.exp * 1000).toISOString(),
      grant_expires_at: new Date(grant.expires_at).toISOString(),
      scope: claims.scope,
      intent: granted,
      rule: decision.rule,
    };
  }

  /** Picks the evidence (body token, else client certificate) and runs its attestor. */
  private async attest(req: ReturnType<typeof parseBody>, ctx: CallContext): Promise<Workload> {
    const evidence: Evidence | undefined = req.attestation ?? ctx.certificate;
    if (!evidence) {
      throw new AttestationFailed('no evidence: send attestation {kind, token} or present a client certificate');
    }
    const attestor = this.deps.attestors[evidence.kind];
    if (!attestor) throw new AttestationFailed(`attestation kind "${evidence.kind}" is not enabled on this broker`);
    return attestor.attest(evidence);
  }

  /** Denials are audited in the workload's stream; a failed audit write never turns a denial into success. */
  private async auditDenial(workload: Workload, audience: string, actions: string[], decision: Extract<Decision, { allowed: false }>) {
    const { store, config, clock, log } = this.deps;
    try {
      await store.appendAudit(
        {
          type: 'grant.denied',
          at: clock(),
          workload: workload.id,
          reason: decision.reason,
          ...(decision.closestRule ? { rule: decision.closestRule } : {}),
          audience,
          actions,
        },
        // No rule names this workload: one shared capped stream, not a stream per attested id.
        { retentionMs: config.grants.audit_retention, unmatched: decision.closestRule === undefined },
      );
    } catch (e) {
      log.warn({ workload: workload.id, err: (e as Error).message }, 'denial audit write failed');
    }
  }
}

function parseBody(body: unknown) {
  const result = taskStartRequestSchema.safeParse(body);
  if (!result.success) throw new InvalidRequest(describeZodError(result.error));
  return result.data;
}

/** One sentence naming the first problems by path, e.g. `intent.actions: expected array`. */
export function describeZodError(error: { issues: readonly Issue[] }): string {
  const parts = issuesToProblems(error.issues.slice(0, 3), 'body');
  return `invalid request: ${parts.join('; ')}${error.issues.length > 3 ? ` (and ${error.issues.length - 3} more)` : ''}`;
}

function parseWireDuration(value: string | number, field: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new InvalidRequest(`${field} must be a duration such as "90s" or "5m"`);
  }
}

/** TTL is minutes: floor 30 s, default from config, hard cap 15 min (policy may lower it later). */
function requestedTtl(ttl: TaskStartRequest['ttl'], defaultMs: number, maxMs: number): number {
  if (ttl === undefined) return defaultMs;
  const ms = parseWireDuration(ttl, 'ttl');
  if (ms < TTL_FLOOR_MS) throw new InvalidRequest('ttl must be at least 30s');
  if (ms > Math.min(maxMs, TTL_CAP_MS)) throw new InvalidRequest(`ttl must be at most ${Math.min(maxMs, TTL_CAP_MS) / 1000}s`);
  return ms;
}

