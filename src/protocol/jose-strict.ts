/**
 * The one strict parser of inbound compact JWS/JWT text (STANDARDS §2.13, RFC 7515, RFC 7519,
 * RFC 8725), run before any key lookup or signature check:
 *
 * - exactly three segments, each canonical base64url (RFC 7515 §2, RFC 4648 §5 and §3.5): only
 *   `A-Z a-z 0-9 - _`, no padding, whitespace or line breaks, no length of 1 mod 4, and the unused
 *   low bits of the last character zero, so every token has exactly one spelling;
 * - header and claims are UTF-8 (fatal decoding, no byte-order mark) JSON objects (RFC 8259) with
 *   no duplicate member names at any depth (RFC 7515 §4 and §5.2, RFC 7519 §4: we take the
 *   "reject" branch, RFC 7493 §2.3), nested at most MAX_JSON_DEPTH levels;
 * - the size is bounded by the caller's limit (one configured limit per token kind).
 *
 * It decides structure only; what each token kind accepts (typ, header parameters, claims) is
 * decided by its validator (oidc/verify.ts for platform tokens) from the parsed result.
 */

/** Nesting cap of header and claims: the document itself is level 1 (`{"a":{"b":[1]}}` is 3). */
export const MAX_JSON_DEPTH = 16;

export interface ParsedJws {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
}

/** Why a token is not well-formed; `message` is a public sentence fragment (never the token). */
export class JoseParseError extends Error {
  override readonly name = 'JoseParseError';
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const SEGMENT_NAMES = ['header', 'payload', 'signature'] as const;

/** Bytes of one canonical base64url segment, or a JoseParseError naming the segment. */
export function decodeCanonicalBase64url(segment: string, what: string): Buffer {
  if (!BASE64URL.test(segment))
    throw new JoseParseError(`its ${what} is not base64url (padding "=", "+", "/", whitespace or other characters)`);
  if (segment.length % 4 === 1) throw new JoseParseError(`its ${what} has a length no base64url encoding has`);
  const bytes = Buffer.from(segment, 'base64url');
  // Canonical (RFC 4648 §3.5): re-encoding gives the same text only when the spare bits are zero.
  if (bytes.toString('base64url') !== segment) throw new JoseParseError(`its ${what} is not canonical base64url (spare bits set in its last character)`);
  return bytes;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Checks JSON text (RFC 8259) for duplicate member names (compared after unescaping) and nesting
 * deeper than `maxDepth`, then parses it. JSON.parse alone would keep the last duplicate silently.
 */
export function parseStrictJson(text: string, what: string, maxDepth = MAX_JSON_DEPTH): unknown {
  let i = 0;
  const n = text.length;
  const fail = (why: string): never => {
    throw new JoseParseError(`its ${what} is not valid JSON (${why})`);
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const string = (): string => {
    const start = i;
    i++; // opening quote
    let escaped = false;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        const raw = text.slice(start, i);
        return escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
      }
      if (c < 0x20) fail('control character in a string');
      if (c === 0x5c) {
        escaped = true;
        const e = text[i + 1];
        if (e === 'u') {
          if (!/^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6))) fail('bad \\u escape');
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail('bad escape');
      } else i++;
    }
    return fail('unterminated string');
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (depth: number): void => {
    ws();
    const c = text[i];
    if (c === '{' || c === '[') {
      if (depth > maxDepth) throw new JoseParseError(`its ${what} is nested deeper than ${maxDepth} levels`);
      i++;
      ws();
      const close = c === '{' ? '}' : ']';
      if (text[i] === close) {
        i++;
        return;
      }
      const names = c === '{' ? new Set<string>() : undefined;
      for (;;) {
        if (names) {
          ws();
          if (text[i] !== '"') fail('expected a member name');
          const name = string();
          if (names.has(name)) throw new JoseParseError(`its ${what} has a duplicate member ${JSON.stringify(name.slice(0, 64))}`);
          names.add(name);
          ws();
          if (text[i] !== ':') fail('expected ":"');
          i++;
        }
        value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === close) {
          i++;
          return;
        }
        fail(`expected "," or "${close}"`);
      }
    }
    if (c === '"') {
      string();
      return;
    }
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m || m[0] === '') fail('unexpected character');
    i += (m as RegExpExecArray)[0].length;
  };
  value(1);
  ws();
  if (i !== n) fail('text after the value');
  return JSON.parse(text) as unknown;
}

function jsonObject(bytes: Buffer, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new JoseParseError(`its ${what} is not UTF-8`);
  }
  const value = parseStrictJson(text, what);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JoseParseError(`its ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/**
 * Parses a compact JWS strictly (see the file comment). Throws JoseParseError; the caller checks
 * the size first (its limit is configuration).
 */
export function parseCompactJws(token: string): ParsedJws {
  const segments = token.split('.');
  if (segments.length !== 3) throw new JoseParseError(`it has ${segments.length} segments, not 3 (header.payload.signature)`);
  // An empty signature (alg none) parses: the validator's alg allow-list refuses it by name.
  const [header, payload] = segments.map((s, k) => decodeCanonicalBase64url(s, SEGMENT_NAMES[k] as string)) as [Buffer, Buffer, Buffer];
  return { header: jsonObject(header, 'header'), payload: jsonObject(payload, 'claims set') };
}
