/**
 * Size limits every reader of a task token must accept, so the broker never mints a token that
 * it (or a resource server following the same contract) would refuse.
 *
 * A task token is read back in two ways:
 * - renew and end: `Authorization: Bearer <token>`, inside the request's header section. The
 *   broker's HTTP server sets Node's `maxHeaderSize` to MAX_REQUEST_HEADER_BYTES, which Node counts
 *   over the request target and every header name and value (431 beyond).
 * - introspection and revocation: the form body `token=<token>&token_type_hint=...`, within
 *   `http.max_body_bytes` (413 beyond). A JWS is base64url and dots: no percent-encoding.
 */

/** The request header section the broker's server accepts (Node's `maxHeaderSize`, its default). */
export const MAX_REQUEST_HEADER_BYTES = 16_384;

/**
 * What the rest of a renew or end request may spend of the header section beside the token: the
 * target (`/v1/tasks/<47-character grant id>/renew`), Host, content-type and -length, user-agent,
 * X-Forwarded-For, and a forwarded client certificate (an XFCC header with a URL-encoded PEM
 * chain takes a few KiB).
 */
export const OTHER_HEADERS_HEADROOM_BYTES = 8_192;

/**
 * The largest task token the broker issues (bytes; the token is ASCII): what is left of the header
 * section after the headroom and the `Authorization` name and `Bearer ` scheme. 8,172 bytes. An
 * intent whose token would be larger is refused at issuance (400); a presented token larger is
 * not one of ours.
 */
export const MAX_TASK_TOKEN_BYTES = MAX_REQUEST_HEADER_BYTES - OTHER_HEADERS_HEADROOM_BYTES - 'Authorization'.length - 'Bearer '.length;

/**
 * What an introspection or revocation form needs beside the token: `token=`, `&token_type_hint=`
 * with its value, and the parameters RFC 6749 §3.2 lets a client add (`client_id`, ...).
 */
export const FORM_PARAMS_HEADROOM_BYTES = 1_024;

/** The smallest `http.max_body_bytes` that still carries every token the broker issues in a form. */
export const MIN_BODY_BYTES = MAX_TASK_TOKEN_BYTES + FORM_PARAMS_HEADROOM_BYTES;
