import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ConfigError } from '../errors.js';
import { configSchema, type Config } from './schema.js';
import { issuesToProblems } from '../util/issues.js';

/** Validates a parsed config object; throws ConfigError listing every problem by its path. */
export function parseConfig(raw: unknown): Config {
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(issuesToProblems(result.error.issues));
  return result.data;
}

/**
 * Env overrides: REDIS_URL, JIT_ISSUER, PORT, LOG_LEVEL, the key publication secrets
 * JIT_KEY_PUBLICATION_SECRET and JIT_KEY_PUBLICATION_SECRET_ACCEPTED (as text), and any setting as
 * JIT__<PATH> with `__` between levels, e.g. JIT__TOKENS__DEFAULT_TTL=2m.
 * Values are parsed as YAML scalars so numbers and booleans keep their type.
 */
export function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out = structuredClone(raw);
  const set = (path: string[], value: unknown) => {
    let node: Record<string, unknown> = out;
    for (const key of path.slice(0, -1)) {
      const next = node[key];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || !name.startsWith('JIT__')) continue;
    set(name.slice(5).toLowerCase().split('__'), parseYaml(value));
  }
  if (env.REDIS_URL) set(['store'], { ...(out.store as object), kind: 'redis', url: env.REDIS_URL });
  if (env.JIT_ISSUER) set(['issuer'], env.JIT_ISSUER);
  if (env.PORT) set(['listen', 'port'], Number(env.PORT));
  if (env.LOG_LEVEL) set(['log', 'level'], env.LOG_LEVEL);
  if (env.JIT_KEY_PUBLICATION_SECRET) set(['tokens', 'key_publication_secret'], env.JIT_KEY_PUBLICATION_SECRET);
  if (env.JIT_KEY_PUBLICATION_SECRET_ACCEPTED) set(['tokens', 'key_publication_secret_accepted'], env.JIT_KEY_PUBLICATION_SECRET_ACCEPTED);
  return out;
}

/** Reads the YAML file, applies env overrides, validates. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { uniqueKeys: true });
  } catch (e) {
    const msg = e instanceof YAMLParseError ? e.message.split('\n')[0] : String(e);
    throw new ConfigError([`${path}: invalid YAML: ${msg}`]);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError([`${path}: must be a YAML mapping`]);
  return parseConfig(applyEnv(raw as Record<string, unknown>, env));
}
