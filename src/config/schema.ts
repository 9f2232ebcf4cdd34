import { z } from 'zod';
import { idSpaceCollisions, type IdSpace } from '../attestation/id-spaces.js';
import { oidcConfigSchema, oidcIdSpaces } from '../attestation/oidc/index.js';
import { trustDomainProblem } from '../attestation/spiffe-id.js';
import { addressOrCidr, distinguishedName, spiffeWorkloadId, trustDomainName, x509ConfigSchema } from '../attestation/x509.js';
import { policySchema, TTL_CAP_MS, TTL_FLOOR_MS } from '../policy/rules.js';
import { MAX_TASK_TOKEN_BYTES, MIN_BODY_BYTES } from '../protocol/limits.js';
import { MIN_PUBLICATION_SECRET_LENGTH } from '../grants/key-publication.js';
import { durationField, formatDuration } from '../util/duration.js';
import { parseSecureUrl } from '../util/url.js';
import { SIGNING_ALGS } from '../tokens/algorithms.js';
import { CLIENT_ASSERTION_ALGS } from '../auth/client-assertion-algs.js';

export const MAX_LEEWAY_MS = 30_000;

/**
 * RFC 8414 §2: the issuer is an https URL with no query or fragment (and, here, no credentials
 * or trailing slash). Plain http only on loopback, for dev and tests.
 */
export function issuerProblem(value: string): string | undefined {
  const checked = parseSecureUrl(value);
  if (!checked.ok) return checked.reason === 'not_absolute' ? 'must be an absolute URL' : 'must be an https URL (http only on localhost)';
  const { url } = checked;
  if (url.username || url.password) return 'must not contain credentials';
  if (url.search || value.includes('?')) return 'must not have a query';
  if (url.hash || value.includes('#')) return 'must not have a fragment';
  if (value.endsWith('/')) return 'must not end with "/"';
  return undefined;
}

/** host:port of a Redis node or sentinel (an IPv6 address in brackets). */
const redisAddress = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):\d{1,5}$/, 'must be host:port (an IPv6 address in brackets)')
  .refine((a) => {
    const port = Number(a.slice(a.lastIndexOf(':') + 1));
    return port >= 1 && port <= 65535;
  }, 'must have a port from 1 to 65535');

/** A file the broker reads at start (a password, a CA bundle): its path. */
const filePath = z.string().min(1, 'must be a file path').max(4096);

/**
 * Where the grants live: one Redis server (`url`), a Sentinel group (`sentinel`) or a Redis
 * Cluster (`cluster`), exactly one of them. Passwords come from `password_file` or the
 * environment (JIT_REDIS_PASSWORD, JIT_REDIS_SENTINEL_PASSWORD; grants/redis-connection.ts), or
 * for one server from its URL; they are never logged.
 */
const redisStoreSchema = z
  .object({
    kind: z.literal('redis'),
    /** One server: redis://[user[:password]@]host:port[/db], rediss:// for TLS. */
    url: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
    /** A Sentinel group: the client asks the sentinels for the primary and follows a failover. */
    sentinel: z
      .object({
        nodes: z.array(redisAddress).min(1, 'must name at least one sentinel').max(32),
        master_name: z.string().min(1).max(256),
        /** The sentinels' own ACL user and password, when they require one. */
        username: z.string().min(1).max(256).optional(),
        password_file: filePath.optional(),
        /** TLS to the sentinels (store.tls's CA and server name if given, else Node's CAs). */
        tls: z.boolean().default(false),
      })
      .strict()
      .optional(),
    /** A Redis Cluster: any of its nodes (the client learns the rest from CLUSTER SLOTS). */
    cluster: z
      .object({
        nodes: z.array(redisAddress).min(1, 'must name at least one node').max(64),
        /** Addresses the nodes announce → addresses this broker reaches them at (NAT, port forwarding). */
        nat_map: z.record(redisAddress, redisAddress).optional(),
      })
      .strict()
      .optional(),
    /** The data nodes' ACL user (deploy/redis/users.acl names it jit-broker). */
    username: z.string().min(1).max(256).optional(),
    /** A file holding the data nodes' password (or env JIT_REDIS_PASSWORD). */
    password_file: filePath.optional(),
    /** TLS to the data nodes (with sentinel or cluster; a rediss:// URL turns it on for one server, this adds the CA). */
    tls: z
      .object({
        /** PEM bundle of the CAs that issue the servers' certificates; default: Node's CAs. */
        ca_file: filePath.optional(),
        /** The name the servers' certificates carry, when it is not the host connected to. */
        server_name: z.string().min(1).max(253).optional(),
      })
      .strict()
      .optional(),
    key_prefix: z.string().max(64).default('jit:'),
    command_timeout: durationField('1s'),
    /**
     * Write each grant to the global newest-first index (operator queries without a workload,
     * the kill switch by anything but a workload id). Default true; false only to measure what
     * it costs (bench/): such brokers' grants are missing from those queries and revocations.
     */
    global_index: z.boolean().default(true),
    /**
     * WAIT after every grant write (start, renewal, end, revocation) until `min_replicas`
     * replicas of its primary have it, at most `timeout`; fewer: 503 (docs/failover.md). Absent:
     * no WAIT (a standalone Redis without replicas).
     */
    replication: z
      .object({
        min_replicas: z.number().int().min(1).max(16),
        timeout: durationField('250ms'),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.replication && s.replication.timeout >= s.command_timeout)
      ctx.addIssue({ code: 'custom', path: ['replication', 'timeout'], message: `must be shorter than store.command_timeout (${formatDuration(s.command_timeout)}): WAIT blocks within a command's time` });
    const given = (['url', 'sentinel', 'cluster'] as const).filter((k) => s[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: given.length === 0 ? [] : [given[1]!],
        message:
          given.length === 0
            ? 'needs exactly one of url (one server), sentinel (nodes and master_name) or cluster (nodes)'
            : `give exactly one of url, sentinel and cluster (found ${given.join(' and ')})`,
      });
      return;
    }
    if (s.url === undefined) return;
    const url = URL.canParse(s.url) ? new URL(s.url) : undefined;
    if (!url) ctx.addIssue({ code: 'custom', path: ['url'], message: 'is not a valid URL' });
    else {
      if (url.username && s.username !== undefined) ctx.addIssue({ code: 'custom', path: ['username'], message: 'is given in store.url too: give it once' });
      if (url.password && s.password_file !== undefined) ctx.addIssue({ code: 'custom', path: ['password_file'], message: 'store.url carries a password too: give it once' });
      if (s.tls !== undefined && url.protocol !== 'rediss:') ctx.addIssue({ code: 'custom', path: ['tls'], message: 'needs a rediss:// url (TLS)' });
    }
  });

const storeSchema = z.discriminatedUnion('kind', [redisStoreSchema, z.object({ kind: z.literal('memory') }).strict()]);

/** A key publication secret: long enough to be a key. Its problems never repeat its value. */
const publicationSecret = z
  .string({ error: 'must be a string' })
  .min(MIN_PUBLICATION_SECRET_LENGTH, `must be at least ${MIN_PUBLICATION_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)`)
  .max(1024, 'must be at most 1024 characters');

/** A rate: `rate` events per `per`, with bursts of up to `burst`. */
const rateField = (d: { rate: number; per: string; burst: number }) =>
  z
    .object({
      rate: z.number().positive().max(1_000_000).default(d.rate),
      per: durationField(d.per),
      burst: z.number().int().min(1).max(1_000_000).default(d.burst),
    })
    .strict()
    .prefault({});

/** A public JWK a resource server signs its client assertions with: asymmetric, never a private key. */
const clientJwk = z
  .object({ kty: z.enum(['EC', 'RSA', 'OKP']), kid: z.string().min(1).max(256).optional(), alg: z.enum(CLIENT_ASSERTION_ALGS).optional() })
  .loose()
  .refine((k) => !('d' in k) && !('p' in k) && !('q' in k), 'must be a public key (it has private members: never put a private key in the config)');

/** A JWK set of client keys, inline (`jwks`) or in a file (`jwks_file`, read at start). */
export const clientJwksSchema = z.object({ keys: z.array(clientJwk).min(1).max(16) }).loose();

/**
 * A resource server that may introspect (RFC 7662) and revoke (RFC 7009) tokens of its
 * audiences. Its `name` is its OAuth client_id. It authenticates with any of what is configured:
 * - `credential_sha256`: the SHA-256 (hex) of its credential (the credential itself never sits
 *   in the config file), sent as client_secret_basic, client_secret_post or a bearer credential;
 * - `workload`: a client certificate whose attested workload id it is (tls_client_auth);
 * - `jwks` or `jwks_file`: the public keys of its private_key_jwt client assertions.
 */
const resourceServerSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, . _ -'),
    audiences: z.array(z.string().min(1).max(512)).min(1),
    workload: z.string().min(1).max(2048).optional(),
    credential_sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'must be the SHA-256 of the credential, 64 lowercase hex digits (sha256sum)')
      .optional(),
    jwks: clientJwksSchema.optional(),
    jwks_file: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((rs, ctx) => {
    if (rs.workload === undefined && rs.credential_sha256 === undefined && rs.jwks === undefined && rs.jwks_file === undefined)
      ctx.addIssue({ code: 'custom', message: 'needs a way to authenticate: credential_sha256 (client secret or bearer), workload (mTLS), or jwks / jwks_file (private_key_jwt)' });
    if (rs.jwks !== undefined && rs.jwks_file !== undefined) ctx.addIssue({ code: 'custom', path: ['jwks_file'], message: 'jwks and jwks_file are exclusive' });
  });

/**
 * An operator of the broker (grant queries, the kill switch, keys): `auditor` reads, `admin` also
 * revokes and rotates. Authenticated by exactly one of: a bearer credential whose SHA-256 (hex) is
 * `credential_sha256`; a client certificate whose SPIFFE ID is `spiffe_id`; or a client
 * certificate without a URI SAN whose subject is `subject`, validated by the bundle of
 * `trust_domain` (tls.client_ca_bundles). A list of its own: workloads and resource servers are
 * never operators by accident.
 */
export const operatorSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._@-]{1,64}$/, 'must be 1-64 letters, digits, . _ @ -'),
    role: z.enum(['auditor', 'admin']),
    credential_sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'must be the SHA-256 of the credential, 64 lowercase hex digits (sha256sum)')
      .optional(),
    spiffe_id: spiffeWorkloadId.optional(),
    subject: distinguishedName.optional(),
    trust_domain: trustDomainName.optional(),
  })
  .strict()
  .superRefine((op, ctx) => {
    const ways = [op.credential_sha256 !== undefined, op.spiffe_id !== undefined, op.subject !== undefined].filter(Boolean).length;
    if (ways !== 1) ctx.addIssue({ code: 'custom', message: 'needs exactly one of credential_sha256 (bearer), spiffe_id (mTLS) or subject with trust_domain (mTLS)' });
    if ((op.subject === undefined) !== (op.trust_domain === undefined))
      ctx.addIssue({ code: 'custom', path: [op.subject === undefined ? 'trust_domain' : 'subject'], message: 'subject and trust_domain go together' });
  });

export type OperatorConfig = z.output<typeof operatorSchema>;

export const configSchema = z
  .object({
    /** Our `iss`: the URL workloads and verifiers know the broker by. */
    issuer: z.string().superRefine((value, ctx) => {
      const problem = issuerProblem(value);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    listen: z
      .object({ host: z.string().default('0.0.0.0'), port: z.number().int().min(0).max(65535).default(8080) })
      .strict()
      .prefault({}),
    store: storeSchema,
    tokens: z
      .object({
        /** ES256 by default; RS256 for verifiers that only know it (RFC 9068 §2.1: every server MUST support it). */
        algorithm: z.enum(SIGNING_ALGS).default('ES256'),
        default_ttl: durationField('5m'),
        max_ttl: durationField('15m'),
        leeway: durationField('30s'),
        key_rotation: durationField('6h'),
        /** How long a retired key stays in the JWKS. */
        key_overlap: durationField('20m'),
        /**
         * Shared by every instance, never stored in Redis: authenticates the signing keys the
         * instances publish there (HMAC), so Redis write access alone adds no trusted key.
         * Required with a redis store; env JIT_KEY_PUBLICATION_SECRET.
         */
        key_publication_secret: publicationSecret.optional(),
        /** A second secret accepted (never used to sign) while rotating; env JIT_KEY_PUBLICATION_SECRET_ACCEPTED. */
        key_publication_secret_accepted: publicationSecret.optional(),
      })
      .strict()
      .prefault({}),
    /** DPoP proofs (RFC 9449) on the task routes and the token endpoint. */
    dpop: z
      .object({
        /** How far a proof's `iat` may be from the broker's time, either way; its jti is remembered as long. */
        iat_window: durationField('60s').refine((ms) => ms >= 1_000 && ms <= 300_000, 'must be between 1s and 5m'),
        /**
         * When set, proofs must carry a nonce the broker issued (`DPoP-Nonce`, RFC 9449 §8): an
         * HMAC of a time window under this secret, which every instance must share; env
         * JIT__DPOP__NONCE_SECRET.
         */
        nonce_secret: publicationSecret.optional(),
        /** How often the nonce changes; a nonce is accepted for one to two of these. */
        nonce_rotation: durationField('5m').refine((ms) => ms >= 10_000, 'must be >= 10s'),
      })
      .strict()
      .prefault({}),
    /**
     * Transaction Tokens (draft-ietf-oauth-transaction-tokens) from the token endpoint. Off unless
     * set: `trust_domain` is every Txn-Token's `aud`, the only audience a Txn-Token request may
     * name; `ttl` its lifetime (capped by tokens.max_ttl).
     */
    txn_tokens: z
      .object({
        trust_domain: z.string().min(1).max(256).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces (a URI or name of the trust domain)'),
        ttl: durationField('1m').refine((ms) => ms >= TTL_FLOOR_MS && ms <= 5 * 60_000, 'must be between 30s and 5m (Txn-Tokens live minutes or less)'),
      })
      .strict()
      .optional(),
    grants: z
      .object({
        max_active_per_workload: z.number().int().min(1).max(100_000).default(50),
        default_lifetime: durationField('1h'),
        max_lifetime: durationField('12h'),
        audit_retention: durationField('7d'),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        /** At least MIN_BODY_BYTES: an introspection or revocation form carries a task token of up to MAX_TASK_TOKEN_BYTES. */
        max_body_bytes: z
          .number()
          .int()
          .min(MIN_BODY_BYTES, `must be >= ${MIN_BODY_BYTES}, so a form carries any task token (up to ${MAX_TASK_TOKEN_BYTES} bytes) to introspection and revocation`)
          .max(1_048_576)
          .default(65_536),
        /** A request (headers and body) must arrive within this; slower ones get 408 and are closed. */
        request_timeout: durationField('10s'),
        /**
         * Proxies in front of the broker (addresses or CIDR blocks): a request from one counts
         * failed authentications against the address it appended to X-Forwarded-For.
         */
        trusted_proxies: z.array(addressOrCidr).default([]),
      })
      .strict()
      .prefault({}),
    /**
     * HTTPS with client certificates requested (not required: platform-token callers need none).
     * Without cert/key the broker speaks plain HTTP and client certificates can only arrive
     * from a trusted proxy (attestation.x509.forwarded).
     */
    tls: z
      .object({
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        /** trust domain → CA bundle file (PEM, or a SPIFFE bundle JWK set). */
        client_ca_bundles: z
          .record(z.string(), z.string().min(1))
          .default({})
          .superRefine((bundles, ctx) => {
            // Checked here rather than as the record's key schema, whose issues lose their message.
            for (const td of Object.keys(bundles)) {
              const problem = trustDomainProblem(td);
              if (problem) ctx.addIssue({ code: 'custom', path: [td], message: `not a trust domain name: ${problem}` });
            }
          }),
        /** How often the files are checked for changes (rotated bundles and server certificates). */
        reload_interval: durationField('5s'),
      })
      .strict()
      .optional(),
    attestation: z.object({ oidc: oidcConfigSchema.optional(), x509: x509ConfigSchema.optional() }).strict().prefault({}),
    limits: z
      .object({
        /** Per workload, in the store (shared by every instance): issuance and renewal each take one. */
        issuance: rateField({ rate: 100, per: '1s', burst: 200 }),
        /** Per source address, per instance: evidence, task tokens or client credentials that fail. */
        failed_attestations: rateField({ rate: 10, per: '1m', burst: 20 }),
        /** Source addresses the failure limit remembers at most (least recently failed forgotten). */
        tracked_addresses: z.number().int().min(100).max(10_000_000).default(100_000),
        /** IPv6 clients count per prefix of this length (a host usually holds a /64; pods may share one). */
        ipv6_prefix: z.number().int().min(32).max(128).default(64),
        /**
         * Denials written to the audit log one by one, per source address and per workload, per
         * instance; past either, one summary event per minute carries the count.
         */
        denial_audit: z
          .object({
            per_address: rateField({ rate: 60, per: '1m', burst: 100 }),
            per_workload: rateField({ rate: 60, per: '1m', burst: 100 }),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    /** Who may call /oauth2/introspect and /oauth2/revoke, and for which audiences. */
    resource_servers: z.array(resourceServerSchema).default([]),
    /** Who may query grants, revoke them and manage keys (operatorSchema). */
    operators: z.array(operatorSchema).max(1000).default([]),
    policies: policySchema,
    log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).strict().prefault({}),
    /** GET /metrics: on the main listener, or (with `listen`) on a plain-HTTP listener of its own and not on the main one. */
    metrics: z
      .object({
        listen: z
          .object({ host: z.string().min(1).default('0.0.0.0'), port: z.number().int().min(0).max(65535) })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const t = cfg.tokens;
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const m = cfg.metrics.listen;
    if (m && m.port !== 0 && m.port === cfg.listen.port && (m.host === cfg.listen.host || [m.host, cfg.listen.host].some((h) => h === '0.0.0.0' || h === '::')))
      issue(['metrics', 'listen', 'port'], `must differ from listen.port (${cfg.listen.port}): the metrics listener is a server of its own`);
    if (t.max_ttl > TTL_CAP_MS) issue(['tokens', 'max_ttl'], `must be <= ${formatDuration(TTL_CAP_MS)}`);
    if (t.max_ttl < TTL_FLOOR_MS) issue(['tokens', 'max_ttl'], `must be >= ${formatDuration(TTL_FLOOR_MS)}`);
    if (t.default_ttl < TTL_FLOOR_MS) issue(['tokens', 'default_ttl'], `must be >= ${formatDuration(TTL_FLOOR_MS)}`);
    if (t.default_ttl > t.max_ttl) issue(['tokens', 'default_ttl'], `must be <= tokens.max_ttl (${formatDuration(t.max_ttl)})`);
    if (t.leeway > MAX_LEEWAY_MS) issue(['tokens', 'leeway'], `must be <= ${formatDuration(MAX_LEEWAY_MS)}`);
    if (t.key_overlap < t.max_ttl + t.leeway)
      issue(['tokens', 'key_overlap'], `must be >= tokens.max_ttl + tokens.leeway (${formatDuration(t.max_ttl + t.leeway)}) so no live token loses its key`);
    if (t.key_rotation < 60_000) issue(['tokens', 'key_rotation'], 'must be >= 1m');
    if (cfg.store.kind === 'redis' && t.key_publication_secret === undefined)
      issue(
        ['tokens', 'key_publication_secret'],
        'is required with a redis store: a secret shared by every broker instance, kept out of Redis, that authenticates the signing keys they publish (set it here or in JIT_KEY_PUBLICATION_SECRET; e.g. openssl rand -hex 32)',
      );
    if (t.key_publication_secret_accepted !== undefined) {
      if (t.key_publication_secret === undefined) issue(['tokens', 'key_publication_secret_accepted'], 'needs tokens.key_publication_secret');
      else if (t.key_publication_secret_accepted === t.key_publication_secret)
        issue(['tokens', 'key_publication_secret_accepted'], 'must differ from tokens.key_publication_secret');
    }
    if (cfg.http.request_timeout < 1000 || cfg.http.request_timeout > 300_000) issue(['http', 'request_timeout'], 'must be between 1s and 5m');
    if (cfg.tls) {
      const tls = cfg.tls;
      if ((tls.cert === undefined) !== (tls.key === undefined)) issue(['tls', tls.cert === undefined ? 'cert' : 'key'], 'tls.cert and tls.key go together');
      if (tls.reload_interval < 100 || tls.reload_interval > 3_600_000) issue(['tls', 'reload_interval'], 'must be between 100ms and 1h');
    }
    const bundles = Object.keys(cfg.tls?.client_ca_bundles ?? {});
    if (cfg.attestation.x509) {
      if (bundles.length === 0) issue(['attestation', 'x509'], 'needs tls.client_ca_bundles (the CAs that validate client certificates)');
      cfg.attestation.x509.subjects.forEach((s, i) => {
        if (!bundles.includes(s.trust_domain))
          issue(['attestation', 'x509', 'subjects', i, 'trust_domain'], `has no bundle in tls.client_ca_bundles`);
      });
    }
    // One workload id, one attestation source (attestation/id-spaces.ts): the OIDC schema keeps its
    // issuers apart; this keeps them apart from the X.509 trust domains (spiffe://<td>/).
    const tds: IdSpace[] = bundles.map((td) => ({ path: ['tls', 'client_ca_bundles', td], source: `X.509 trust domain ${td}`, prefix: `spiffe://${td}/` }));
    const issuers = oidcIdSpaces(cfg.attestation.oidc?.issuers ?? []).map((s) => ({ ...s, path: ['attestation', 'oidc', ...s.path] }));
    for (const i of idSpaceCollisions([...tds, ...issuers], (a, b) => tds.includes(a) !== tds.includes(b))) issue(i.path, i.message);
    const seen = new Map<string, number>();
    cfg.resource_servers.forEach((rs, i) => {
      const keys = [`name:${rs.name}`, rs.workload && `workload:${rs.workload}`, rs.credential_sha256 && `credential:${rs.credential_sha256}`];
      const repeats = repeated(seen, keys, i, 'resource_servers');
      if (repeats) issue(['resource_servers', i], repeats);
      if (rs.workload !== undefined && bundles.length === 0) issue(['resource_servers', i, 'workload'], 'needs tls.client_ca_bundles (mTLS client authentication)');
    });
    // Operators: unique names and identities, none shared with a resource server, and mTLS ones
    // need the bundle that validates their certificate.
    const rsCredentials = new Set(cfg.resource_servers.map((rs) => rs.credential_sha256).filter(Boolean));
    const rsWorkloads = new Set(cfg.resource_servers.map((rs) => rs.workload).filter(Boolean));
    const seenOp = new Map<string, number>();
    cfg.operators.forEach((op, i) => {
      const subjectKey = op.subject === undefined ? undefined : `subject:${op.trust_domain}\n${op.subject}`;
      const keys = [`name:${op.name}`, op.credential_sha256 && `credential:${op.credential_sha256}`, op.spiffe_id && `spiffe_id:${op.spiffe_id}`, subjectKey];
      const repeats = repeated(seenOp, keys, i, 'operators');
      if (repeats) issue(['operators', i], repeats);
      if (op.credential_sha256 !== undefined && rsCredentials.has(op.credential_sha256))
        issue(['operators', i, 'credential_sha256'], 'is also a resource server credential: an operator needs a credential of its own (jit-broker credential new)');
      if (op.spiffe_id !== undefined && rsWorkloads.has(op.spiffe_id))
        issue(['operators', i, 'spiffe_id'], 'is also a resource server workload: an operator needs an identity of its own');
      const td = op.trust_domain ?? (op.spiffe_id !== undefined ? /^spiffe:\/\/([^/]+)/.exec(op.spiffe_id)?.[1] : undefined);
      if (td !== undefined && !bundles.includes(td))
        issue(['operators', i, op.spiffe_id !== undefined ? 'spiffe_id' : 'trust_domain'], `needs a bundle for trust domain ${td} in tls.client_ca_bundles (mTLS client authentication)`);
    });
    const g = cfg.grants;
    if (g.default_lifetime < TTL_FLOOR_MS) issue(['grants', 'default_lifetime'], 'must be >= 30s');
    if (g.default_lifetime > g.max_lifetime) issue(['grants', 'default_lifetime'], 'must be <= grants.max_lifetime');
    cfg.policies.forEach((rule, i) => {
      if (rule.max_ttl !== undefined && rule.max_ttl > t.max_ttl)
        issue(['policies', i, 'max_ttl'], `must be <= ${formatDuration(t.max_ttl)} (tokens.max_ttl)`);
      if (rule.max_lifetime !== undefined && rule.max_lifetime > g.max_lifetime)
        issue(['policies', i, 'max_lifetime'], `must be <= ${formatDuration(g.max_lifetime)} (grants.max_lifetime)`);
    });
  });

/**
 * What entry `i` of a list repeats of earlier entries (`kind:value` keys, remembered in `seen`),
 * as one problem: "repeats the name and credential of resource_servers[0]".
 */
function repeated(seen: Map<string, number>, keys: (string | undefined | false)[], i: number, list: string): string | undefined {
  const byFirst = new Map<number, string[]>();
  for (const key of keys) {
    if (!key) continue;
    const first = seen.get(key);
    if (first === undefined) seen.set(key, i);
    else byFirst.set(first, [...(byFirst.get(first) ?? []), key.split(':')[0]!]);
  }
  if (byFirst.size === 0) return undefined;
  const parts = [...byFirst].map(([first, kinds]) => `the ${kinds.join(' and ')} of ${list}[${first}]`);
  return `repeats ${parts.join(', and ')}`;
}

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
