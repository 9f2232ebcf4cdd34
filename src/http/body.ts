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

/** Reads a JSON body; anything but a JSON document under the size limit is a 4xx naming the problem. */
export async function readJson(c: Context, maxBytes: number): Promise<unknown> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new InvalidRequest('content-type must be application/json');
  const raw = await readBody(c, maxBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new InvalidRequest('request body is not valid UTF-8');
  }
  if (!text.trim()) throw new InvalidRequest('request body is empty');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidRequest('request body is not valid JSON');
  }
}
