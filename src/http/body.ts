import type { Context } from 'hono';
import { InvalidRequest } from '../errors.js';

/** Reads a JSON object body; anything else is a 400 that names the problem. */
export async function readJson(c: Context): Promise<unknown> {
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new InvalidRequest('content-type must be application/json');
  const text = await c.req.text();
  if (!text.trim()) throw new InvalidRequest('request body is empty');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidRequest('request body is not valid JSON');
  }
}
