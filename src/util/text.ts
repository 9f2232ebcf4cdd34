/**
 * `text` cut to `max` characters, marked with its full length when cut. For what a client sent
 * (a key it named, a path, a certificate subject) on its way into an answer or a log line.
 */
export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text;
}
