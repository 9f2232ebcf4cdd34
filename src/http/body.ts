import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import { InvalidRequest, RequestTooLarge } from '../errors.js';

const tooLarge = (max: number) => new RequestTooLarge(`request body exceeds ${max} bytes`);

/**
 * Reads the request body, refusing more than `maxBytes` (413) before buffering it. Under
 * @hono/node-server it reads the Node request directly: building a WHATWG Request with a web
 * stream costs more than the rest of a task start (bench/ shows it).
 */
export async function readBody(c: Context, maxBytes: number): Promise<Buffer> {
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming) return readNode(incoming, maxBytes);
  return readWeb(c.req.raw.body, maxBytes); // app.request() and other runtimes
}

function readNode(incoming: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (settle: () => void) => {
      incoming.off('data', onData).off('end', onEnd).off('error', onClose).off('close', onClose);
      settle();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      // Stop keeping the rest; Node discards it, and the 413 closes the connection.
      if (size > max) done(() => reject(tooLarge(max)));
      else chunks.push(chunk);
    };
    const onEnd = () => done(() => resolve(Buffer.concat(chunks, size)));
    const onClose = () => done(() => reject(new InvalidRequest('request body was cut off')));
    incoming.on('data', onData).once('end', onEnd).once('error', onClose).once('close', onClose);
  });
}

async function readWeb(body: ReadableStream<Uint8Array> | null, max: number): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(chunks, size);
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw tooLarge(max);
    }
    chunks.push(value);
  }
}

/** The body as UTF-8 text (anything else is a 400). */
async function readText(c: Context, maxBytes: number): Promise<string> {
  const raw = await readBody(c, maxBytes);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new InvalidRequest('request body is not valid UTF-8');
  }
}

/**
 * Reads a JSON body; anything but a JSON document under the size limit is a 4xx naming the
 * problem. With `optional`, a request without a body (no content-type, nothing sent) reads as undefined.
 */
export async function readJson(c: Context, maxBytes: number, opts: { optional?: boolean } = {}): Promise<unknown> {
  const type = c.req.header('content-type');
  if (opts.optional && type === undefined && (c.req.header('content-length') ?? '0') === '0' && c.req.header('transfer-encoding') === undefined) return undefined;
  if (!/^application\/json\s*(;|$)/i.test(type ?? '')) throw new InvalidRequest('content-type must be application/json');
  const text = await readText(c, maxBytes);
  if (!text.trim()) throw new InvalidRequest('request body is empty');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidRequest('request body is not valid JSON');
  }
}

/**
 * Reads an `application/x-www-form-urlencoded` body (RFC 7662 §2.1, RFC 7009 §2.1) into an object.
 * A parameter without a value counts as omitted, and one sent twice is refused (RFC 6749 §3.1).
 */
export async function readForm(c: Context, maxBytes: number): Promise<Record<string, string>> {
  return (await readFormWith(c, maxBytes, [])) as Record<string, string>;
}

/**
 * readForm, except that the `repeatable` parameters may be sent several times and are read as
 * lists (RFC 8693 §2.1 `audience`, RFC 8707 §2 `resource`).
 */
export async function readFormWith(c: Context, maxBytes: number, repeatable: readonly string[]): Promise<Record<string, string | string[]>> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/x-www-form-urlencoded\s*(;|$)/i.test(type)) throw new InvalidRequest('content-type must be application/x-www-form-urlencoded');
  const params = new URLSearchParams(await readText(c, maxBytes));
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string>; // "__proto__" is just a name here
  for (const [name, value] of params) {
    if (value === '') continue;
    const seen = out[name];
    if (repeatable.includes(name)) out[name] = [...((seen as string[] | undefined) ?? []), value];
    else if (seen !== undefined) throw new InvalidRequest(`parameter "${name}" is repeated`);
    else out[name] = value;
  }
  return out;
}
