// `npm run ab-report -- --state-dir DIR [--since-hours H] [--json]`: how each A/B variant did, from the
// daemon's SQLite store (<DIR>/edgellm.db), opened read-only (safe while the daemon runs: WAL). It reads
// the audit log's request records, which keep per request the A/B name (variant_of), the variant, the
// outcome, arrival-to-final-reply time (total_ms), the decode rate (tokens_per_s) and whether the cache
// answered (cached). Per variant: requests, mean tokens/s of generated answers, p95 latency of answered
// requests, error rate (errors and refusals after the variant was chosen), cache hit rate.
// Runs on the built package (npm run build): the summary is src/policy/variants.ts's.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { summarizeVariants } from '../dist/policy/variants.js';
import { printVariants } from '../dist/cli/audit.js';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const fail = (msg) => {
  process.stderr.write(`ab-report: ${msg}\n`);
  process.exit(2);
};
const stateDir = opt('--state-dir');
if (!stateDir) fail('--state-dir DIR is required: the daemon\'s state_dir (the directory of edgellm.db)');
const file = join(stateDir, 'edgellm.db');
if (!existsSync(file)) fail(`${file} does not exist: is ${stateDir} the daemon's state_dir?`);
const hours = opt('--since-hours');
if (hours !== undefined && !(Number(hours) > 0)) fail(`--since-hours takes a number of hours > 0, got "${hours}"`);
const since = hours !== undefined ? Date.now() - Number(hours) * 3600_000 : 0;

const db = new Database(file, { readonly: true, fileMustExist: true });
try {
  const rows = db.prepare("SELECT record FROM audit WHERE type = 'request' AND time >= ? ORDER BY time, seq").all(since);
  printVariants(summarizeVariants(rows.map((r) => JSON.parse(r.record))), args.includes('--json'));
} finally {
  db.close();
}
