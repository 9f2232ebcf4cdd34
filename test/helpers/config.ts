import { parseConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

/** Every problem parseConfig reports for `raw` (empty when it loads). */
export function configProblems(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}
