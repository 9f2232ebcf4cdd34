import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { ConfigError } from '../errors.js';
import { configSchema, type Config } from './schema.js';
import { formatPath, type Issue } from '../util/issues.js';
import { coerceEnvValue, didYouMean, EnvValueProblem, keysAt } from './fields.js';

/**
 * Validates a parsed config object; throws ConfigError listing every problem by its path, once:
 * the first problem found at a path is the one reported (a field its own check refuses is not
 * refused again by a check across fields), an unrecognized key is named by its own path with
 * the known key it is closest to, and an env override its field's type refuses is named there.
 */
export function parseConfig(raw: unknown): Config {
  const envProblems = findEnvProblems(raw, []);
  const result = configSchema.safeParse(raw);
  if (result.success && envProblems.length === 0) return result.data;
  const issues: Issue[] = [...envProblems];
  for (const issue of result.success ? [] : result.error.issues) {
    if (issue.code !== 'unrecognized_keys') {
      issues.push(issue);
      continue;
    }
    const known = keysAt(configSchema, issue.path);
    for (const key of issue.keys) {
      const near = didYouMean(key, known);
      issues.push({ path: [...issue.path, key], message: `unrecognized key${near ? ` (did you mean "${near}"?)` : ''}` });
    }
  }
  const seen = new Set<string>();
  const problems: string[] = [];
  for (const issue of issues) {
    const path = formatPath(issue.path);
    if (seen.has(path)) continue;
    seen.add(path);
    problems.push(`${path}: ${issue.message}`);
  }
  throw new ConfigError(problems);
}

function findEnvProblems(value: unknown, path: PropertyKey[]): Issue[] {
  if (value instanceof EnvValueProblem) return [{ path, message: value.message }];
  if (Array.isArray(value)) return value.flatMap((v, i) => findEnvProblems(v, [...path, i]));
  if (value !== null && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => findEnvProblems(v, [...path, k]));
  return [];
}

/**
 * Env overrides: REDIS_URL, JIT_ISSUER, PORT, LOG_LEVEL, the key publication secrets
 * JIT_KEY_PUBLICATION_SECRET and JIT_KEY_PUBLICATION_SECRET_ACCEPTED (as text), and any setting as
 * JIT__<PATH> with `__` between levels, e.g. JIT__TOKENS__DEFAULT_TTL=2m.
 * A value takes the type of the field it sets (config/fields.ts): a string field the text as it
 * is (`JIT__STORE__KEY_PREFIX=jitdeploy:`), a number field a number, a boolean `true`/`false`,
 * and a structured one (a list, a mapping) JSON, e.g. JIT__HTTP__TRUSTED_PROXIES='["10.0.0.0/8"]'.
 * A value its field refuses is reported at the field's path, naming the variable.
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
    const path = name.slice(5).toLowerCase().split('__');
    set(path, coerceEnvValue(configSchema, path, name, value));
  }
  if (env.REDIS_URL) {
    // One server replaces whatever topology the file names.
    const { sentinel: _sentinel, cluster: _cluster, ...store } = (out.store ?? {}) as Record<string, unknown>;
    set(['store'], { ...store, kind: 'redis', url: env.REDIS_URL });
  }
  if (env.JIT_ISSUER) set(['issuer'], env.JIT_ISSUER);
  if (env.PORT) set(['listen', 'port'], coerceEnvValue(configSchema, ['listen', 'port'], 'PORT', env.PORT));
  if (env.LOG_LEVEL) set(['log', 'level'], env.LOG_LEVEL);
  if (env.JIT_KEY_PUBLICATION_SECRET) set(['tokens', 'key_publication_secret'], env.JIT_KEY_PUBLICATION_SECRET);
  if (env.JIT_KEY_PUBLICATION_SECRET_ACCEPTED) set(['tokens', 'key_publication_secret_accepted'], env.JIT_KEY_PUBLICATION_SECRET_ACCEPTED);
  return out;
}

/** A YAML file's content; a file that cannot be read or parsed is a ConfigError naming it (config, policy cases). */
export function readYamlFile(path: string): unknown {
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
    // The parser's whole message: the line and column, and the snippet with its caret.
    const msg = e instanceof YAMLParseError ? e.message.trimEnd() : String(e);
    throw new ConfigError([`${path}: invalid YAML: ${msg}`]);
  }
  return raw;
}

/** Reads the YAML file, applies env overrides, validates. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  const raw = readYamlFile(path);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError([`${path}: must be a YAML mapping`]);
  return parseConfig(applyEnv(raw as Record<string, unknown>, env));
}
