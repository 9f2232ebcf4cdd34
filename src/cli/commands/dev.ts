import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEV_SPIFFE_ID, startDevMode } from '../../dev/dev-mode.js';
import { createLogger } from '../../log.js';
import { onSignal } from '../signals.js';
import { UsageError, type Command } from '../usage.js';

export const dev: Command = {
  name: 'dev',
  help: `usage: jit-broker dev [--port N]

Dev mode: an HTTPS broker with a memory store, a demo OIDC issuer, a throwaway dev CA and a demo
policy; no Redis or config needed. Prints copy-paste curls for a task token, an mTLS task token
and the operator API as a demo operator (role admin), and an export line with the demo operator's
and the demo resource server's credentials (audience reports-api: introspection, revocation and the
SDK examples), both random per run. Ctrl-C stops it.

options:
  -p, --port N   listen port (default 8080, or PORT; 0 picks a free one)`,
  async run(args) {
    const { values } = parseArgs({ args, options: { port: { type: 'string', short: 'p' } }, allowPositionals: false });
    const raw = values.port ?? process.env.PORT;
    const port = raw !== undefined ? Number(raw) : undefined;
    if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw new UsageError('--port must be a port number (0 picks a free one)');
    const log = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
    const mode = await startDevMode({ log, ...(port !== undefined ? { port } : {}) });
    process.stdout.write(
      [
        `jit-broker dev mode listening on ${mode.broker.url} (memory store, demo issuer ${mode.issuer.issuer}, dev CA in ${mode.certificates.dir})`,
        'Get a task token for the demo workload k8s://dev/ns/demo/sa/report-builder (platform token):',
        '',
        `  ${mode.curl}`,
        '',
        `Get a certificate-bound task token for ${DEV_SPIFFE_ID} (mTLS with its X.509-SVID):`,
        '',
        `  ${mode.curlMtls}`,
        '',
        `Operator API as the demo operator "${mode.operator.name}" (role admin; its credential is random, made for this run): who holds what right now:`,
        '',
        `  ${mode.curlOperator}`,
        '',
        `For the operator CLI and the README's examples, paste this into another shell (JIT_RS_CREDENTIAL is the demo resource server "${mode.resourceServer.name}"'s, audience ${mode.resourceServer.audience}: it may introspect and revoke; random, made for this run):`,
        '',
        `  export JIT_URL=${mode.broker.url} JIT_CA='${mode.certificates.ca}' JIT_OPERATOR_CREDENTIAL=${mode.operator.credential} JIT_RS_CREDENTIAL=${mode.resourceServer.credential}`,
        '',
        '  then: npx jit-broker grants ls   (workloads ls, audit ls, keys ls, ...; add --json for scripts)',
        '  or the SDK examples, each in its own shell: npm run example:resource-server, then npm run example:workload',
        '',
        'Keys: ' + `${mode.broker.url}/.well-known/jwks.json` + '   Ctrl-C to stop.',
        '',
      ].join('\n'),
    );
    // Removed on every exit, not only a clean close: the dir holds the dev CA's and server's keys.
    process.once('exit', () => rmSync(mode.certificates.dir, { recursive: true, force: true }));
    onSignal(() => mode.close());
    return -1;
  },
};
