const isLoopbackHost = (hostname: string): boolean =>
  hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);

/** An absolute URL that is https, or plain http on a loopback host (dev and tests). */
export type SecureUrl = { ok: true; url: URL } | { ok: false; reason: 'not_absolute' | 'not_https' };

export function parseSecureUrl(raw: string): SecureUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'not_absolute' };
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname))) return { ok: true, url };
  return { ok: false, reason: 'not_https' };
}
