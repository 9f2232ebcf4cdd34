import { readFileSync } from 'node:fs';

/** The package's version (src/util/ and dist/util/ both sit two levels below package.json). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}
