/**
 * docker-compose.yml and deploy/Dockerfile as data, for the tests that check them without a Docker
 * engine (test/unit/deploy.test.ts) and run their services as processes (test/e2e/compose-*.test.ts).
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

export interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; target?: string };
  command?: string[];
  volumes?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  ports?: string[];
  profiles?: string[];
  read_only?: boolean;
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

export const COMPOSE_FILE = 'docker-compose.yml';

export function readCompose(): ComposeFile {
  return parseYaml(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as ComposeFile;
}

/** Compose's interpolation of `${NAME}`, `${NAME:-default}` and `${NAME:?message}` (which refuses an unset or empty one). */
export function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\{(\w+)(?::([-?])([^}]*))?\}/g, (_m, name: string, op: string | undefined, arg: string | undefined) => {
    const set = env[name];
    if (set !== undefined && set !== '') return set;
    if (op === '?') throw new Error(`required variable ${name} is missing a value: ${arg}`);
    if (op === '-') return arg ?? '';
    return set ?? '';
  });
}

/** A service's environment as compose gives it, for the host environment `env`. */
export function serviceEnv(service: ComposeService, env: Record<string, string | undefined> = {}): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(String(v), env)]));
}

/** A volume entry split: `SOURCE:TARGET[:ro]`; `named` when SOURCE is a volume name, not a path. */
export function mount(entry: string): { source: string; target: string; readOnly: boolean; named: boolean } {
  const [source = '', target = '', mode] = entry.split(':');
  return { source, target, readOnly: mode === 'ro', named: !/^[./~]/.test(source) };
}

/** The Dockerfile's instructions, one per entry: continuation lines joined, comments and blanks dropped. */
export function dockerfileInstructions(path = 'deploy/Dockerfile'): string[] {
  return readFileSync(path, 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** The argv of the HEALTHCHECK's exec form (`HEALTHCHECK [OPTIONS] CMD ["…", …]`). */
export function healthcheckCommand(path = 'deploy/Dockerfile'): string[] {
  const line = dockerfileInstructions(path).find((l) => l.startsWith('HEALTHCHECK '));
  const json = line && /\sCMD\s+(\[.*\])$/.exec(line)?.[1];
  if (!json) throw new Error(`${path}: no HEALTHCHECK … CMD ["…"] (exec form)`);
  return JSON.parse(json) as string[];
}
