import { z } from 'zod';
import type { X509Evidence } from '../attestation/x509.js';
import { InvalidClient, InvalidRequest } from '../errors.js';
import { JWT_BEARER_ASSERTION_TYPE } from './client-assertion.js';

/**
 * How OAuth clients (resource servers at introspection and revocation, and the token endpoint's
 * clients next) authenticate: the IANA "OAuth Token Endpoint Authentication Methods" names, plus
 * `bearer` (a credential in `Authorization: Bearer`, an access-token type: RFC 8414 lists it as
 * `Bearer` for introspection only).
 */
export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'tls_client_auth', 'bearer'] as const;
export type ClientAuthMethod = (typeof CLIENT_AUTH_METHODS)[number];

/** What a request presented to authenticate its client, before anything was checked. */
export type PresentedClient =
  | { method: 'client_secret_basic' | 'client_secret_post'; clientId: string; secret: string }
  | { method: 'private_key_jwt'; clientId: string | undefined; assertion: string }
  | { method: 'bearer'; credential: string }
  | { method: 'tls_client_auth'; clientId: string | undefined; certificate: X509Evidence };

/** The transport's part: the Authorization header, read by http/call-context.ts, and the client certificate. */
export interface ClientTransport {
  bearer?: string;
  basic?: { clientId: string; secret: string };
  certificate?: X509Evidence;
}

/** The client-authentication parameters of a form body (RFC 6749 §2.3.1, RFC 7521 §4.2). */
const clientParamsSchema = z.object({
  client_id: z.string().max(256).optional(),
  client_secret: z.string().max(1024).optional(),
  client_assertion_type: z.string().max(256).optional(),
  client_assertion: z.string().max(8192).optional(),
});

/**
 * The client authentication a request presents, or undefined when it presents none. RFC 6749
 * §2.3: one method per request, so two are a 400. A client certificate alone is
 * tls_client_auth (the client_id parameter RFC 8705 §2 asks for is optional here: the
 * certificate names the client); beside another method it is only the transport's.
 */
export function presentedClient(params: unknown, transport: ClientTransport): PresentedClient | undefined {
  const parsed = clientParamsSchema.safeParse(params);
  if (!parsed.success) throw new InvalidRequest('client_id, client_secret, client_assertion_type and client_assertion must be strings of bounded length');
  const { client_id: clientId, client_secret: secret, client_assertion_type: assertionType, client_assertion: assertion } = parsed.data;
  const found: PresentedClient[] = [];
  if (transport.basic) {
    if (clientId !== undefined && clientId !== transport.basic.clientId) throw new InvalidRequest('client_id differs from the client of the Authorization header');
    found.push({ method: 'client_secret_basic', ...transport.basic });
  }
  if (secret !== undefined) {
    if (clientId === undefined) throw new InvalidRequest('client_secret needs client_id');
    found.push({ method: 'client_secret_post', clientId, secret });
  }
  if (assertion !== undefined || assertionType !== undefined) {
    if (assertion === undefined || assertionType === undefined) throw new InvalidRequest('client_assertion and client_assertion_type go together');
    if (assertionType !== JWT_BEARER_ASSERTION_TYPE) throw new InvalidClient(`client_assertion_type must be ${JWT_BEARER_ASSERTION_TYPE}`);
    found.push({ method: 'private_key_jwt', clientId, assertion });
  }
  if (transport.bearer !== undefined) found.push({ method: 'bearer', credential: transport.bearer });
  if (found.length > 1) throw new InvalidRequest(`use one client authentication method per request, not ${found.map((f) => f.method).join(' and ')} (RFC 6749 §2.3)`);
  if (found[0]) return found[0];
  if (transport.certificate) return { method: 'tls_client_auth', clientId, certificate: transport.certificate };
  return undefined;
}

/** The form's client_id when it is sent alone (a public client, auth method `none`). */
export function publicClientId(params: unknown): string | undefined {
  const parsed = clientParamsSchema.safeParse(params);
  return parsed.success ? parsed.data.client_id : undefined;
}
