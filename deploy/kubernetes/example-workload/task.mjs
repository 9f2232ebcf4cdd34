// The example workload: every minute, starts a task with its projected service-account token,
// says what it was granted (never the token itself), and ends the task. It runs in the jit-broker
// image and uses the SDK built into it.
/* global process, console, setTimeout -- Node.js */
/* eslint no-console: "off" -- the workload's log is its console */
import { readFileSync } from 'node:fs';
import { BrokerClient, platformToken } from '/app/dist/sdk/index.js';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const client = new BrokerClient({
  url: env('JIT_URL'),
  ca: readFileSync(env('JIT_CA'), 'utf8'),
  attestation: platformToken({ file: env('JIT_TOKEN_FILE') }),
});
const intent = JSON.parse(env('TASK_INTENT'));

for (;;) {
  try {
    const task = await client.startTask(intent, { ttl: '5m', lifetime: '15m' });
    console.log(`task started: grant ${task.grant}, token valid until ${task.expiresAt.toISOString()}`);
    try {
      // The task's work goes here: call reports-api with `Authorization: Bearer ${await task.token()}`,
      // or with task.fetch(url), which adds it.
    } finally {
      await task.end(); // the grant expires now
    }
    console.log(`task ended: grant ${task.grant}`);
  } catch (e) {
    console.error(`task failed: ${e instanceof Error ? e.message : String(e)}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 60_000));
}
