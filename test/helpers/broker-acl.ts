import { readFileSync } from 'node:fs';

const PLACEHOLDER = '#@JIT_BROKER_PASSWORD_SHA256@';

/**
 * The rules of the shipped ACL file's `jit-broker` user (deploy/redis/users.acl), for
 * `ACL SETUSER jit-broker ...` on a test node: the password given in clear (`>password`), and the
 * key pattern moved to the test's own prefix (the shipped one is the default `jit:`).
 */
export function brokerAclRules(password: string, prefix: string): string[] {
  const line = readFileSync('deploy/redis/users.acl', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('user jit-broker '));
  if (!line) throw new Error('deploy/redis/users.acl has no jit-broker user');
  const rules = line.split(' ').slice(2);
  if (!rules.includes(PLACEHOLDER) || !rules.includes('~jit:*')) throw new Error('deploy/redis/users.acl: the jit-broker user changed shape');
  return rules.map((r) => (r === PLACEHOLDER ? `>${password}` : r === '~jit:*' ? `~${prefix}*` : r));
}
