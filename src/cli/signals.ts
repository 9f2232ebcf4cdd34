/**
 * Closes a long-running command (serve, dev) on SIGINT or SIGTERM, then exits 0.
 *
 * The handlers stay installed while closing: a Ctrl-C under `npm run` reaches the broker twice
 * (from the terminal to the whole process group, and again forwarded by npm), and a second
 * signal must not kill the process with its default action before it has cleaned up.
 */
export function onSignal(close: () => Promise<void>): void {
  let closing = false;
  const stop = () => {
    if (closing) return;
    closing = true;
    void close().finally(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
