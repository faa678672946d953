// `edgellm embed` as a user runs it: the built CLI on a random bert with a WordPiece vocabulary.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { assertCliBuilt, run } from './fixtures/paths.js';
import { cosine, writeEncoder } from './fixtures/random-encoder.js';
import { writeModel } from './fixtures/random-model.js';

t.before(assertCliBuilt);
const dir = mkdtempSync(join(tmpdir(), 'edgellm-embed-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const BERT = { arch: 'bert', nEmbd: 64, nLayer: 2, nHead: 4, nFf: 128, contextLength: 32, pooling: 1 } as const;
const model = writeEncoder({ ...BERT, name: 'embed cli' }, dir, 400);

t.test('--json: one line per text with the whole unit vector, the same as Model.embed', async (t) => {
  const r = run(['embed', '-m', model, '--json', '--threads', '1', 'the cat sat on the mat', 'hello, world!']);
  t.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { index: number; text: string; tokens: number; embedding: number[] });
  t.equal(lines.length, 2);
  t.same(lines.map((l) => [l.index, l.text, l.tokens]), [[0, 'the cat sat on the mat', 8], [1, 'hello, world!', 6]]);
  const m = await loadModel(model, { threads: 1 });
  try {
    for (const l of lines) {
      t.equal(l.embedding.length, 64);
      t.ok(cosine(l.embedding, await m.embed(l.text)) > 0.999999, `${l.text}: the library's vector`);
    }
  } finally {
    m.close();
  }
});

t.test('the summary shows each vector and, for several texts, their cosine similarities', async (t) => {
  const r = run(['embed', '-m', model, 'the cat', 'the cat', 'edge device']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^\[0\] 4 tokens -> 64 dims {2}\[-?\d\.\d{4}, .*, \.\.\., .*\] {2}"the cat"$/m);
  t.match(r.stdout, /cosine similarity \(mean pooling\):\n\[0\] +1\.0000 +1\.0000 +\d/);
});

t.test('bad input is one clear line with its code and exit 2', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['embed', '-m', model, ''], /E_EMPTY_INPUT: the input is empty/],
    [['embed', '-m', model, 'the '.repeat(40)], /E_INPUT_TOO_LONG: the input is 42 tokens, more than the 32 this bert model reads at once; split/],
    [['embed', '-m', join(dir, 'missing.gguf'), 'x'], /E_MODEL_NOT_FOUND/],
  ];
  const { path: decoder } = writeModel(
    { name: 'cli decoder', arch: 'llama', nVocab: 300, nEmbd: 32, nLayer: 1, nHead: 2, nHeadKv: 2, headDim: 16, nFf: 64 },
    dir,
    { vocab: true },
  );
  cases.push([['embed', '-m', decoder, 'x'], /E_NOT_EMBEDDING_MODEL: 'llama' is a generative model/]);
  for (const [args, re] of cases) {
    const r = run(args);
    t.equal(r.status, 2, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    t.match(r.stderr, re);
  }
  const none = run(['embed', '-m', model]);
  t.not(none.status, 0, 'no text is a usage error');
  t.match(none.stderr, /missing required argument 'text'/);
});

t.test('inspect says what an embedding model is: WordPiece, its pooling, no KV cache', async (t) => {
  const r = run(['inspect', model]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /context: +32 tokens per input \(an embedding model: mean pooling, no KV cache\)/);
  t.match(r.stdout, /tokenizer: +WordPiece, 400 tokens/);
  t.match(r.stdout, /memory: .* KV cache 0 B \(/);
  t.notMatch(r.stdout, /tied output/);
});
