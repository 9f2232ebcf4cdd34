/**
 * `text` cut to `max` characters, marked with its full length when cut. For what a client sent
 * (a key it named, a path, a certificate subject) on its way into an answer or a log line.
 */
export function clip(text: string, max: number): string {
  return text.length > max ? `${cut(text, max)}…(${text.length} chars)` : text;
}

/**
 * The first `max` UTF-16 units of `text`, one fewer when the cut would split a surrogate pair:
 * half a pair is a lone surrogate, which no record can hold (issue 11).
 */
export function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}
