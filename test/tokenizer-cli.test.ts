// `edgellm tokenize` as a user runs it: the built CLI, real model files, exit codes.
import t from 'tap';
import { join } from 'node:path';
import { assertCliBuilt, modelsDir, requireModels, root, run } from './fixtures/paths.js';

t.before(assertCliBuilt);

t.test('--json prints the ids as one JSON array, BOS included', async (t) => {
  if (!requireModels(t, 'tokenize CLI')) return;
  const r = run(['tokenize', '-m', join(modelsDir, 'TinyLLama-v0-Q4_0.gguf'), '--json', '--', 'Once upon a time']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, '[1,4612,2619,260,647]\n');
});

t.test('--no-bos leaves BOS out', async (t) => {
  if (!requireModels(t, 'tokenize CLI')) return;
  const r = run(['tokenize', '-m', join(modelsDir, 'stories260K.gguf'), '--no-bos', '--json', '--', 'Once upon a time']);
  t.equal(r.status, 0, r.stderr);
  t.same(JSON.parse(r.stdout), [403, 407, 261, 378]);
});

t.test('without --json: one id<TAB>piece line per token, control characters escaped', async (t) => {
  if (!requireModels(t, 'tokenize CLI')) return;
  const r = run(['tokenize', '-m', join(modelsDir, 'vocab', 'ggml-vocab-gpt-2.gguf'), '--', 'Hello\n\tworld']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, '15496\tHello\n198\t\\n\n197\t\\t\n6894\tworld\n');
});

t.test('--parse-special turns special-token text into the token', async (t) => {
  if (!requireModels(t, 'tokenize CLI')) return;
  const m = join(modelsDir, 'stories260K.gguf');
  const plain = JSON.parse(run(['tokenize', '-m', m, '--no-bos', '--json', '--', '<s>a']).stdout) as number[];
  const parsed = JSON.parse(run(['tokenize', '-m', m, '--no-bos', '--json', '--parse-special', '--', '<s>a']).stdout) as number[];
  t.equal(parsed[0], 1);
  t.notOk(plain.includes(1));
});

t.test('a missing -m is E_BAD_ARGUMENT, exit 2', async (t) => {
  const r = run(['tokenize', '--json', '--', 'x']);
  t.equal(r.status, 2);
  t.match(r.stderr, /E_BAD_ARGUMENT: -m\/--model FILE is required/);
});

t.test('model file errors keep the reader\'s E_MODEL_* codes', async (t) => {
  const missing = run(['tokenize', '-m', join(root, 'no-such-model.gguf'), '--', 'x']);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /E_MODEL_NOT_FOUND/);
  if (!requireModels(t, 'tokenize CLI refusal')) return;
  const dup = run(['tokenize', '-m', join(modelsDir, 'vocab', 'ggml-vocab-dbrx.gguf'), '--', 'x']);
  t.equal(dup.status, 2);
  t.match(dup.stderr, /E_MODEL_CORRUPT: .*duplicate key/);
});
