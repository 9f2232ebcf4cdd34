// Just the SDK row of the bench: `npx tsx bench/measure-sdk-token.ts` (the full bench: npm run bench).
import { measureClientToken } from './sdk.js';

const cost = await measureClientToken();
console.log(`SDK task.token() on a live task: ${cost.opsPerSec}/s, ${cost.usPerOp} µs per call`);
