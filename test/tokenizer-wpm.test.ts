// WordPiece (tokenizer.ggml.model = "bert"): ids identical to llama.cpp's WPM tokenizer (through
// node-llama-cpp, pinned) on the random encoders' vocabulary, for the shared hard strings and
// BERT-specific ones; and the behaviours of BERT's basic tokenizer one by one.
// (../shared/models has no WordPiece vocabulary: llama.cpp's ggml-vocab-bert-bge was left out,
// see SOURCES.md, so the vocabulary is the one test/fixtures/random-encoder.ts writes.)
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo } from '../src/engine/gguf.js';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { disposeLlamaCpp, llamaCpp } from './fixtures/parity.js';
import { WP, writeEncoder } from './fixtures/random-encoder.js';
import { PARITY_STRINGS } from './fixtures/tokenizer-strings.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-wpm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
t.teardown(disposeLlamaCpp);

const SMALL = { arch: 'bert', nEmbd: 16, nLayer: 1, nHead: 2, nFf: 32, contextLength: 64, pooling: 1 } as const;
const path = writeEncoder({ ...SMALL, name: 'wpm vocab' }, dir, 300);
const tk = Tokenizer.fromMetadata(readGgufInfo(path).metadata);
const id = (piece: string) => tk.vocab.tokenToId.get(piece)!;

const WPM_STRINGS = [
  'the cat sat on the mat',
  'The CAT Sat',
  'unaffable',
  'embedding edge devices',
  'hello, world! (really?)',
  'x=1; y>2 & z<3 | a^b ~c `d` {e} [f] #g @h $i %j *k +l /m _n',
  'Café café CAFÉ naïve',
  'e\u0301 \u00e9 E\u0301',
  '中文 and 中',
  'w7 w8 w9w10 w11',
  'zzz unknownword the',
  '\u0000\ufffd\u0007 control \u200b zero width',
  '[CLS] the [SEP] cat [MASK]',
  'tab\tnew\nline\r\nend',
];

const NORMALIZERS = [
  { name: 'cased', normalizer: { lowercase: false } },
  { name: 'lowercase, accents kept', normalizer: { lowercase: true, stripAccents: false } },
  { name: 'cased, accents stripped', normalizer: { lowercase: false, stripAccents: true } },
];
for (const { name, normalizer } of NORMALIZERS) {
  t.test(`tokenizer.ggml.normalizer ${name}: encode matches llama.cpp`, async (t) => {
    const file = writeEncoder({ ...SMALL, name: `wpm ${name}`, normalizer }, dir, 300);
    const model = await (await llamaCpp()).loadModel({ modelPath: file, vocabOnly: true });
    t.teardown(() => model.dispose());
    const mine = Tokenizer.fromMetadata(readGgufInfo(file).metadata);
    const differ = [...PARITY_STRINGS, ...WPM_STRINGS].filter(
      (text) => JSON.stringify(mine.encode(text, { addBos: false, addEos: false })) !== JSON.stringify(Array.from(model.tokenize(text))),
    );
    t.same(differ, [], 'every string identical');
  });
}

t.test('encode matches llama.cpp on the WordPiece vocabulary, with and without special-token parsing', async (t) => {
  const model = await (await llamaCpp()).loadModel({ modelPath: path, vocabOnly: true });
  t.teardown(() => model.dispose());
  let same = 0, total = 0;
  for (const text of [...PARITY_STRINGS, ...WPM_STRINGS]) {
    for (const parseSpecial of [false, true]) {
      const expected = Array.from(model.tokenize(text, parseSpecial));
      const got = tk.encode(text, { addBos: false, addEos: false, parseSpecial });
      total++;
      if (JSON.stringify(got) === JSON.stringify(expected)) same++;
      else t.same(got, expected, `encode ${JSON.stringify(text)} parseSpecial=${parseSpecial}`);
    }
  }
  t.equal(same, total, `${same}/${total} identical`);
  t.equal(tk.bos, model.tokens.bos, '[CLS] is BOS');
  t.equal(tk.vocab.sep, model.tokens.sep, '[SEP]');
});

t.test('an input is framed as [CLS] ... [SEP] by default', async (t) => {
  t.same(tk.encode('the cat'), [WP.CLS, id('\u2581the'), id('\u2581cat'), WP.SEP]);
  t.same(tk.encode(''), [WP.CLS, WP.SEP]);
});

t.test('a word is cut into the longest pieces, continuations without the phantom space', async (t) => {
  t.same(tk.encode('unaffable', { addBos: false, addEos: false }), [id('\u2581un'), id('aff'), id('able')]);
  t.same(tk.encode('embedding', { addBos: false, addEos: false }), [id('\u2581embed'), id('ding')]);
});

t.test('tokenizer.ggml.normalizer.lowercase = false keeps case and accents (strip_accents follows it)', async (t) => {
  const meta = { ...readGgufInfo(path).metadata, 'tokenizer.ggml.normalizer.lowercase': false };
  const cased = Tokenizer.fromMetadata(meta);
  t.same(cased.encode('Cat c\u00e9', { addBos: false, addEos: false }), [WP.UNK, id('\u2581c'), id('\u00e9')]);
  const stripped = Tokenizer.fromMetadata({ ...meta, 'tokenizer.ggml.normalizer.strip_accents': true });
  t.same(stripped.encode('c\u00e9', { addBos: false, addEos: false }), [id('\u2581c'), id('e')]);
});

t.test('a word that no pieces cover entirely is one [UNK]; its neighbours are unaffected', async (t) => {
  t.same(tk.encode('the q\u00fe cat', { addBos: false, addEos: false }), [id('\u2581the'), WP.UNK, id('\u2581cat')]);
});

t.test('lowercase, accents stripped; punctuation and CJK ideographs are words of their own', async (t) => {
  t.same(tk.encode('CAT,sat!', { addBos: false, addEos: false }), [id('\u2581cat'), id('\u2581,'), id('\u2581sat'), id('\u2581!')]);
  t.same(tk.encode('a中b', { addBos: false, addEos: false }), [id('\u2581a'), id('\u2581中'), id('\u2581b')]);
  // é becomes e and a written-out combining accent is dropped: the pieces "é" and U+0301 in the
  // vocabulary are never used.
  t.same(tk.encode('\u00e9 e\u0301', { addBos: false, addEos: false }), [id('\u2581e'), id('\u2581e')]);
});
