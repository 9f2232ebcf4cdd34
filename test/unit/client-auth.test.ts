/**
 * Reading and checking a request's client authentication (RFC 6749 §2.3): the Basic header's form-urlencoded
 * parts, one method per request, and the assertion type of private_key_jwt.
 */
import { createLocalJWKSet, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { verifyClientAssertion, type AssertionCheck } from '../../src/auth/client-assertion.js';
import { presentedClient } from '../../src/auth/client-auth.js';
import { ResourceServers } from '../../src/auth/resource-servers.js';
import { ConfigError, InvalidClient, InvalidRequest } from '../../src/errors.js';
import { basicOf } from '../../src/http/call-context.js';

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

describe('basicOf', () => {
  it('decodes the form-urlencoded client id and secret (RFC 6749 §2.3.1)', () => {
    expect(basicOf(basic('rs%3Adb', 'p+w%25'))).toEqual({ clientId: 'rs:db', secret: 'p w%' });
    expect(basicOf('Bearer abc')).toBeUndefined();
    expect(basicOf(undefined)).toBeUndefined();
  });

  it('refuses a malformed Basic header as a failed client authentication with a Basic challenge', () => {
    for (const header of ['Basic', 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`, basic('%zz', 'x')]) {
      let err: unknown;
      try {
        basicOf(header);
      } catch (e) {
        err = e;
      }
      expect(err, header).toBeInstanceOf(InvalidClient);
      expect((err as InvalidClient).challenge).toBe('Basic');
    }
  });
});

describe('presentedClient', () => {
  it('reads each method, and a client certificate alone as tls_client_auth', () => {
    expect(presentedClient({ token: 't' }, { basic: { clientId: 'rs', secret: 's' } })).toEqual({ method: 'client_secret_basic', clientId: 'rs', secret: 's' });
    expect(presentedClient({ client_id: 'rs', client_secret: 's' }, {})).toEqual({ method: 'client_secret_post', clientId: 'rs', secret: 's' });
    expect(presentedClient({ client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: 'a.b.c' }, {})).toMatchObject({ method: 'private_key_jwt' });
    expect(presentedClient({}, { bearer: 'cred' })).toEqual({ method: 'bearer', credential: 'cred' });
    expect(presentedClient({}, {})).toBeUndefined();
  });

  it('refuses two methods in one request, half an assertion, a secret without client_id, and another assertion type', () => {
    expect(() => presentedClient({ client_id: 'rs', client_secret: 's' }, { bearer: 'cred' })).toThrow(InvalidRequest);
    expect(() => presentedClient({ client_id: 'rs', client_secret: 's' }, { basic: { clientId: 'rs', secret: 's' } })).toThrow(InvalidRequest);
    expect(() => presentedClient({ client_id: 'other' }, { basic: { clientId: 'rs', secret: 's' } })).toThrow(InvalidRequest);
    expect(() => presentedClient({ client_assertion: 'a.b.c' }, {})).toThrow(InvalidRequest);
    expect(() => presentedClient({ client_secret: 's' }, {})).toThrow(InvalidRequest);
    expect(() => presentedClient({ client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: 'a.b.c' }, {})).toThrow(InvalidClient);
  });
});

describe('verifyClientAssertion', () => {
  const ISSUER = 'https://broker.test';
  const now = Date.UTC(2026, 11, 5, 6);
  let key: CryptoKey;
  let publicJwk: JWK;
  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    key = pair.privateKey;
    publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' };
  });
  const used = new Set<string>();
  const check = (): AssertionCheck => ({
    issuer: ISSUER,
    endpoint: `${ISSUER}/oauth2/introspect`,
    now,
    leewayMs: 30_000,
    keysOf: (id) => (id === 'rs' ? createLocalJWKSet({ keys: [publicJwk] }) : undefined),
    useOnce: async (k) => !used.has(k) && Boolean(used.add(k)),
  });
  const sec = (ms: number) => Math.floor(ms / 1000);
  const jwt = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT({ iss: 'rs', sub: 'rs', aud: ISSUER, exp: sec(now) + 60, jti: crypto.randomUUID(), ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k1', ...header }).sign(key);

  it('accepts a good assertion once, naming its client', async () => {
    const a = await jwt({});
    await expect(verifyClientAssertion(a, 'rs', check())).resolves.toBe('rs');
    await expect(verifyClientAssertion(a, 'rs', check())).rejects.toThrow(/already used/);
  });

  it('refuses each broken rule with invalid_client', async () => {
    const cases: [string, Promise<string>, RegExp][] = [
      ['no exp', jwt({ exp: undefined }), /claim exp is missing/],
      ['no jti', jwt({ jti: undefined }), /claim jti is missing/],
      ['expired', jwt({ exp: sec(now) - 120 }), /expired/],
      ['too long', jwt({ exp: sec(now) + 3600 }), /at most 5 minutes/],
      ['iat ahead', jwt({ iat: sec(now) + 600 }), /iat is in the future/],
      ['sub differs', jwt({ sub: 'other' }), /claim sub/],
      ['other aud', jwt({ aud: 'https://elsewhere.test' }), /claim aud/],
      ['unknown client', jwt({ iss: 'nobody', sub: 'nobody' }), /unknown client/],
      ['embedded key', jwt({}, { jwk: publicJwk }), /"jwk" is not accepted/],
    ];
    for (const [name, assertion, why] of cases) {
      const err = await verifyClientAssertion(await assertion, undefined, check()).then(() => undefined, (e: unknown) => e);
      expect(err, name).toBeInstanceOf(InvalidClient);
      expect((err as Error).message, name).toMatch(why);
    }
    await expect(verifyClientAssertion(await jwt({}), 'other-client', check())).rejects.toThrow(/iss differs from client_id/);
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: 'rs' })).toString('base64url')}.`;
    await expect(verifyClientAssertion(unsigned, undefined, check())).rejects.toThrow(/alg must be one of/);
  });
});

describe('ResourceServers', () => {
  it('refuses at start a jwks_file it cannot read, and a key that is no public JWK', () => {
    const rs = { name: 'rs', audiences: ['api'] };
    expect(() => new ResourceServers([{ ...rs, jwks_file: '/nonexistent/rs.jwks.json' }], undefined)).toThrow(ConfigError);
    expect(() => new ResourceServers([{ ...rs, jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] } }], undefined)).toThrow(/resource_servers.0.jwks: keys.0: not a valid public JWK/);
  });
});
