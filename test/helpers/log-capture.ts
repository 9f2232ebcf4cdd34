/**
 * Secrets never logged (issue #5, item 5). Every in-process test broker logs at `trace` into a
 * file of a per-run directory (the global setup provides it as `logDir`); when the run ends, the
 * global teardown scans every captured file for issued tokens, platform tokens and private keys
 * and fails the run naming file and line (`finishLogCapture`). The secret itself is never printed:
 * a finding shows its kind, where it is and a short preview.
 *
 * What is scanned: the log of every broker `startTestBroker` starts (also when a test passes its
 * own destination: that one keeps its level, the file gets everything), and the output of child
 * processes a test hands to `captureChildOutput`. What is not a log and is not scanned: HTTP
 * response bodies (a task token is the answer of POST /v1/tasks), and what a command prints for
 * its user on purpose. Dev mode prints copy-paste curls, never a token (test/e2e/dev-mode.test.ts
 * asserts it), but its demo route GET /dev/platform-token answers a platform token, and those
 * curls print the task token they obtain on the terminal of whoever runs them: both are response
 * bodies meant for the user, not log lines.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { pino } from 'pino';
import { expect, inject } from 'vitest';
import { createLogger, type Logger } from '../../src/log.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The per-run directory test brokers log into (scanned for secrets by the global teardown). */
    logDir: string;
  }
}

// ---------------------------------------------------------------------------------------------
// The scanner

export type SecretKind = 'jwt' | 'pem-private-key' | 'private-jwk' | 'scrubbed';

export interface Finding {
  /** The file it was found in (for directory scans). */
  file?: string;
  /** 1-based line and column. */
  line: number;
  column: number;
  kind: SecretKind;
  /** A redacted preview: never the whole secret. */
  preview: string;
}

/** Three base64url segments, the first two JSON objects (`{"` is `eyJ`); the third may be empty (alg none). */
const JWT = /eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
/** PKCS#8, PKCS#1, SEC1, encrypted and OpenSSH private keys. */
const PEM_PRIVATE = /-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----/g;
/** A flat JSON object (a JWK has no nested object). */
const FLAT_OBJECT = /\{[^{}]*\}/g;
/** The members only a private JWK has (RFC 7518 §6.2.2, §6.3.2; OKP `d` too), with a base64url value. */
const PRIVATE_MEMBER = /"(d|p|q|dp|dq|qi)"\s*:\s*"([A-Za-z0-9_-]{8,})"/g;
/**
 * What src/log.ts writes in place of a token or private key it finds inside logged text: its last
 * line of defence worked, so some code logged a secret as text; the scan names that line.
 */
const SCRUBBED = /\[redacted (?:token|private key)\]/g;
/** What makes an object JWK-like. */
const JWK_MARKERS = [/"kty"\s*:/, /"crv"\s*:/, /"n"\s*:[\s\S]*"e"\s*:|"e"\s*:[\s\S]*"n"\s*:/, /"x"\s*:\s*"[A-Za-z0-9_-]+"/];

/** `abcdefgh…(312 chars)`: enough to recognise, never enough to use. */
export function redact(secret: string, keep = 8): string {
  return `${secret.slice(0, Math.min(keep, Math.floor(secret.length / 4)))}…(${secret.length} chars)`;
}

/** Every secret-looking thing in `text`, by line. */
export function scanText(text: string): Finding[] {
  const findings: Finding[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = i + 1;
    for (const m of raw.matchAll(JWT)) findings.push({ line, column: m.index + 1, kind: 'jwt', preview: redact(m[0]) });
    for (const m of raw.matchAll(PEM_PRIVATE)) findings.push({ line, column: m.index + 1, kind: 'pem-private-key', preview: m[0] });
    for (const m of raw.matchAll(SCRUBBED)) findings.push({ line, column: m.index + 1, kind: 'scrubbed', preview: m[0] });
    // A JWK logged inside a string is JSON-escaped (once or more): read it unescaped. Column
    // numbers then refer to the unescaped line, which is close enough to find it.
    const unescaped = raw.replace(/\\+"/g, '"');
    for (const obj of unescaped.matchAll(FLAT_OBJECT)) {
      if (!JWK_MARKERS.some((marker) => marker.test(obj[0]))) continue;
      for (const m of obj[0].matchAll(PRIVATE_MEMBER)) {
        findings.push({ line, column: obj.index + m.index + 1, kind: 'private-jwk', preview: `"${m[1]}":"${redact(m[2]!, 4)}"` });
      }
    }
  });
  return findings;
}

/** Scans every regular file directly in `dir`. */
export function scanLogDir(dir: string): Finding[] {
  const findings: Finding[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = join(dir, entry.name);
    for (const f of scanText(readFileSync(file, 'utf8'))) findings.push({ ...f, file });
  }
  return findings;
}

/** One line per finding (at most `max`), for the failure message. */
export function formatFindings(findings: Finding[], max = 50): string {
  const lines = findings.slice(0, max).map((f) => `  ${f.file ?? '(text)'}:${f.line}:${f.column}  ${f.kind}  ${f.preview}`);
  if (findings.length > max) lines.push(`  … and ${findings.length - max} more`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// The run's log directory (global setup and teardown, in vitest's main process)

export interface LogCapture {
  dir: string;
  /**
   * Scans the run's logs. Clean: the directory is removed. Otherwise the findings go to stderr,
   * `process.exitCode` becomes 1 and this throws: vitest 4 only reports an error thrown by a
   * global teardown ("error during close") and still exits 0, so the exit code is set here
   * (test/resilience/secrets.test.ts runs a nested vitest to prove the run fails).
   */
  finish(): void;
}

/** `keep` (default: JIT_KEEP_TEST_LOGS is set): a clean run's logs stay too, for reading. */
export function startLogCapture(opts: { keep?: boolean } = {}): LogCapture {
  const keep = opts.keep ?? Boolean(process.env.JIT_KEEP_TEST_LOGS);
  const dir = mkdtempSync(join(tmpdir(), 'jit-broker-test-logs-'));
  return {
    dir,
    finish() {
      const findings = scanLogDir(dir);
      if (findings.length === 0) {
        if (keep) console.error(`test logs kept in ${dir}`);
        else rmSync(dir, { recursive: true, force: true });
        return;
      }
      const message = `secrets found in test logs (${findings.length}; logs kept in ${dir}):\n${formatFindings(findings)}`;
      console.error(`\n${message}\n`);
      process.exitCode = 1;
      throw new Error(message);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// In test workers: where a test's brokers (and children) log

function logDir(): string | undefined {
  try {
    return inject('logDir');
  } catch {
    return undefined; // not under the suite's global setup
  }
}

/** The test file running in this worker, as a file-name-safe label. */
function testFileLabel(): string {
  const path = expect.getState().testPath;
  if (!path) return `worker-${process.env.VITEST_POOL_ID ?? process.pid}`;
  return relative(process.cwd(), path).replace(/[^A-Za-z0-9_.-]+/g, '_');
}

interface CaptureFile {
  fd: number;
  path: string;
  /** Synchronous writes: every line is on disk before the run's teardown scans it. */
  stream: pino.DestinationStream;
}
const files = new Map<string, CaptureFile>();

/** The file (opened once per test file and process) that `label` logs go to. */
function captureFile(label: string): CaptureFile | undefined {
  const dir = logDir();
  if (!dir) return undefined;
  const name = `${label}.${process.pid}.log`;
  let file = files.get(name);
  if (!file) {
    const path = join(dir, name);
    const fd = openSync(path, 'a');
    file = { fd, path, stream: pino.destination({ dest: fd, sync: true }) };
    files.set(name, file);
  }
  return file;
}

/** Path of this test file's capture file (undefined outside the suite's global setup). */
export function captureFilePath(): string | undefined {
  return captureFile(testFileLabel())?.path;
}

/**
 * The logger of a test broker: everything at `trace` into this test file's capture file, plus
 * `destination` (when given) at `level`, as before. Without a log directory: `destination` at
 * `level`, or nothing.
 */
export function testLogger(opts: { level: string; destination?: NodeJS.WritableStream | undefined }): Logger | undefined {
  const file = captureFile(testFileLabel());
  if (!file) return opts.destination ? createLogger({ level: opts.level, destination: opts.destination }) : undefined;
  const streams: pino.StreamEntry[] = [{ level: 'trace', stream: file.stream }];
  if (opts.destination && opts.level !== 'silent') streams.push({ level: opts.level as pino.Level, stream: opts.destination });
  return createLogger({ level: 'trace', destination: pino.multistream(streams) as unknown as NodeJS.WritableStream });
}

/** Copies a child process's stdout and stderr into this test file's capture file, line by line. */
export function captureChildOutput(child: ChildProcess, label: string): void {
  const file = captureFile(testFileLabel());
  if (!file) return;
  const tag = basename(label).replace(/[^A-Za-z0-9_.-]+/g, '_');
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream?.on('data', (d: Buffer) => {
      const text = partial + d.toString('utf8');
      const cut = text.lastIndexOf('\n');
      partial = text.slice(cut + 1);
      if (cut >= 0) writeSync(file.fd, prefixed(tag, text.slice(0, cut)));
    });
    stream?.on('end', () => {
      if (partial) writeSync(file.fd, prefixed(tag, partial));
      partial = '';
    });
  }
}

const prefixed = (tag: string, text: string) => text.split('\n').map((line) => `[${tag}] ${line}\n`).join('');
