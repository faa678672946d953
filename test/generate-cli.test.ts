// `edgellm generate` and `edgellm profile` as a user runs them: the built entry point, real exit codes.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { assertCliBuilt, cli, modelsDir, requireModel, run, type TapTest } from './fixtures/paths.js';

const stories = join(modelsDir, 'stories260K.gguf');

function haveModel(t: TapTest): boolean {
  return requireModel(t, 'stories260K.gguf', 'generate/profile CLI') !== undefined;
}

t.before(assertCliBuilt);

t.test('generate streams the greedy continuation to stdout and exits 0', async (t) => {
  if (!haveModel(t)) return;
  const child = spawn(process.execPath, [cli, 'generate', '-m', stories, '-p', 'Once upon a time', '-n', '200', '--temperature', '0']);
  const arrivals: number[] = [];
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    arrivals.push(performance.now());
    out += d;
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((res) => child.on('close', res));
  t.equal(code, 0, err);
  t.ok(out.startsWith(', there was a little girl named Lily'), out);
  t.ok(arrivals.length > 1, `stdout arrived in ${arrivals.length} writes (streamed)`);
  t.equal(err, '', 'quiet on stderr when it is not a terminal');
});

t.test('generate --chat and sampling flags run', async (t) => {
  if (!haveModel(t)) return;
  const r = run(['generate', '-m', stories, '-p', 'Hello', '--chat', '-n', '8', '--temperature', '1', '--top-p', '0.9', '--top-k', '20', '--seed', '7']);
  t.equal(r.status, 0, r.stderr);
  const again = run(['generate', '-m', stories, '-p', 'Hello', '--chat', '-n', '8', '--temperature', '1', '--top-p', '0.9', '--top-k', '20', '--seed', '7']);
  t.equal(again.stdout, r.stdout, 'the same seed gives the same text');
});

t.test('generate errors are one line and a non-zero exit', async (t) => {
  const missing = run(['generate', '-m', 'no-such-model.gguf', '-p', 'x']);
  t.equal(missing.status, 2);
  t.equal(missing.stderr.trim().split('\n').length, 1);
  t.match(missing.stderr, /E_MODEL_NOT_FOUND/);
  const badFlag = run(['generate', '-m', stories, '-p', 'x', '--temperature', 'hot']);
  t.equal(badFlag.status, 2);
  t.match(badFlag.stderr, /--temperature takes a number/);
  if (!haveModel(t)) return;
  const tooLong = run(['generate', '-m', stories, '-p', 'x', '-n', '100000']);
  t.equal(tooLong.status, 2);
  t.equal(tooLong.stderr.trim().split('\n').length, 1);
  t.match(tooLong.stderr, /E_PROMPT_TOO_LONG/);
  const badTopP = run(['generate', '-m', stories, '-p', 'x', '--top-p', '0']);
  t.equal(badTopP.status, 2);
  t.match(badTopP.stderr, /E_BAD_REQUEST: top_p/);
});

t.test('profile prints latency, memory and throughput lines', async (t) => {
  if (!haveModel(t)) return;
  const r = run(['profile', '-m', stories, '-p', 'Once upon a time', '--runs', '3', '-n', '16']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^Latency: \d+ms \(95th percentile: \d+ms\)$/m);
  t.match(r.stdout, /^Memory: Peak \d+(\.\d)?[MG]B \(RSS\)$/m);
  t.match(r.stdout, /^Token Throughput: \d+\.\d tokens\/sec$/m);
});

t.test('profile --json is one valid object with the chosen metrics', async (t) => {
  if (!haveModel(t)) return;
  const r = run(['profile', '-m', stories, '-p', 'Once upon a time', '--runs', '2', '-n', '8', '--json', '--metrics', 'latency,token_throughput']);
  t.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Record<string, unknown>;
  t.equal(report.runs, 2);
  t.ok((report.latency_ms as { p95: number }).p95 > 0);
  t.ok((report.token_throughput as { tokens_per_s: number }).tokens_per_s > 0);
  t.notOk('memory' in report, 'only the metrics asked for');
  const bad = run(['profile', '-m', stories, '-p', 'x', '--metrics', 'power']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /--metrics takes a list/);
});
