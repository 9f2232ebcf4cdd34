import type { Attestor, Evidence, Workload } from './attestation/attestor.js';
import type { X509Evidence } from './attestation/x509.js';
import { Operators, requireRole, type Operator, type OperatorRole } from './auth/operators.js';
import { presentedClient, publicClientId } from './auth/client-auth.js';
import { ResourceServers, type AssertionContext, type ResourceServer } from './auth/resource-servers.js';
import { endpointUrl, OAUTH_PATHS } from './protocol/endpoints.js';
import type { Config } from './config/schema.js';
import { AccessDenied, AttestationFailed, InvalidClient, InvalidGrant, InvalidRequest, InvalidToken, OutcomeUnknown, TokenMissing, Unavailable, UnreadableGrant } from './errors.js';
import { UndeliveredGrants } from './grants/undelivered.js';
import { DuplicateGrantId, GrantLimitExceeded, isLive } from './grants/codec.js';
import { DenialAudit, type DenialSource } from './grants/denial-audit.js';
import { isGrantId, newGrantId } from './grants/ids.js';
import type { Grant, GrantStore, RateLimit, RenewOutcome } from './grants/store.js';
import { AddressLimiter, addressKey } from './limits/address-limiter.js';
import type { Logger } from './log.js';
import { limitDenialReason, NO_METRICS, policyDenialReason, type ServiceMetrics } from './metrics.js';
import { bindingsOf, type Decision, type Policy, type Refusal } from './policy/evaluate.js';
import { TTL_CAP_MS, TTL_FLOOR_MS } from './policy/rules.js';
import type { Confirmation, TaskTokenClaims } from './protocol/claims.js';
import type { GrantedIntent, Intent } from './protocol/intent.js';
import { MAX_TASK_TOKEN_BYTES } from './protocol/limits.js';
import type { IntrospectionResponse, TaskEndResponse, TaskRenewResponse, TaskStartRequest, TaskStartResponse } from './protocol/tasks.js';
import { RENEW_RETRY_WINDOW_MS, taskRenewRequestSchema, taskStartRequestSchema, tokenParamsSchema } from './protocol/tasks.js';
import { illFormedPath } from './protocol/unicode.js';
import type { Keyring } from './tokens/keyring.js';
import { newTokenId, signTaskTokenOffThread, taskTokenClaims } from './tokens/mint.js';
import { checkBinding, sameConfirmation } from './tokens/binding.js';
import { DpopNonces, InvalidDpopProof, verifyDpopProof, type VerifiedProof } from './tokens/dpop.js';
import { recordedClaims, recordMismatch } from './tokens/record-match.js';
import { TokenDigests } from './tokens/token-digest.js';
import { headerType, TaskTokenVerifier } from './tokens/verify.js';
import { signTxnToken, txnRecordMismatch, txnTokenClaims, TxnTokenVerifier } from './tokens/txn-token.js';
import { TOKEN_TYPE_NOT_APPLICABLE, TXN_TOKEN_TYP } from './protocol/txn-token.js';
import type { Clock } from './util/clock.js';
import { parseDuration } from './util/duration.js';
import { issuesToProblems, type Issue } from './util/issues.js';
import { clip } from './util/text.js';
import { randomHex } from './util/random.js';
import { actorClaim, type ActorClaim } from './protocol/claims.js';
import { checkChain, delegatedDecision, verifyActor, type Actor, type ActorToken } from './oauth/delegation.js';

export interface BrokerDeps {
  config: Config;
  store: GrantStore;
  policy: Policy;
  keyring: Keyring;
  attestors: Partial<Record<Evidence['kind'], Attestor>>;
  clock: Clock;
  log: Logger;
  /** Validates operators' client certificates (auth/operators.ts); absent without client CA bundles. */
  operatorX509?: Attestor<X509Evidence>;
  /** Counters of issuances, denials, renewals, replays and revocations (metrics.ts); none when absent. */
  metrics?: ServiceMetrics;
}

/** What the transport knows about the caller, apart from the body. */
export interface CallContext {
  remoteAddress?: string;
  /**
   * The address failed authentications count against: the peer, or behind a trusted proxy the
   * address it appended to X-Forwarded-For.
   */
  clientAddress?: string;
  /** Client certificate evidence from the TLS handshake or a trusted proxy header. */
  certificate?: X509Evidence;
  /** The credential of `Authorization: Bearer` (a task token, or a resource server's credential), or of `Authorization: DPoP` on the task routes. */
  bearer?: string;
  /** The `DPoP` header: a proof of possession of the key the token is (to be) bound to (RFC 9449). */
  dpop?: string;
  /** The client id and secret of `Authorization: Basic` (a resource server's client_secret_basic). */
  basic?: { clientId: string; secret: string };
}

const INACTIVE: IntrospectionResponse = Object.freeze({ active: false });
/** What a task start asks for, as an adapter read it from its wire format. */
export interface TaskRequest {
  /** The workload's evidence: a platform token, or the client certificate of the connection. */
  evidence: Evidence | undefined;
  intent: Intent;
  ttl?: TaskStartRequest['ttl'];
  lifetime?: TaskStartRequest['lifetime'];
  /** The route the request came to: a DPoP proof's `htu` must be the issuer followed by it. */
  route: string;
  /** Issue a Txn-Token (config txn_tokens) instead of a task token: never bound, its grant ends with it. */
  txnToken?: boolean;
  /** An OAuth client id the caller sent: it must be the attested workload's id (RFC 8705 §2). */
  clientId?: string;
  /** Delegation (oauth/delegation.ts): the token of a workload acting for the attested one. */
  actor?: ActorToken;
}

/** The policy refused the intent (403): what it refused, for adapters that answer in other codes. */
export class PolicyDenied extends AccessDenied {
  constructor(
    description: string,
    readonly refused: Refusal,
    /** The rule that came closest; undefined when no rule names the workload. */
    readonly closestRule: string | undefined,
  ) {
    super(description, { detail: `closest rule: ${closestRule ?? 'none'}` });
  }
}

const REPLAYED = 'this token was already renewed: a superseded token means two holders, so the grant has been revoked';

/**
 * The pipeline: evidence → attest → authorize(intent) → record → mint. One function per
 * operation; REST routes, the token endpoint, the SDK and the CLI are thin adapters over these.
 */
export class Broker {
  private readonly voider: UndeliveredGrants;
  private readonly verifier: TaskTokenVerifier;
  /** Keyed digests of task tokens, recorded with their grant so a renewal need not verify our own signature again. */
  private readonly digests: TokenDigests;
  private readonly txnVerifier: TxnTokenVerifier;
  private readonly failures: AddressLimiter;
  private readonly resourceServers: ResourceServers;
  private readonly operators: Operators;
  private readonly rate: RateLimit;
  private readonly denials: DenialAudit;
  private readonly metrics: ServiceMetrics;
  private readonly nonces: DpopNonces | undefined;

  constructor(private readonly deps: BrokerDeps) {
    const { config, clock, keyring } = deps;
    this.metrics = deps.metrics ?? NO_METRICS;
    this.voider = new UndeliveredGrants(deps.store, clock, deps.log);
    this.digests = new TokenDigests(config.tokens.key_publication_secret);
    this.verifier = new TaskTokenVerifier({ issuer: config.issuer, leewayMs: config.tokens.leeway, clock, keys: keyring, digests: this.digests });
    this.txnVerifier = new TxnTokenVerifier({ issuer: config.issuer, leewayMs: config.tokens.leeway, clock, keys: keyring });
    this.failures = new AddressLimiter({
      ...rateLimit(config.limits.failed_attestations),
      maxAddresses: config.limits.tracked_addresses,
      ipv6PrefixBits: config.limits.ipv6_prefix,
    });
    this.resourceServers = new ResourceServers(config.resource_servers, deps.attestors.x509 as Attestor<X509Evidence> | undefined);
    this.operators = new Operators(config.operators, deps.operatorX509);
    this.rate = rateLimit(config.limits.issuance);
    this.nonces = config.dpop.nonce_secret === undefined ? undefined : new DpopNonces(config.dpop.nonce_secret, config.dpop.nonce_rotation);
    this.denials = new DenialAudit({
      store: deps.store,
      clock,
      log: deps.log,
      retentionMs: config.grants.audit_retention,
      budget: {
        perAddress: rateLimit(config.limits.denial_audit.per_address),
        perWorkload: rateLimit(config.limits.denial_audit.per_workload),
        maxTracked: config.limits.tracked_addresses,
      },
    });
  }

  /** Stops background work (retries of undelivered grants, denial summaries). */
  close(): void {
    this.voider.close();
    this.denials.close();
  }

  /** POST /v1/tasks: attest the workload, authorize its intent, record the grant, mint its token. */
  async startTask(body: unknown, ctx: CallContext = {}): Promise<TaskStartResponse> {
    const req = parse(taskStartRequestSchema, body);
    return this.issue({ evidence: req.attestation ?? ctx.certificate, intent: req.intent, ttl: req.ttl, lifetime: req.lifetime, route: '/v1/tasks' }, ctx);
  }

  /**
   * A task start, whichever adapter received it (POST /v1/tasks, the token endpoint): attest the
   * evidence, authorize the intent, record the grant, mint its token. A DPoP proof in `ctx` binds
   * the token; its `htu` must name `req.route`.
   */
  async issue(req: TaskRequest, ctx: CallContext = {}): Promise<TaskStartResponse> {
    const { config, store, clock, log } = this.deps;
    const ttlMs = requestedTtl(req.ttl, config.tokens.default_ttl, config.tokens.max_ttl);
    const proof = ctx.dpop === undefined ? undefined : this.dpopProof(ctx.dpop, req.route);
    const workload = await this.authenticated(ctx, async () => {
      const workload = await this.attest(req.evidence);
      if (req.clientId !== undefined && req.clientId !== workload.id) throw new InvalidClient('client_id is not the workload the client certificate attests');
      return workload;
    });
    // ── delegation: the actor's token, verified on its own path (oauth/delegation.ts) ──
    const actor = req.actor === undefined ? undefined : await this.authenticated(ctx, () => this.actor(req.actor!, workload.id, proof, ctx));
    const intent = req.intent;
    // A DPoP proof binds the token to its key (RFC 9449 §6.1); without one, a client certificate binds it (RFC 8705);
    // a delegated token keeps the binding of the actor's task token (its holder is the actor).
    const cnf: Confirmation | undefined = proof ? { jkt: proof.jkt } : actor ? actor.confirmation : workload.confirmation;

    const decision = actor ? delegatedDecision(this.deps.policy, workload.id, actor.id, intent, cnf) : this.deps.policy.evaluate(workload, intent, bindingsOf(cnf));
    if (!decision.allowed) {
      await this.auditDenial(workload, intent.audience, intent.actions, decision, ctx, undefined, actor?.id);
      throw new PolicyDenied(decision.reason, decision.refused, decision.closestRule);
    }

    const now = clock();
    const lifetimeMs = Math.min(
      req.lifetime === undefined ? config.grants.default_lifetime : parseWireDuration(req.lifetime, 'lifetime'),
      decision.maxLifetimeMs ?? Infinity,
      config.grants.max_lifetime,
    );
    if (lifetimeMs < TTL_FLOOR_MS) throw new InvalidRequest('lifetime must be at least 30s');
    const grantEnd = now + lifetimeMs;
    const tokenExp = Math.min(now + Math.min(ttlMs, decision.maxTtlMs ?? Infinity), grantEnd, workload.evidenceExpiresAt, actor?.expiresAt ?? Infinity);
    if (tokenExp - now < TTL_FLOOR_MS) throw evidenceTooShort(workload, now);
    // A Txn-Token's grant lives as long as its one token: nothing renews it. It is never bound
    // (the draft defines no binding; the token endpoint refuses a DPoP proof and a certificate).
    const recordedEnd = req.txnToken ? tokenExp : grantEnd;
    if (req.txnToken && cnf) throw new InvalidRequest('a Transaction Token is never bound: request it with a platform token and no proof of possession');

    const granted: GrantedIntent = {
      audience: decision.audience,
      actions: decision.actions,
      resources: decision.resources,
      purpose: intent.purpose,
      task: intent.task ?? `task_${randomHex(12)}`,
    };
    if (proof) await this.useProof(workload.id, proof, now);
    const grantId = newGrantId(workload.id);
    // Sign before recording: the token exists only in memory until its grant is written, and is
    // dropped if the write fails (no token without a grant).
    const act = actor ? actorClaim(actor.chain.map((a) => a.sub)) : undefined;
    const minted = req.txnToken ? await this.mintTxn(workload, grantId, granted, now, tokenExp, ctx) : await this.mint(workload.id, grantId, granted, now, tokenExp, cnf, act);
    const grant = await store
      .createGrant(
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
          expires_at: recordedEnd,
          token_jti: minted.claims.jti,
          token_exp: minted.claims.exp * 1000,
          kid: minted.kid,
          // A Txn-Token is never renewed (nor verified by TaskTokenVerifier): no digest.
          ...(req.txnToken ? {} : { token_digest: this.digests.of(minted.token) }),
          ...(cnf ? { cnf } : {}),
          ...(actor ? { act: actor.chain } : {}),
        },
        { now, maxActive: config.grants.max_active_per_workload, retentionMs: config.grants.audit_retention, rate: this.rate },
      )
      .catch(async (e: unknown) => {
        if (e instanceof GrantLimitExceeded) {
          this.metrics.denied(limitDenialReason(e.auditReason), decision.rule);
          const { audience, actions, task } = granted;
          await this.denials.record({ type: 'grant.denied', at: now, workload: workload.id, rule: decision.rule, reason: e.auditReason, audience, actions, task }, this.denialSource(ctx, false));
        }
        // 128 random bits make this a bug, never an input error: fail closed like a store fault.
        if (e instanceof DuplicateGrantId) throw new Unavailable('grant could not be recorded', { detail: e.message });
        // The caller gets a 503 and no token; the grant may still land: void it.
        if (e instanceof OutcomeUnknown) this.voider.add(grantId, workload.id);
        throw e;
      });
    log.info({ grant: grant.id, workload: workload.id, ...(actor ? { actor: actor.id } : {}), rule: decision.rule, jti: minted.claims.jti, exp: minted.claims.exp }, 'task token issued');
    this.metrics.issued(decision.rule);
    return taskResponse(minted, grant, granted, decision.rule);
  }

  /**
   * POST /v1/tasks/{grant}/renew: a new token for the same grant. The caller presents its current
   * task token and re-attests as the same workload with the same binding; the policy must still
   * allow the grant's intent. A token older than the grant's latest means two holders: the grant
   * is revoked at once (renew-grant.lua).
   */
  async renewTask(grantId: string, body: unknown, ctx: CallContext = {}): Promise<TaskRenewResponse> {
    const { config, store, clock, log } = this.deps;
    const req = parse(taskRenewRequestSchema, body ?? {});
    const ttlMs = requestedTtl(req.ttl, config.tokens.default_ttl, config.tokens.max_ttl);
    const proof = this.taskProof(grantId, 'renew', ctx);
    const { claims, workload, grant } = await this.authenticated(ctx, async () => {
      const token = this.bearerFor(grantId, ctx);
      // The record first: its digest of the grant's latest token stands in for the signature check
      // when the token is that one (tokens/verify.ts). What reading it failed with waits for its
      // turn (liveGrant), after the token's and the evidence's errors, as when it was read there.
      const read = await this.readGrant(grantId);
      const claims = await this.tokenFor(grantId, token, 'grant' in read ? read.grant?.token_digest : undefined);
      const workload = await this.attest(req.attestation ?? ctx.certificate);
      // A delegated grant's holder is its actor: the actor renews it, with its own evidence and the grant's binding.
      if (claims.act !== undefined && workload.id !== claims.act.sub) throw new AttestationFailed('this grant is delegated: its actor renews it, with the actor\'s own evidence');
      if (claims.act === undefined && workload.id !== claims.sub) throw new AttestationFailed('the evidence does not attest the workload this grant was issued to');
      if (proof || (claims.cnf && 'jkt' in claims.cnf)) checkDpopBinding(claims, proof);
      else if (!sameConfirmation(workload.confirmation, claims.cnf)) {
        throw new AttestationFailed(
          claims.cnf
            ? 'this grant is bound to a client certificate: renew over mTLS with that same certificate'
            : 'this grant is not bound to a certificate: re-attest with a fresh platform token',
        );
      }
      const grant = this.liveGrant(read, claims.sub, clock());
      // Only the source that attested the grant (or its actor) may vouch for its renewal: config keeps sources'
      // ids apart, but a grant outlives a config change (or a broker with another config).
      const vouching = grant.act?.[0]?.issuer ?? grant.issuer;
      if (vouching !== workload.issuer)
        throw new AttestationFailed('the evidence comes from another issuer or trust domain than the one that attested this grant', {
          detail: `grant ${grantId} was attested by ${vouching}; the evidence by ${workload.issuer}`,
        });
      return { claims, workload, grant };
    });

    const now = clock();
    this.checkRecord(claims, grant, 'renew');
    // The token the latest renewal superseded, presented again soon after: that renewal's answer
    // was lost and the holder retries. It gets the latest token again, re-signed from the record
    // (same jti, iat and exp), with no new generation and no rate token; renew-grant.lua checks
    // atomically that it still is the latest. Evidence, issuer and binding were checked above.
    const retry = claims.jti !== grant.token_jti && claims.jti === grant.prev_jti && grant.token_iat !== undefined && now - grant.token_iat <= RENEW_RETRY_WINDOW_MS;
    const intent: GrantedIntent = { audience: grant.audience, actions: grant.actions, resources: grant.resources, purpose: grant.purpose, task: grant.task };
    // The subject's slot holds the grant, whoever renews it; a delegated grant needs the delegation to hold whole still.
    const subject: Workload = grant.act ? { ...workload, id: grant.workload } : workload;
    const actor = grant.act ? { id: workload.id, act: actorClaim(grant.act.map((a) => a.sub)) } : undefined;
    const decision = actor
      ? delegatedDecision(this.deps.policy, subject.id, actor.id, intent, grant.cnf, true)
      : this.deps.policy.evaluate(workload, intent, bindingsOf(grant.cnf));
    if (!decision.allowed) {
      await this.auditDenial(subject, intent.audience, intent.actions, decision, ctx, grantId, actor?.id);
      throw new AccessDenied(`the policy no longer allows this grant: ${decision.reason}`, { detail: `closest rule: ${decision.closestRule ?? 'none'}` });
    }
    if (proof) await this.useProof(subject.id, proof, now);
    if (retry) return this.renewRetried(grantId, subject, claims.jti, grant, intent, decision.rule, now);
    const tokenExp = Math.min(now + Math.min(ttlMs, decision.maxTtlMs ?? Infinity), grant.expires_at, workload.evidenceExpiresAt);
    if (tokenExp - now < TTL_FLOOR_MS) {
      if (grant.expires_at - now < TTL_FLOOR_MS) {
        throw new InvalidGrant(`the grant ends in ${Math.floor((grant.expires_at - now) / 1000)}s, too soon to renew: start a new task`);
      }
      throw evidenceTooShort(workload, now);
    }
    const minted = await this.mint(subject.id, grantId, intent, now, tokenExp, grant.cnf, actor?.act);
    const renewal = {
      id: grantId,
      workload: subject.id,
      presentedJti: claims.jti,
      jti: minted.claims.jti,
      tokenExp: minted.claims.exp * 1000,
      kid: minted.kid,
      tokenDigest: this.digests.of(minted.token),
      ...(actor ? { actor: actor.id } : {}),
    };
    const result = await store.renewGrant(renewal, { now, retentionMs: config.grants.audit_retention, rate: this.rate }).catch(async (e: unknown) => {
      if (e instanceof GrantLimitExceeded) {
        this.metrics.denied(limitDenialReason(e.auditReason), grant.rule);
        await this.denials.record({ type: 'grant.denied', at: now, workload: subject.id, grant: grantId, reason: e.auditReason }, this.denialSource(ctx, false));
      }
      throw e;
    });
    switch (result.outcome) {
      case 'renewed':
        log.info({ grant: grantId, workload: subject.id, ...(actor ? { actor: actor.id } : {}), jti: minted.claims.jti, generation: result.grant.generation }, 'task token renewed');
        this.metrics.renewed();
        return { ...taskResponse(minted, result.grant, intent, decision.rule), generation: result.grant.generation };
      case 'current':
        // Only a retry asks for it (retryWindowMs is not passed here): a store answering it otherwise is a bug.
        throw new Error('renewGrant answered current to a renewal that was no retry');
      default:
        return this.renewalRefused(result, grantId, subject.id, claims.jti, now);
    }
  }

  /**
   * A renewal retried with the token the grant's latest renewal superseded, within
   * RENEW_RETRY_WINDOW_MS: the grant's latest token, re-signed from its record, if the store
   * confirms atomically that it still is the latest; else what any renewal would get (a replay
   * revokes).
   */
  private async renewRetried(grantId: string, workload: Workload, presentedJti: string, grant: Grant, intent: GrantedIntent, rule: string, now: number): Promise<TaskRenewResponse> {
    const { config, store, log } = this.deps;
    const act = grant.act ? actorClaim(grant.act.map((a) => a.sub)) : undefined;
    const minted = await this.sign(workload.id, grantId, intent, grant.token_jti, grant.token_iat!, grant.token_exp, grant.cnf, act);
    const renewal = { id: grantId, workload: workload.id, presentedJti, jti: grant.token_jti, tokenExp: grant.token_exp, kid: minted.kid };
    const result = await store.renewGrant(renewal, { now, retentionMs: config.grants.audit_retention, retryWindowMs: RENEW_RETRY_WINDOW_MS });
    switch (result.outcome) {
      case 'current':
        log.info({ grant: grantId, workload: workload.id, jti: grant.token_jti, generation: result.grant.generation }, 'renewal retried: latest task token sent again');
        return { ...taskResponse(minted, result.grant, intent, rule), generation: result.grant.generation };
      case 'renewed':
        // A retry names the grant's latest token, never a new one: a store renewing it is a bug.
        throw new Error('renewGrant renewed a retried renewal');
      default:
        return this.renewalRefused(result, grantId, workload.id, presentedJti, now);
    }
  }

  /** What every renewal answers a refusing store: a replay (the grant is revoked), an inactive or an unknown grant. */
  private renewalRefused(result: Extract<RenewOutcome, { outcome: 'replay' | 'inactive' | 'unknown' }>, grantId: string, workloadId: string, presentedJti: string, now: number): never {
    switch (result.outcome) {
      case 'replay':
        this.deps.log.warn({ grant: grantId, workload: workloadId, presented: presentedJti, generation: result.grant.generation }, 'replay detected: superseded token presented for renewal; grant revoked');
        this.metrics.replayed('renew');
        throw new InvalidGrant(REPLAYED, { reason: 'replay_detected' });
      case 'inactive':
        throw new InvalidGrant(inactiveReason(result.grant, now));
      case 'unknown':
        throw new InvalidGrant('unknown grant');
    }
  }

  /** POST /v1/tasks/{grant}/end: the holder is done; the grant's expiry moves to now. Idempotent. */
  async endTask(grantId: string, ctx: CallContext = {}): Promise<TaskEndResponse> {
    const { store, clock, log } = this.deps;
    const proof = this.taskProof(grantId, 'end', ctx);
    const claims = await this.authenticated(ctx, async () => {
      const claims = await this.presentedToken(grantId, ctx);
      if (proof || (claims.cnf && 'jkt' in claims.cnf)) checkDpopBinding(claims, proof);
      else checkBinding(claims, ctx.certificate);
      return claims;
    });
    if (proof) await this.useProof(claims.sub, proof, clock());
    const recorded = await store.getGrant(grantId);
    if (recorded) this.checkRecord(claims, recorded, 'end');
    const now = clock();
    // An unreadable record throws (500): the grant could not be ended, and no answer may say it was.
    // The token a lost renewal answer superseded, within the retry window, is still this holder's.
    const result = await store.closeGrant(grantId, claims.sub, { now, status: 'ended', reason: 'ended by its holder', presentedJti: claims.jti, by: 'holder', retryWindowMs: RENEW_RETRY_WINDOW_MS });
    switch (result.outcome) {
      case 'replay':
        log.warn({ grant: grantId, workload: claims.sub, presented: claims.jti }, 'replay detected: superseded token presented to end the grant; grant revoked');
        this.metrics.replayed('end');
        throw new InvalidGrant(REPLAYED, { reason: 'replay_detected' });
      case 'unknown':
        // A verified token whose grant has no record (gone past retention, or never written): as renew answers.
        throw new InvalidGrant('unknown grant');
      case 'closed':
        log.info({ grant: grantId, workload: claims.sub }, 'grant ended by its holder');
        break;
      case 'inactive':
        break;
    }
    return { grant: grantId, status: endedStatus(result.grant, now), ended_at: new Date(result.grant.expires_at).toISOString() };
  }

  /**
   * POST /oauth2/introspect (RFC 7662): for an authenticated resource server, the claims of a
   * token of one of its audiences that is its grant's latest and whose grant is live; otherwise
   * `active: false` and nothing else. One store read.
   */
  async introspect(params: unknown, ctx: CallContext = {}): Promise<IntrospectionResponse> {
    const { rs } = await this.authenticated(ctx, async () => {
      const client = presentedClient(params, ctx);
      if (!client)
        throw new InvalidClient('authenticate as a resource server: client_secret_basic, client_secret_post, private_key_jwt, a client certificate or a bearer credential');
      return this.resourceServers.authenticate(client, this.assertionContext(OAUTH_PATHS.introspection));
    });
    const { token } = parse(tokenParamsSchema, params);
    if (headerType(token) === TXN_TOKEN_TYP) return this.introspectTxn(token, rs);
    const claims = await unlessInvalid(this.verifier.verify(token));
    if (!claims || !rs.audiences.includes(claims.aud)) return INACTIVE;
    const now = this.deps.clock();
    // Our own clock judges our own tokens: expired is expired, without the inbound leeway.
    if (claims.exp * 1000 <= now) return INACTIVE;
    const grant = await this.readableGrant(claims.grant);
    // Only the grant's latest token is active: a renewed one is superseded.
    if (!grant || !isLive(grant, now) || grant.token_jti !== claims.jti || !this.matchesRecord(claims, grant, 'introspect')) return INACTIVE;
    // The answer is the record's: the token only named it.
    const { sub, aud, client_id, scope, txn, authorization_details, cnf, act } = recordedClaims(grant);
    const exp = Math.floor(grant.token_exp / 1000);
    return {
      active: true,
      iss: claims.iss,
      sub,
      aud,
      client_id,
      scope,
      token_type: cnf && 'jkt' in cnf ? 'DPoP' : 'Bearer',
      iat: claims.iat,
      nbf: claims.nbf,
      exp,
      jti: grant.token_jti,
      grant: grant.id,
      txn,
      expires_in: Math.max(0, exp - Math.floor(now / 1000)),
      grant_exp: Math.floor(grant.expires_at / 1000),
      rule: grant.rule,
      authorization_details,
      ...(cnf ? { cnf } : {}),
      ...(act ? { act } : {}),
    };
  }

  /**
   * Introspection of a Txn-Token, for a resource server of its trust domain (one of its
   * audiences): active while its grant is live and the record vouches for it; answered from the record.
   */
  private async introspectTxn(token: string, rs: ResourceServer): Promise<IntrospectionResponse> {
    const claims = await unlessInvalid(this.txnVerifier.verify(token));
    if (!claims || !rs.audiences.includes(claims.aud)) return INACTIVE;
    const now = this.deps.clock();
    if (claims.exp * 1000 <= now) return INACTIVE;
    const grant = await this.readableGrant(claims.grant);
    if (!grant || !isLive(grant, now)) return INACTIVE;
    const mismatch = txnRecordMismatch(claims, grant);
    if (mismatch) {
      this.deps.log.warn({ grant: grant.id, jti: claims.jti, op: 'introspect', mismatch }, 'Txn-Token does not match its grant record; ignored');
      return INACTIVE;
    }
    const exp = Math.floor(grant.token_exp / 1000);
    return {
      active: true,
      iss: claims.iss,
      sub: grant.workload,
      aud: grant.audience,
      scope: grant.purpose,
      token_type: TOKEN_TYPE_NOT_APPLICABLE,
      iat: claims.iat,
      exp,
      jti: grant.token_jti,
      grant: grant.id,
      txn: grant.task,
      req_wl: grant.workload,
      tctx: { actions: grant.actions, resources: grant.resources },
      expires_in: Math.max(0, exp - Math.floor(now / 1000)),
      grant_exp: Math.floor(grant.expires_at / 1000),
      rule: grant.rule,
    };
  }

  /**
   * POST /oauth2/revoke (RFC 7009): the token's grant expires now. Callers are a resource server
   * of the token's audience, or the token's holder (with its binding, when it is bound). Unknown,
   * invalid or already dead tokens change nothing and are not an error (§2.2), nor is a verified
   * token whose grant has no record (nothing exists to change). A record that is there but does
   * not decode is: 500, since the grant could not be revoked.
   */
  async revoke(params: unknown, ctx: CallContext = {}): Promise<void> {
    const { store, clock, log } = this.deps;
    const { token } = parse(tokenParamsSchema, params);
    const rs = await this.authenticated(ctx, () => this.revokingClient(params, ctx));
    // A Txn-Token travels the whole call chain: only a resource server of its trust domain revokes it.
    if (headerType(token) === TXN_TOKEN_TYP) return rs ? this.revokeTxn(token, rs) : undefined;
    const claims = await (rs ? unlessInvalid(this.verifier.verify(token)) : this.holderToken(token, ctx, publicClientId(params)));
    if (!claims || (rs && !rs.audiences.includes(claims.aud))) return;
    // A token its record does not vouch for changes nothing (and, as any invalid token, gets 200).
    const recorded = await store.getGrant(claims.grant);
    if (recorded && !this.matchesRecord(claims, recorded, 'revoke')) return;
    const by = rs ? `resource server ${rs.name}` : 'its holder';
    const result = await store.closeGrant(claims.grant, claims.sub, {
      now: clock(),
      status: 'revoked',
      reason: `revoked by ${by} (RFC 7009)`,
      by: rs ? `resource_server:${rs.name}` : 'holder',
    });
    if (result.outcome === 'closed') {
      log.info({ grant: claims.grant, workload: claims.sub, by }, 'grant revoked');
      this.metrics.revoked(rs ? 'resource_server' : 'holder');
    }
    else if (result.outcome === 'unknown') log.info({ grant: claims.grant, workload: claims.sub, by }, 'revoked token has no grant record; nothing changed');
  }

  /** RFC 7009 for a Txn-Token, by a resource server of its trust domain: its grant expires now. */
  private async revokeTxn(token: string, rs: ResourceServer): Promise<void> {
    const { store, clock, log } = this.deps;
    const claims = await unlessInvalid(this.txnVerifier.verify(token));
    if (!claims || !rs.audiences.includes(claims.aud)) return;
    const recorded = await store.getGrant(claims.grant);
    if (!recorded || txnRecordMismatch(claims, recorded) !== undefined) return;
    const by = `resource server ${rs.name}`;
    const result = await store.closeGrant(claims.grant, claims.sub, { now: clock(), status: 'revoked', reason: `revoked by ${by} (RFC 7009)`, by: `resource_server:${rs.name}` });
    if (result.outcome === 'closed') {
      log.info({ grant: claims.grant, workload: claims.sub, by }, 'grant revoked');
      this.metrics.revoked('resource_server');
    }
  }

  /**
   * Operator routes: the calling operator (auth/operators.ts), under the same per-address failure
   * limit as every other credential; 401 invalid_client when the caller is no operator, 403
   * access_denied when its role does not allow `role`. The operations themselves are in operator/.
   */
  async operator(ctx: CallContext, role: OperatorRole): Promise<Operator> {
    const op = await this.authenticated(ctx, () => this.operators.authenticate(ctx));
    requireRole(op, role);
    return op;
  }

  /** Transaction Tokens' settings (config txn_tokens), or undefined when they are not enabled. */
  txnTokens(): Config['txn_tokens'] {
    return this.deps.config.txn_tokens;
  }

  /** Longest task-token TTL this broker issues (config tokens.max_ttl), in ms. */
  maxTtlMs(): number {
    return this.deps.config.tokens.max_ttl;
  }

  /** The `DPoP-Nonce` to send with task route responses, when nonces are configured (RFC 9449 §8). */
  dpopNonce(): string | undefined {
    return this.nonces?.current(this.deps.clock());
  }

  /**
   * A DPoP proof for a POST to `path`, checked per RFC 9449 §4.3 except its jti (useProof). Its
   * `htu` is compared with the issuer URL followed by the route's path, never with the Host
   * header: behind a proxy the issuer is the URL clients use.
   */
  private dpopProof(proof: string, path: string, accessToken?: string): VerifiedProof {
    const { config, clock } = this.deps;
    const now = clock();
    const nonces = this.nonces;
    return verifyDpopProof({
      proof,
      htm: 'POST',
      htu: endpointUrl(config.issuer, path),
      now,
      windowMs: config.dpop.iat_window,
      ...(accessToken !== undefined ? { accessToken } : {}),
      ...(nonces ? { nonce: (n: string) => nonces.accepts(n, now) } : {}),
    });
  }

  /** The DPoP proof sent to renew or end a grant: its `ath` must hash the presented token (present or not). */
  private taskProof(grantId: string, op: 'renew' | 'end', ctx: CallContext): VerifiedProof | undefined {
    if (ctx.dpop === undefined) return undefined;
    if (!isGrantId(grantId)) throw new InvalidRequest('not a grant id');
    return this.dpopProof(ctx.dpop, `/v1/tasks/${grantId}/${op}`, ctx.bearer ?? '');
  }

  /** Records the proof's jti in the workload's slot for as long as the proof is acceptable: a second use is refused. */
  private async useProof(workloadId: string, proof: VerifiedProof, now: number): Promise<void> {
    const first = await this.deps.store.useProofJti(workloadId, proof, { now, until: proof.acceptableUntil });
    if (!first) throw new InvalidDpopProof('this DPoP proof was already used: make a fresh proof (new jti) for every request');
  }

  /**
   * The resource server revoking, or undefined for a token's holder. Client credentials that are
   * present decide: wrong ones are 401 invalid_client, never the holder path. Only a client
   * certificate that is no resource server's, sent without a resource server's client_id, is
   * left to the holder path: a bound token's holder presents its own certificate (and, as a
   * public client, may name itself by the token's client_id).
   */
  private async revokingClient(params: unknown, ctx: CallContext): Promise<ResourceServer | undefined> {
    const client = presentedClient(params, ctx);
    if (!client) return undefined;
    try {
      return (await this.resourceServers.authenticate(client, this.assertionContext(OAUTH_PATHS.revocation))).rs;
    } catch (e) {
      const namesResourceServer = client.method === 'tls_client_auth' && client.clientId !== undefined && this.resourceServers.has(client.clientId);
      if (client.method === 'tls_client_auth' && !namesResourceServer && e instanceof InvalidClient) return undefined;
      throw e;
    }
  }

  /** What checking a client assertion at `path` needs (auth/client-assertion.ts). */
  private assertionContext(path: string): AssertionContext {
    const { config, clock, store } = this.deps;
    const now = clock();
    return {
      issuer: config.issuer,
      endpoint: endpointUrl(config.issuer, path),
      now,
      leewayMs: config.tokens.leeway,
      useOnce: (key, ttlMs) => store.useOnce(key, { now, ttlMs }),
    };
  }

  /** The bearer task token, verified and issued for this grant. */
  private presentedToken(grantId: string, ctx: CallContext): Promise<TaskTokenClaims> {
    return this.tokenFor(grantId, this.bearerFor(grantId, ctx));
  }

  /** The bearer task token sent to act on this grant, unverified. */
  private bearerFor(grantId: string, ctx: CallContext): string {
    if (!isGrantId(grantId)) throw new InvalidRequest('not a grant id');
    if (ctx.bearer === undefined) throw new TokenMissing('present the task token as "Authorization: Bearer <token>"');
    return ctx.bearer;
  }

  /** The token, verified and issued for this grant; `recordedDigest` is the grant record's digest of its latest token. */
  private async tokenFor(grantId: string, token: string, recordedDigest?: string): Promise<TaskTokenClaims> {
    const claims = await this.verifier.verify(token, recordedDigest);
    if (claims.grant !== grantId) throw new InvalidGrant('the token was not issued for this grant');
    return claims;
  }

  /**
   * A token its holder revokes: the token is its only credential, so one that does not verify
   * counts against the caller's address (the answer is still 200), and a bound one needs its
   * certificate (401 invalid_client without it).
   */
  private holderToken(token: string, ctx: CallContext, clientId: string | undefined): Promise<TaskTokenClaims | undefined> {
    return unlessInvalid(
      this.authenticated(ctx, async () => {
        const claims = await this.verifier.verify(token);
        checkBinding(claims, ctx.certificate, (m) => new InvalidClient(m));
        // A public client (auth method none) names itself: the holder's client_id is the token's.
        if (clientId !== undefined && clientId !== claims.client_id) throw new InvalidClient('client_id is not the client of this token');
        return claims;
      }),
    );
  }

  /**
   * Whether the grant's record vouches for the token's intent claims (tokens/record-match.ts).
   * A verified token that it does not is a minting bug or a leaked signing key: logged (the grant
   * and the claim, never the token), and the token is worth nothing.
   */
  private matchesRecord(claims: TaskTokenClaims, grant: Grant, op: string): boolean {
    const mismatch = recordMismatch(claims, grant);
    if (mismatch) this.deps.log.warn({ grant: grant.id, jti: claims.jti, op, mismatch }, 'task token does not match its grant record; ignored');
    return mismatch === undefined;
  }

  /** Renew and end: a token its record does not vouch for is refused with invalid_grant. */
  private checkRecord(claims: TaskTokenClaims, grant: Grant, op: string): void {
    if (!this.matchesRecord(claims, grant, op)) throw new InvalidGrant('the token does not match its grant record');
  }

  /** The grant record for introspection: one that does not decode cannot show the grant live, so null (the store logged it). */
  private readableGrant(grantId: string): Promise<Grant | null> {
    return this.deps.store.getGrant(grantId).catch((e: unknown) => {
      if (e instanceof UnreadableGrant) return null;
      throw e;
    });
  }

  /** The grant record, or what reading it failed with (thrown where the record is needed). */
  private async readGrant(grantId: string): Promise<GrantRead> {
    try {
      return { grant: await this.deps.store.getGrant(grantId) };
    } catch (error) {
      return { error };
    }
  }

  /** The grant read, if it exists for this workload and is live; else invalid_grant (or the read's error). */
  private liveGrant(read: GrantRead, workload: string, now: number): Grant {
    if ('error' in read) throw read.error;
    const { grant } = read;
    if (!grant || grant.workload !== workload) throw new InvalidGrant('unknown grant');
    if (!isLive(grant, now)) throw new InvalidGrant(inactiveReason(grant, now));
    return grant;
  }

  /**
   * Runs an authentication step under the per-address failure limit: an address over it is
   * refused (429) before any verification, and each failure counts against it.
   */
  private async authenticated<T>(ctx: CallContext, step: () => Promise<T>): Promise<T> {
    const settle = this.failures.admit(ctx.clientAddress, this.deps.clock());
    try {
      const result = await step();
      settle(false);
      return result;
    } catch (e) {
      settle(isAuthFailure(e));
      throw e;
    }
  }

  /**
   * Runs the attestor of the evidence's kind. What it verified reaches grants, tokens and audit
   * events, so it must be well-formed Unicode, whichever attestor read it: otherwise the evidence
   * is refused (401), as any other evidence the broker cannot use.
   */
  private async attest(evidence: Evidence | undefined): Promise<Workload> {
    try {
      return await this.attestOnce(evidence);
    } catch (e) {
      if (e instanceof AttestationFailed) this.metrics.denied('attestation', undefined);
      throw e;
    }
  }

  private async attestOnce(evidence: Evidence | undefined): Promise<Workload> {
    if (!evidence) {
      throw new AttestationFailed('no evidence: send attestation {kind, token} or present a client certificate');
    }
    const attestor = this.deps.attestors[evidence.kind];
    if (!attestor) throw new AttestationFailed(`attestation kind "${evidence.kind}" is not enabled on this broker`);
    const workload = await attestor.attest(evidence).catch((e: unknown) => {
      // encodeURIComponent throws URIError on a lone surrogate: a claim mapped into a URI.
      if (e instanceof URIError) throw new AttestationFailed(NOT_WELL_FORMED_EVIDENCE('id'), { detail: e.message });
      throw e;
    });
    const { id, issuer, attributes, confirmation } = workload;
    const bad = illFormedPath({ id, issuer, attributes, ...(confirmation ? { confirmation } : {}) });
    if (bad !== undefined) throw new AttestationFailed(NOT_WELL_FORMED_EVIDENCE(bad), { detail: `${evidence.kind} evidence` });
    return workload;
  }

  /** The verified actor of a delegated task start, acting for `subject` (oauth/delegation.ts). */
  private async actor(token: ActorToken, subject: string, proof: VerifiedProof | undefined, ctx: CallContext): Promise<Actor> {
    const { store, clock } = this.deps;
    const actor = await verifyActor(token, {
      attest: (e) => this.attest(e),
      verifyTaskToken: (t) => this.verifier.verify(t),
      getGrant: (id) => store.getGrant(id),
      now: clock(),
      ...(proof ? { proofJkt: proof.jkt } : {}),
      ...(ctx.certificate ? { certificate: ctx.certificate } : {}),
    });
    checkChain(subject, actor.chain);
    return actor;
  }

  private mint(workloadId: string, grantId: string, intent: GrantedIntent, now: number, expiresAt: number, cnf: Confirmation | undefined, act?: ActorClaim): Promise<Minted> {
    return this.sign(workloadId, grantId, intent, newTokenId(), now, expiresAt, cnf, act);
  }

  /** Signs a Txn-Token for the grant; `rctx` names the requester's address and its evidence kind. */
  private async mintTxn(workload: Workload, grantId: string, intent: GrantedIntent, now: number, expiresAt: number, ctx: CallContext): Promise<Minted> {
    const { config, keyring } = this.deps;
    const trustDomain = config.txn_tokens?.trust_domain;
    if (trustDomain === undefined) throw new InvalidRequest('Transaction Tokens are not enabled on this broker');
    const key = keyring.signingKey();
    const rctx = { ...(ctx.clientAddress !== undefined ? { req_ip: ctx.clientAddress } : {}), authn: workload.kind };
    const claims = txnTokenClaims({ issuer: config.issuer, trustDomain, workloadId: workload.id, grantId, jti: newTokenId(), intent, issuedAt: now, expiresAt, rctx });
    const token = await signTxnToken(claims, key);
    if (token.length > MAX_TASK_TOKEN_BYTES) {
      throw new InvalidRequest(`the Txn-Token for this intent would be ${token.length} bytes, over the ${MAX_TASK_TOKEN_BYTES}-byte limit: name fewer or shorter resources, actions or purpose`);
    }
    return { token, claims, kid: key.kid };
  }

  /** Signs a task token with the current key: a new one (mint), or the grant's latest again (a retried renewal). */
  private async sign(workloadId: string, grantId: string, intent: GrantedIntent, jti: string, now: number, expiresAt: number, cnf: Confirmation | undefined, act?: ActorClaim): Promise<Minted> {
    const key = this.deps.keyring.signingKey();
    const claims = taskTokenClaims({
      issuer: this.deps.config.issuer,
      workloadId,
      grantId,
      jti,
      intent,
      issuedAt: now,
      expiresAt,
      ...(cnf ? { cnf } : {}),
      ...(act ? { act } : {}),
    });
    const token = await signTaskTokenOffThread(claims, key);
    // Before anything is recorded: a token one of its readers would refuse must never exist.
    if (token.length > MAX_TASK_TOKEN_BYTES) {
      throw new InvalidRequest(
        `the task token for this intent would be ${token.length} bytes, over the ${MAX_TASK_TOKEN_BYTES}-byte limit every reader of task tokens accepts: name fewer or shorter resources, actions or purpose`,
      );
    }
    return { token, claims, kid: key.kid };
  }

  /** A policy refusal, audited within the denial budget (a failed write never turns it into success). */
  private async auditDenial(workload: Workload, audience: string, actions: string[], decision: Extract<Decision, { allowed: false }>, ctx: CallContext, grant?: string, actor?: string) {
    this.metrics.denied(policyDenialReason(decision), decision.closestRule);
    await this.denials.record(
      {
        type: 'grant.denied',
        at: this.deps.clock(),
        workload: workload.id,
        ...(grant ? { grant } : {}),
        reason: decision.reason,
        ...(decision.closestRule ? { rule: decision.closestRule } : {}),
        audience,
        actions,
        ...(actor !== undefined ? { actor } : {}),
      },
      // No rule names this workload: the shared capped partitions, not a stream per attested id.
      this.denialSource(ctx, decision.closestRule === undefined),
    );
  }

  /** The caller's address as the budget counts it (an IPv6 client by its prefix, as the failure limit does). */
  private denialSource(ctx: CallContext, unmatched: boolean): DenialSource {
    const address = ctx.clientAddress;
    return address === undefined ? { unmatched } : { unmatched, source: addressKey(address, this.deps.config.limits.ipv6_prefix) };
  }
}

type GrantRead = { grant: Grant | null } | { error: unknown };

interface Minted {
  token: string;
  /** What the grant records and the response reports: a task token's or a Txn-Token's claims. */
  claims: { jti: string; iat: number; exp: number; scope: string; cnf?: Confirmation };
  /** The key that signed it (recorded in the grant). */
  kid: string;
}

function taskResponse(minted: Minted, grant: Grant, intent: GrantedIntent, rule: string): TaskStartResponse {
  const { claims } = minted;
  return {
    access_token: minted.token,
    token_type: claims.cnf && 'jkt' in claims.cnf ? 'DPoP' : 'Bearer',
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    grant: grant.id,
    workload: grant.workload,
    expires_in: claims.exp - claims.iat,
    expires_at: new Date(claims.exp * 1000).toISOString(),
    grant_expires_at: new Date(grant.expires_at).toISOString(),
    scope: claims.scope,
    intent,
    rule,
  };
}

/**
 * A DPoP-bound token is used with a proof by its key; a proof with a token that is not DPoP-bound
 * is refused too: the binding of a grant never changes.
 */
function checkDpopBinding(claims: TaskTokenClaims, proof: VerifiedProof | undefined): void {
  const jkt = claims.cnf && 'jkt' in claims.cnf ? claims.cnf.jkt : undefined;
  if (jkt === undefined) throw new InvalidDpopProof('this grant is not bound to a DPoP key: send no DPoP proof with its token');
  if (!proof) throw new InvalidDpopProof('this grant is bound to a DPoP key: send a DPoP proof by that key with its token');
  if (proof.jkt !== jkt) throw new InvalidDpopProof('the DPoP proof is signed by another key than the one this grant is bound to');
}

/** A configured rate (`rate` per `per`, bursts of `burst`) as a token bucket. */
const rateLimit = (c: { rate: number; per: number; burst: number }): RateLimit => ({ burst: c.burst, intervalMs: c.per / c.rate });

function evidenceTooShort(workload: Workload, now: number): AttestationFailed {
  return new AttestationFailed(
    `the presented evidence expires in ${Math.max(0, Math.floor((workload.evidenceExpiresAt - now) / 1000))}s; present evidence valid for at least 30s`,
  );
}

const NOT_WELL_FORMED_EVIDENCE = (field: string) => `the evidence maps to a workload ${field} that is not well-formed Unicode (a lone UTF-16 surrogate)`;

/** What end answers for a grant it found closed: never `expired` for one still live. */
function endedStatus(grant: Grant, now: number): TaskEndResponse['status'] {
  if (grant.status !== 'active') return grant.status;
  if (grant.expires_at <= now) return 'expired';
  throw new Error(`grant ${grant.id} is live, yet the store did not end it`);
}

function inactiveReason(grant: Grant, now: number): string {
  if (grant.status === 'revoked') return 'the grant has been revoked';
  if (grant.status === 'ended') return 'the grant has ended';
  return grant.expires_at <= now ? 'the grant has expired' : 'the grant is not active';
}

/** Failures that count against the caller's address (a missing token is no attempt at all). */
const isAuthFailure = (e: unknown) => e instanceof InvalidClient || (e instanceof InvalidToken && !(e instanceof TokenMissing));

/** A token that does not verify reads as none (introspection and revocation answer as for an unknown token). */
async function unlessInvalid<T>(claims: Promise<T>): Promise<T | undefined> {
  try {
    return await claims;
  } catch (e) {
    if (e instanceof InvalidToken) return undefined;
    throw e;
  }
}

/** The body through its zod schema; anything else is a 400 naming the first problems. */
function parse<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: readonly Issue[] } } }, body: unknown): T {
  const result = schema.safeParse(body);
  if (!result.success) throw new InvalidRequest(describeZodError(result.error));
  return result.data;
}

/** One sentence naming the first problems by path, e.g. `intent.actions: expected array`. */
export function describeZodError(error: { issues: readonly (Issue & { code?: string; keys?: readonly string[] })[] }): string {
  // Unrecognized keys are the caller's text (a token sent as a key would reach the log): named by
  // their first characters only, at most five. Every problem is bounded.
  const issues = error.issues.slice(0, 3).map((i) => (i.code === 'unrecognized_keys' && i.keys ? { ...i, message: unrecognized(i.keys) } : i));
  const parts = issuesToProblems(issues, 'body').map((p) => clip(p, 200));
  return `invalid request: ${parts.join('; ')}${error.issues.length > 3 ? ` (and ${error.issues.length - 3} more)` : ''}`;
}

function unrecognized(keys: readonly string[]): string {
  const named = keys.slice(0, 5).map((k) => JSON.stringify(clip(k, 24)));
  return `unrecognized ${keys.length === 1 ? 'key' : 'keys'} ${named.join(', ')}${keys.length > 5 ? ` and ${keys.length - 5} more` : ''}`;
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

