/**
 * Reading a request's client authentication (RFC 6749 §2.3): the Basic header's form-urlencoded
 * parts, one method per request, and the assertion type of private_key_jwt.
 */
import { describe, expect, it } from 'vitest';
import { presentedClient } from '../../src/auth/client-auth.js';
import { InvalidClient, InvalidRequest } from '../../src/errors.js';
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
