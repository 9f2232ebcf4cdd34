/**
 * Client certificates from a TLS-terminating proxy: the XFCC and nginx header formats, and which
 * peer addresses count as the trusted proxy. Every certificate is made by the dev CA at test time.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { MAX_PRESENTED_CERTIFICATES, type X509Evidence } from '../../src/attestation/x509.js';
import { createCA, issueCertificate, type Credential } from '../../src/dev/dev-ca.js';
import { createClientCertSource, parseForwarded, trustedProxyList } from '../../src/http/client-cert.js';
import { createLogger } from '../../src/log.js';
import { keepPeerChains } from '../../src/tls/peer-chain.js';

let ca: Credential;
let inter: Credential;
/** A leaf under `inter`: certPem is the leaf alone, chainPem leaf + intermediate. */
let leaf: Credential;
let direct: Credential;

beforeAll(async () => {
  ca = await createCA({ trustDomain: 'example.org' });
  inter = await issueCertificate(ca, { ca: true, subject: 'CN=proxy-test intermediate' });
  leaf = await issueCertificate(inter, { uris: ['spiffe://example.org/ns/a/sa/b'] });
  direct = await issueCertificate(ca, { uris: ['spiffe://example.org/ns/a/sa/c'], dns: ['a.internal', 'b.internal'] });
});

const hex = (e: X509Evidence) => e.chain.map((d) => Buffer.from(d).toString('hex'));
const enc = encodeURIComponent;
const forwardedOk = (chain: Buffer[]) => ({ kind: 'x509', source: 'forwarded', chain: chain.map((d) => Buffer.from(d)) });
const forwardedProblem = (problem: string) => ({ kind: 'x509', chain: [], source: 'forwarded', problem });

/** A logger writing JSON lines into memory. */
const sink = () => {
  const lines: Record<string, unknown>[] = [];
  let raw = '';
  const destination = new Writable({
    write(chunk, _enc, cb) {
      raw += String(chunk);
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger({ level: 'debug', destination }), lines, raw: () => raw };
};

describe('parseForwarded: Envoy x-forwarded-client-cert', () => {
  it('reads the Cert field alone', () => {
    const ev = parseForwarded(`Hash=abc;Cert="${enc(leaf.certPem)}";URI=spiffe://example.org/ns/a/sa/b`, 'xfcc');
    expect(ev).toEqual(forwardedOk([leaf.der]));
  });

  it('reads an unquoted Cert value too', () => {
    expect(parseForwarded(`Cert=${enc(leaf.certPem)}`, 'xfcc')).toEqual(forwardedOk([leaf.der]));
  });

  it('uses Chain in preference to Cert, whichever comes first', () => {
    const expected = [leaf.der.toString('hex'), inter.der.toString('hex')];
    expect(hex(parseForwarded(`Cert="${enc(leaf.certPem)}";Chain="${enc(leaf.chainPem)}"`, 'xfcc'))).toEqual(expected);
    expect(hex(parseForwarded(`Chain="${enc(leaf.chainPem)}";Cert="${enc(leaf.certPem)}"`, 'xfcc'))).toEqual(expected);
    expect(hex(parseForwarded(`Chain="${enc(leaf.chainPem)}"`, 'xfcc'))).toEqual(expected);
  });

  it('refuses a Chain that does not begin with its Cert (which certificate did the client prove?)', () => {
    const mismatch = forwardedProblem('the x-forwarded-client-cert Chain does not begin with its Cert');
    // Another certificate entirely, in either order of the fields.
    expect(parseForwarded(`Chain="${enc(leaf.chainPem)}";Cert="${enc(direct.certPem)}"`, 'xfcc')).toEqual(mismatch);
    expect(parseForwarded(`Cert="${enc(direct.certPem)}";Chain="${enc(leaf.chainPem)}"`, 'xfcc')).toEqual(mismatch);
    // Cert is in the Chain, but not first.
    expect(parseForwarded(`Cert="${enc(leaf.certPem)}";Chain="${enc(inter.certPem + leaf.certPem)}"`, 'xfcc')).toEqual(mismatch);
    // Cert holding more than one certificate, even when the first matches.
    expect(parseForwarded(`Cert="${enc(leaf.chainPem)}";Chain="${enc(leaf.chainPem)}"`, 'xfcc')).toEqual(mismatch);
    // Cert that is not a certificate, or not URL-encoded PEM.
    expect(parseForwarded(`Cert="hello";Chain="${enc(leaf.chainPem)}"`, 'xfcc')).toEqual(mismatch);
    expect(parseForwarded(`Cert="%ZZ";Chain="${enc(leaf.chainPem)}"`, 'xfcc')).toEqual(mismatch);
    // An empty Chain beside a good Cert is not read as "Cert alone".
    expect(parseForwarded(`Cert="${enc(leaf.certPem)}";Chain=""`, 'xfcc')).toEqual(mismatch);
  });

  it('keeps "," and ";" inside quoted values', () => {
    const value = `By=spiffe://example.org/proxy;Subject="CN=a, O=b; OU=c";Cert="${enc(leaf.certPem)}";DNS=x.internal`;
    expect(parseForwarded(value, 'xfcc')).toEqual(forwardedOk([leaf.der]));
  });

  it('honours escaped quotes inside quoted values', () => {
    const value = `Subject="CN=\\"quoted, still; inside\\", O=x";Cert="${enc(leaf.certPem)}"`;
    expect(parseForwarded(value, 'xfcc')).toEqual(forwardedOk([leaf.der]));
    // The escaped quote must not end the value: the `,` after it would otherwise split an element off.
    const unbalanced = `Subject="CN=\\", Cert=x";Cert="${enc(leaf.certPem)}"`;
    expect(parseForwarded(unbalanced, 'xfcc')).toEqual(forwardedOk([leaf.der]));
  });

  it('ignores surrounding whitespace and case of keys', () => {
    expect(parseForwarded(`  hash=abc ; CERT="${enc(leaf.certPem)}"  `, 'xfcc')).toEqual(forwardedOk([leaf.der]));
  });

  it('refuses several elements (an appended, unsanitized header)', () => {
    const one = `Cert="${enc(leaf.certPem)}"`;
    expect(parseForwarded(`${one},${one}`, 'xfcc')).toEqual(
      forwardedProblem('the x-forwarded-client-cert header holds 2 elements; exactly one is accepted (configure the proxy to sanitize and set it)'),
    );
    expect(parseForwarded(`By=a;${one},By=b;Hash=c,${one}`, 'xfcc').problem).toMatch(/^the x-forwarded-client-cert header holds 3 elements/);
  });

  it('refuses a repeated Cert, Chain or other single-valued key', () => {
    const a = enc(leaf.certPem);
    const b = enc(direct.certPem);
    expect(parseForwarded(`Cert="${a}";Cert="${b}"`, 'xfcc')).toEqual(forwardedProblem('the x-forwarded-client-cert header repeats "cert"'));
    expect(parseForwarded(`Chain="${a}";chain="${b}"`, 'xfcc')).toEqual(forwardedProblem('the x-forwarded-client-cert header repeats "chain"'));
    expect(parseForwarded(`Hash=1;Cert="${a}";Hash=2`, 'xfcc')).toEqual(forwardedProblem('the x-forwarded-client-cert header repeats "hash"'));
  });

  it('accepts the DNS and URI keys Envoy repeats once per SAN', () => {
    // Envoy's own documented example: `...;URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com`.
    const value = `Hash=abc;Cert="${enc(direct.certPem)}";Subject="";URI=spiffe://example.org/ns/a/sa/c;DNS=a.internal;DNS=b.internal`;
    expect(parseForwarded(value, 'xfcc')).toEqual(forwardedOk([direct.der]));
    expect(parseForwarded(`URI=spiffe://x/a;URI=spiffe://x/b;Cert="${enc(direct.certPem)}"`, 'xfcc')).toEqual(forwardedOk([direct.der]));
  });

  it('refuses a header without Cert or Chain, or with a key-less pair', () => {
    expect(parseForwarded('Hash=abc;URI=spiffe://example.org/ns/a/sa/b', 'xfcc')).toEqual(
      forwardedProblem('the x-forwarded-client-cert header has no Cert or Chain field'),
    );
    expect(parseForwarded('', 'xfcc')).toEqual(
      forwardedProblem('the x-forwarded-client-cert header holds 0 elements; exactly one is accepted (configure the proxy to sanitize and set it)'),
    );
    expect(parseForwarded(`Hash;Cert="${enc(leaf.certPem)}"`, 'xfcc')).toEqual(forwardedProblem('the x-forwarded-client-cert header is malformed'));
    expect(parseForwarded(`=abc;Cert="${enc(leaf.certPem)}"`, 'xfcc')).toEqual(forwardedProblem('the x-forwarded-client-cert header is malformed'));
  });

  it('refuses bad percent-encoding and values without a PEM certificate', () => {
    expect(parseForwarded('Cert="%E0%A4%A"', 'xfcc')).toEqual(forwardedProblem('the forwarded client certificate is not valid URL-encoded PEM'));
    expect(parseForwarded('Cert="%ZZ"', 'xfcc')).toEqual(forwardedProblem('the forwarded client certificate is not valid URL-encoded PEM'));
    expect(parseForwarded('Cert="hello"', 'xfcc')).toEqual(forwardedProblem('the forwarded client certificate header holds no PEM certificate'));
    expect(parseForwarded(`Cert="${enc(leaf.keyPem)}"`, 'xfcc')).toEqual(forwardedProblem('the forwarded client certificate header holds no PEM certificate'));
  });

  it('hands over up to 16 certificates (the attestor applies the cap of 8 without our anchors) and refuses 17 unread', () => {
    const pems = (n: number) => Array.from({ length: n }, () => leaf.certPem).join('');
    expect(parseForwarded(`Chain="${enc(pems(16))}"`, 'xfcc').chain).toHaveLength(16);
    expect(parseForwarded(`Chain="${enc(pems(17))}"`, 'xfcc')).toEqual(forwardedProblem('the client certificate chain is longer than 16 certificates'));
  });
});

describe('parseForwarded: nginx PEM header', () => {
  it('reads URL-encoded PEM ($ssl_client_escaped_cert)', () => {
    expect(parseForwarded(enc(leaf.certPem), 'pem')).toEqual(forwardedOk([leaf.der]));
    expect(parseForwarded(enc(direct.certPem), 'pem')).toEqual(forwardedOk([direct.der]));
  });

  it('holds exactly one certificate: nginx forwards the leaf alone, two means the header came twice', () => {
    const two = forwardedProblem('the forwarded client certificate header must hold exactly one certificate');
    expect(parseForwarded(enc(leaf.chainPem), 'pem')).toEqual(two);
    expect(parseForwarded(leaf.chainPem, 'pem')).toEqual(two);
    // Two nginx values joined by ", " (a repeated header), raw or URL-encoded.
    expect(parseForwarded(`${enc(leaf.certPem)}, ${enc(direct.certPem)}`, 'pem')).toEqual(two);
    expect(parseForwarded(`${leaf.certPem}, ${leaf.certPem}`, 'pem')).toEqual(two);
  });

  it('reads raw PEM, with newlines or folded onto one line', () => {
    expect(parseForwarded(leaf.certPem, 'pem')).toEqual(forwardedOk([leaf.der]));
    expect(parseForwarded(leaf.certPem.replace(/\n/g, ' '), 'pem')).toEqual(forwardedOk([leaf.der]));
    // nginx's legacy $ssl_client_cert indents continuation lines with a tab.
    expect(parseForwarded(leaf.certPem.trim().replace(/\n/g, '\n\t'), 'pem')).toEqual(forwardedOk([leaf.der]));
  });

  it('does not read XFCC structure in pem format', () => {
    // A repeated key is an XFCC error, not a pem one: the PEM inside is all that is read.
    expect(parseForwarded(`Hash=1;Cert="${enc(leaf.certPem)}";Hash=2`, 'pem')).toEqual(forwardedOk([leaf.der]));
    // Nor does a Chain field take precedence: two certificates are two certificates.
    expect(parseForwarded(`Cert="${enc(direct.certPem)}";Chain="${enc(leaf.certPem)}"`, 'pem')).toEqual(
      forwardedProblem('the forwarded client certificate header must hold exactly one certificate'),
    );
  });

  it('refuses bad percent-encoding, no certificate and several certificates', () => {
    expect(parseForwarded('%E0%A4%A', 'pem')).toEqual(forwardedProblem('the forwarded client certificate is not valid URL-encoded PEM'));
    expect(parseForwarded('', 'pem')).toEqual(forwardedProblem('the forwarded client certificate header holds no PEM certificate'));
    // More than one is refused before any length limit applies.
    expect(parseForwarded(enc(Array.from({ length: 9 }, () => leaf.certPem).join('')), 'pem')).toEqual(
      forwardedProblem('the forwarded client certificate header must hold exactly one certificate'),
    );
  });
});

describe('trustedProxyList', () => {
  const list = trustedProxyList(['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '::1', '172.16.5.9/16']);

  it.each([
    ['10.1.2.3', 'ipv4', true],
    ['10.255.255.255', 'ipv4', true],
    ['11.0.0.1', 'ipv4', false],
    ['192.168.1.7', 'ipv4', true],
    ['192.168.1.8', 'ipv4', false],
    // A host address written as a network still means its /16.
    ['172.16.200.1', 'ipv4', true],
    ['172.17.0.1', 'ipv4', false],
    ['2001:db8:ffff::1', 'ipv6', true],
    ['2001:db9::1', 'ipv6', false],
    ['::1', 'ipv6', true],
    ['::2', 'ipv6', false],
    // IPv4-mapped IPv6 in its hex form matches the IPv4 entry.
    ['::ffff:a01:203', 'ipv6', true],
    ['::ffff:b00:1', 'ipv6', false],
  ] as const)('%s (%s) trusted: %s', (address, type, trusted) => {
    expect(list.check(address, type)).toBe(trusted);
  });
});

describe('createClientCertSource: trusted proxies', () => {
  const forwarded = {
    header: 'X-Client-Cert',
    format: 'xfcc' as const,
    trusted_proxies: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '::1'],
  };

  function source() {
    const s = sink();
    const src = createClientCertSource({ forwarded, log: s.log });
    const headers: Record<string, string> = { 'x-client-cert': `Cert="${enc(leaf.certPem)}"` };
    const asked: string[] = [];
    const evidence = (remote: string | undefined) =>
      src.evidence(undefined, remote, (name) => {
        asked.push(name);
        return headers[name];
      });
    return { ...s, evidence, headers, asked };
  }

  it.each([
    ['::ffff:10.1.2.3', true],
    ['::FFFF:10.1.2.3', true],
    ['10.1.2.3', true],
    ['::ffff:192.168.1.7', true],
    ['192.168.1.7', true],
    ['2001:db8:1::5', true],
    ['::1', true],
    ['::ffff:11.1.2.3', false],
    ['192.168.1.8', false],
    ['::ffff:192.168.1.8', false],
    ['2001:db9::1', false],
    ['127.0.0.1', false],
    [undefined, false],
  ])('header from %s counts: %s', (remote, trusted) => {
    const s = source();
    const ev = s.evidence(remote);
    expect(s.asked).toEqual(['x-client-cert']);
    if (trusted) {
      expect(ev).toEqual(forwardedOk([leaf.der]));
      expect(s.lines).toEqual([]);
    } else {
      expect(ev).toBeUndefined();
      expect(s.lines).toHaveLength(1);
      expect(s.lines[0]).toMatchObject({
        level: 'warn',
        msg: 'forwarded client certificate header from an untrusted address ignored',
        header: 'x-client-cert',
        suppressed: 0,
        ...(remote === undefined ? {} : { remote }),
      });
    }
  });

  it('a trusted proxy without the header gives no evidence and logs nothing', () => {
    const s = source();
    delete s.headers['x-client-cert'];
    expect(s.evidence('10.0.0.1')).toBeUndefined();
    expect(s.evidence('192.168.9.9')).toBeUndefined();
    expect(s.lines).toEqual([]);
  });

  it('a malformed header from a trusted proxy is evidence with a problem, not silence', () => {
    const s = source();
    s.headers['x-client-cert'] = 'Cert="%E0%A4%A"';
    expect(s.evidence('10.0.0.1')).toEqual(forwardedProblem('the forwarded client certificate is not valid URL-encoded PEM'));
  });

  it('the untrusted warning never carries the certificate and is rate-limited', async () => {
    const s = source();
    s.headers['x-client-cert'] = xfccFor(leaf);
    for (let i = 0; i < 5; i++) expect(s.evidence('203.0.113.9')).toBeUndefined();
    expect(s.lines).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 1100));
    expect(s.evidence('203.0.113.10')).toBeUndefined();
    expect(s.lines).toHaveLength(2);
    expect(s.lines[1]).toMatchObject({ remote: '203.0.113.10', suppressed: 4 });
    const body = leaf.certPem.split('\n')[1]!; // the first base64 line of the certificate
    for (const needle of ['BEGIN CERTIFICATE', 'BEGIN%20CERTIFICATE', body.slice(0, 40), enc(body).slice(0, 40), 'Cert=']) {
      expect(s.raw()).not.toContain(needle);
    }
  });

  it('without forwarded config the header is never read', () => {
    const s = sink();
    const src = createClientCertSource({ log: s.log });
    const asked: string[] = [];
    expect(src.evidence(undefined, '10.0.0.1', (n) => (asked.push(n), 'x'))).toBeUndefined();
    expect(asked).toEqual([]);
    expect(s.lines).toEqual([]);
  });
});

function xfccFor(c: Credential): string {
  return `Hash=00;Cert="${enc(c.certPem)}";Chain="${enc(c.chainPem)}"`;
}

describe('createClientCertSource over a real TLS connection', () => {
  /** Connects with `client` (if any) to a TLS server requesting certificates and returns the evidence the source sees. */
  async function evidenceOver(
    src: ReturnType<typeof createClientCertSource>,
    headers: Record<string, string>,
    client?: Credential,
  ): Promise<X509Evidence | undefined> {
    const server = await issueCertificate(ca, { server: true, dns: ['localhost'], ips: ['127.0.0.1'] });
    const tlsServer = createTlsServer({ cert: server.chainPem, key: server.keyPem, ca: [ca.certPem], requestCert: true, rejectUnauthorized: false });
    // As the broker's server does: without it, Node 24.21 and 26.8+ drop the intermediates (peer-chain.ts).
    keepPeerChains(tlsServer, MAX_PRESENTED_CERTIFICATES);
    const seen = new Promise<X509Evidence | undefined>((resolve) => {
      tlsServer.on('secureConnection', (socket: TLSSocket) => {
        resolve(src.evidence(socket, socket.remoteAddress, (n) => headers[n]));
        socket.end();
      });
    });
    tlsServer.listen(0, '127.0.0.1');
    await once(tlsServer, 'listening');
    const { port } = tlsServer.address() as AddressInfo;
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: ca.certPem, servername: 'localhost', ...(client ? { cert: client.chainPem, key: client.keyPem } : {}) });
    socket.on('error', () => undefined);
    try {
      return await seen;
    } finally {
      socket.destroy();
      tlsServer.close();
    }
  }

  it('the handshake certificate attests when no proxy is configured', async () => {
    const ev = await evidenceOver(createClientCertSource({ log: createLogger({ level: 'silent' }) }), {}, leaf);
    expect(ev?.source).toBe('handshake');
    expect(ev?.handshakeError).toBeUndefined();
    expect(hex(ev!)[0]).toBe(leaf.der.toString('hex'));
    expect(hex(ev!)).toContain(inter.der.toString('hex'));
  });

  it('the handshake chain is exactly what the client sent, in its order (out-of-order intermediates and strays kept)', async () => {
    // Node's getPeerCertificate(true) re-links by issuer and loses intermediates sent out of
    // order; the chain must arrive as it does through a forwarded header (issue 12).
    const i1 = await issueCertificate(ca, { ca: true, subject: 'CN=order i1' });
    const i2 = await issueCertificate(i1, { ca: true, subject: 'CN=order i2' });
    const i3 = await issueCertificate(i2, { ca: true, subject: 'CN=order i3' });
    const l = await issueCertificate(i3, { uris: ['spiffe://example.org/order'] });
    const stray = await createCA({ trustDomain: 'example.org', commonName: 'stray' });
    const src = createClientCertSource({ log: createLogger({ level: 'silent' }) });
    for (const rest of [[i1, i2, i3], [i2, i1, i3], [stray, i3, i1, i2, ca]]) {
      const sent = { ...l, chainPem: [l, ...rest].map((c) => c.certPem).join('') };
      const ev = await evidenceOver(src, {}, sent);
      expect(hex(ev!)).toEqual([l, ...rest].map((c) => c.der.toString('hex')));
    }
  });

  it("OpenSSL's refusal travels with the evidence", async () => {
    const stranger = await issueCertificate(await createCA({ trustDomain: 'example.org', commonName: 'stranger' }), { uris: ['spiffe://example.org/x'] });
    const ev = await evidenceOver(createClientCertSource({ log: createLogger({ level: 'silent' }) }), {}, stranger);
    expect(ev?.source).toBe('handshake');
    expect(ev?.chain.map((d) => Buffer.from(d).toString('hex'))[0]).toBe(stranger.der.toString('hex'));
    expect(ev?.handshakeError).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/i);
  });

  it("from a trusted proxy only the header counts, never the proxy's own certificate", async () => {
    const src = createClientCertSource({ forwarded: { header: 'x-forwarded-client-cert', format: 'xfcc', trusted_proxies: ['127.0.0.1'] }, log: createLogger({ level: 'silent' }) });
    expect(await evidenceOver(src, {}, direct)).toBeUndefined();
    const ev = await evidenceOver(src, { 'x-forwarded-client-cert': xfccFor(leaf) }, direct);
    expect(ev?.source).toBe('forwarded');
    expect(hex(ev!)).toEqual([leaf.der.toString('hex'), inter.der.toString('hex')]);
  });

  it('from an untrusted address the header is ignored and the handshake certificate attests', async () => {
    const s = sink();
    const src = createClientCertSource({ forwarded: { header: 'x-forwarded-client-cert', format: 'xfcc', trusted_proxies: ['10.0.0.0/8'] }, log: s.log });
    const ev = await evidenceOver(src, { 'x-forwarded-client-cert': xfccFor(leaf) }, direct);
    expect(ev?.source).toBe('handshake');
    expect(hex(ev!)[0]).toBe(direct.der.toString('hex'));
    expect(s.lines).toHaveLength(1);
    expect(s.lines[0]).toMatchObject({ msg: 'forwarded client certificate header from an untrusted address ignored', remote: '127.0.0.1' });
  });
});
