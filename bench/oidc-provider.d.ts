/**
 * The little of oidc-provider (v9, untyped JavaScript) that bench/peer-server.ts uses. Its full
 * configuration is documented at https://github.com/panva/node-oidc-provider/tree/main/docs.
 */
declare module 'oidc-provider' {
  import type { Server } from 'node:http';

  export class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>);
    /** Provider extends Koa: this is Koa's listen. */
    listen(port: number, host: string, callback?: () => void): Server;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
  export default Provider;
}
