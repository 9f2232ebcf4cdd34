/** Closes a long-running command (serve, dev) on SIGINT or SIGTERM, then exits 0. */
export function onSignal(close: () => Promise<void>): void {
  const stop = () => {
    void close().finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
