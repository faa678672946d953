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
  // A prompt that alone fills the context: the error speaks of flags, not of API fields.
  const tooLong = run(['generate', '-m', stories, '-p', 'Once upon a time there was a little girl who liked to play', '--context', '8']);
  t.equal(tooLong.status, 2);
  t.equal(
    tooLong.stderr,
    'edgellm: E_PROMPT_TOO_LONG: -p (19 tokens) leaves no room to generate in a context of 8 tokens (--context 8): ' +
      'shorten the prompt, or raise --context (up to 2048, what the model was trained on)\n',
  );
  t.notMatch(tooLong.stderr, /contextSize|max_tokens/);
  const badTopP = run(['generate', '-m', stories, '-p', 'x', '--top-p', '0']);
  t.equal(badTopP.status, 2);
  t.match(badTopP.stderr, /E_BAD_REQUEST: top_p/);
});

t.test('generate stops at the end of the context with finish reason length and says so on stderr', async (t) => {
  if (!haveModel(t)) return;
  // As llama.cpp: -n beyond the context is not an error; the text ends where the context does.
  const r = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '5000', '--context', '64', '--temperature', '0']);
  t.equal(r.status, 0, r.stderr);
  t.equal(
    r.stderr,
    'edgellm: stopped at the end of the context (finish reason length): 5 prompt + 59 generated = 64 tokens, fewer than -n 5000; raise --context for more\n',
  );
  const exact = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '59', '--context', '64', '--temperature', '0']);
  t.equal(exact.status, 0, exact.stderr);
  t.equal(r.stdout, exact.stdout, 'the same text as -n 59, the room the context had');
  t.equal(exact.stderr, '', 'an -n that fits: no note');
});

t.test('generate --stop, --min-p, --system and --max-tokens work', async (t) => {
  if (!haveModel(t)) return;
  const greedy = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '20', '--temperature', '0']);
  t.equal(greedy.status, 0, greedy.stderr);
  t.equal(greedy.stdout, ', there was a little girl named Lily. She loved to play outsid\n');
  const long = run(['generate', '-m', stories, '-p', 'Once upon a time', '--max-tokens', '20', '--temperature', '0']);
  t.equal(long.stdout, greedy.stdout, '--max-tokens is -n');
  const stopped = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '20', '--temperature', '0', '--stop', 'Lily', '--stop', 'little']);
  t.equal(stopped.stdout, ', there was a \n', 'cut before the first stop string, which is not printed');
  // min_p 1 keeps only the most likely token: any seed and temperature gives the greedy text.
  for (const seed of ['1', '2', '3']) {
    const minP = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '20', '--temperature', '5', '--min-p', '1', '--seed', seed]);
    t.equal(minP.stdout, greedy.stdout, `--min-p 1 is greedy (seed ${seed})`);
  }
  const hot = run(['generate', '-m', stories, '-p', 'Once upon a time', '-n', '20', '--temperature', '5', '--top-k', '0', '--top-p', '1', '--min-p', '0', '--seed', '1']);
  t.not(hot.stdout, greedy.stdout, 'without it, temperature 5 samples something else');
  const chat = run(['generate', '-m', stories, '-p', 'Hello', '--chat', '-n', '12', '--temperature', '0']);
  const system = run(['generate', '-m', stories, '-p', 'Hello', '--system', 'You tell stories about dragons.', '-n', '12', '--temperature', '0']);
  t.equal(system.status, 0, system.stderr);
  t.not(system.stdout, chat.stdout, '--system changes the chat the model sees');
  const badStop = run(['generate', '-m', stories, '-p', 'x', '--stop', '']);
  t.equal(badStop.stderr, 'edgellm: E_BAD_ARGUMENT: --stop takes some text, got ""\n');
  const badMinP = run(['generate', '-m', stories, '-p', 'x', '--min-p', '2']);
  t.equal(badMinP.stderr, 'edgellm: E_BAD_ARGUMENT: --min-p takes a number from 0 to 1, got "2"\n');
});

t.test('Ctrl-C during generate prints what was generated and exits 130', async (t) => {
  const path = requireModel(t, 'TinyLLama-v0-Q4_0.gguf', 'generate SIGINT');
  if (!path) return;
  // 2000 tokens take ~0.5 s at the fastest; Ctrl-C comes at the first chunk.
  const child = spawn(process.execPath, [cli, 'generate', '-m', path, '-p', 'Once upon a time', '-n', '2000', '--temperature', '0']);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    if (out === '') child.kill('SIGINT');
    out += d;
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((res) => child.on('close', res));
  t.equal(code, 130, `exit 130 (stderr: ${err})`);
  t.ok(out.length > 0 && out.endsWith('\n'), 'the text so far was printed, and a newline');
  const full = run(['generate', '-m', path, '-p', 'Once upon a time', '-n', '2000', '--temperature', '0']);
  t.ok(full.stdout.length > out.length && full.stdout.startsWith(out.slice(0, -1)), 'a prefix of the whole greedy text');
  t.equal(err, '', 'no error line: an interruption is not an error');
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
