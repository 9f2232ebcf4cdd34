import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { inject } from 'vitest';

/**
 * Real Redis for tests: a `redis-server` child on a free loopback port (or REDIS_URL when given).
 * Never a mock. The global setup and the resilience tests share `startRedisServer`.
 */

/** URL of the suite's shared Redis (from the global setup). */
export function redisUrl(): string {
  return inject('redisUrl');
}

/** A key prefix no other test file (or run) shares: `test:<name>:<random>:`. */
export function uniquePrefix(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40);
  return `test:${safe}:${randomBytes(6).toString('hex')}:`;
}

export interface RedisProcess {
  readonly url: string;
  readonly port: number;
  /** PID of the current child (changes on restart). */
  readonly pid: number;
  /** SIGTERM, then wait for exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL, then wait for exit (simulates a crash). Idempotent. */
  kill(): Promise<void>;
  /**
   * Stops the current server (SIGTERM; a no-op after `kill`), starts a new one on the same port
   * with the same arguments and waits until it answers PING. Data is kept only when `args`
   * configure persistence (e.g. `--appendonly yes --dir <private dir>`); by default it is not.
   */
  restart(): Promise<void>;
}

export interface StartRedisOptions {
  /** Port to listen on; default: a free loopback port. */
  port?: number;
  /** How long to wait for the first PONG. Default 5 s. */
  readyTimeoutMs?: number;
  /**
   * Extra redis-server arguments, appended after the defaults so they override them, e.g.
   * `['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir]` for writes that survive
   * SIGKILL once acknowledged. Give persistent servers a private `--dir`.
   */
  args?: readonly string[];
  /**
   * A config file, passed first as redis-server wants it (a sentinel reads its monitors there and
   * rewrites it, so give it a private writable one). The defaults and `args` still override it.
   */
  configFile?: string;
}

const BIN = process.env.REDIS_SERVER_BIN ?? 'redis-server';

/** A free loopback TCP port: listen on port 0, read the port, close. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      srv.close(() => resolve(addr.port));
    });
  });
}

/** Sends one inline PING and resolves true once the server answers: +PONG, or -NOAUTH when its default user is off (false on any error or after 500 ms). */
function pingOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 500);
    sock.once('error', () => done(false));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG') || buf.startsWith('-NOAUTH'));
    });
    sock.once('connect', () => sock.write('PING\r\n'));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}

function spawnServer(port: number, extraArgs: readonly string[], configFile?: string): Running {
  const child = spawn(
    BIN,
    [...(configFile ? [configFile] : []), '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', '--dir', tmpdir(), ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const collect = (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return { child, exited, output: () => out };
}

async function waitReady(run: Running, port: number, timeoutMs: number): Promise<void> {
  let spawnError: Error | undefined;
  run.child.once('error', (e) => {
    spawnError = e;
  });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnError) {
      const code = (spawnError as NodeJS.ErrnoException).code;
      throw new Error(
        code === 'ENOENT'
          ? `redis-server is not installed (could not run "${BIN}"); install it or set REDIS_URL`
          : `could not start redis-server: ${spawnError.message}`,
      );
    }
    if (run.child.exitCode !== null || run.child.signalCode !== null) {
      throw new Error(`redis-server exited during start (code ${run.child.exitCode}, signal ${run.child.signalCode}):\n${run.output()}`);
    }
    if (await pingOnce(port)) return;
    await sleep(50);
  }
  run.child.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms:\n${run.output()}`);
}

/** Children alive in this process; killed if the process exits without stopping them. */
const alive = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  alive.add(child);
  child.once('exit', () => alive.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of alive) c.kill('SIGKILL');
    });
  }
}

/**
 * Starts a private `redis-server` on loopback (no persistence unless `args` ask for it) and
 * waits until it answers PING.
 * `stop`/`kill` signal exactly this child's PID; `restart` starts a new one on the same port.
 */
export async function startRedisServer(opts: StartRedisOptions = {}): Promise<RedisProcess> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 5000;
  let port = opts.port ?? (await freePort());

  const launch = async (p: number): Promise<Running> => {
    const r = spawnServer(p, opts.args ?? [], opts.configFile);
    track(r.child);
    try {
      await waitReady(r, p, readyTimeoutMs);
      return r;
    } catch (e) {
      r.child.kill('SIGKILL');
      await r.exited;
      throw e;
    }
  };

  let run: Running;
  // The port found free may be taken again before redis binds it; retry a few times then.
  for (let attempt = 0; ; attempt++) {
    try {
      run = await launch(port);
      break;
    } catch (e) {
      if (opts.port !== undefined || attempt >= 2 || !/address already in use/i.test((e as Error).message)) throw e;
      port = await freePort();
    }
  }

  const halt = async (signal: NodeJS.Signals) => {
    const current = run;
    if (current.child.exitCode === null && current.child.signalCode === null) current.child.kill(signal);
    await current.exited;
  };

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      const pid = run.child.pid;
      if (pid === undefined) throw new Error('redis-server has no pid');
      return pid;
    },
    stop: () => halt('SIGTERM'),
    kill: () => halt('SIGKILL'),
    async restart() {
      await halt('SIGTERM');
      run = await launch(port);
    },
  };
}

/** The key publication secret of test brokers and stores (never a real one; see key-publication.ts). */
export const TEST_KEY_PUBLICATION_SECRET = 'test-key-publication-secret-0123456789abcdef';
export const TEST_KEY_PUBLICATION_SECRETS: readonly string[] = [TEST_KEY_PUBLICATION_SECRET];
