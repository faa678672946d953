// Parity with llama.cpp itself, through node-llama-cpp (pinned; it bundles llama.cpp's
// tokenizer): ids for our own hard strings, with and without special-token parsing, and the
// text llama_detokenize gives back, on every model file it can open.
import t from 'tap';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { modelsDir, requireModels } from './fixtures/paths.js';
import { ggufTokenizer, tiktokenTokenizer } from './fixtures/tokenizer-data.js';
import { PARITY_STRINGS } from './fixtures/tokenizer-strings.js';

const MODELS = [
  'stories260K.gguf',
  'TinyLLama-v0-Q4_0.gguf',
  'llama-2-tiny-random.gguf',
  'vocab/ggml-vocab-llama-spm.gguf',
  'vocab/ggml-vocab-phi-3.gguf',
  'vocab/ggml-vocab-gpt-2.gguf',
];

let llama: Llama | undefined;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});
t.teardown(async () => {
  await llama?.dispose();
});

for (const rel of MODELS) {
  t.test(`${rel}: encode and decode match llama.cpp on ${PARITY_STRINGS.length} strings`, async (t) => {
    if (!requireModels(t, `${rel} llama.cpp parity`)) return;
    const model = await llama!.loadModel({ modelPath: join(modelsDir, rel), vocabOnly: true });
    t.teardown(() => model.dispose());
    const tk = ggufTokenizer(rel);
    let encOk = 0;
    let encTotal = 0;
    let decOk = 0;
    let decTotal = 0;
    for (const text of PARITY_STRINGS) {
      for (const parseSpecial of [false, true]) {
        const expected = Array.from(model.tokenize(text, parseSpecial));
        const got = tk.encode(text, { addBos: false, parseSpecial });
        encTotal++;
        if (JSON.stringify(got) === JSON.stringify(expected)) encOk++;
        else t.same(got, expected, `encode ${JSON.stringify(text)} parseSpecial=${parseSpecial}`);
        for (const unparseSpecial of [false, true]) {
          decTotal++;
          const want = model.detokenize(expected, unparseSpecial);
          const have = tk.decode(expected, { unparseSpecial });
          if (have === want) decOk++;
          else t.equal(have, want, `decode ${JSON.stringify(text)} unparseSpecial=${unparseSpecial}`);
        }
      }
    }
    t.comment(`${rel}: encode ${encOk}/${encTotal}, decode ${decOk}/${decTotal} identical to llama.cpp`);
    t.equal(encOk, encTotal, `encode: ${encOk}/${encTotal}`);
    t.equal(decOk, decTotal, `decode: ${decOk}/${decTotal}`);
  });

  t.test(`${rel}: BOS, EOS, EOT and the end-of-generation set match llama.cpp`, async (t) => {
    if (!requireModels(t, `${rel} special ids`)) return;
    const model = await llama!.loadModel({ modelPath: join(modelsDir, rel), vocabOnly: true });
    t.teardown(() => model.dispose());
    const tk = ggufTokenizer(rel);
    t.equal(tk.bos, model.tokens.bos ?? -1, 'bos');
    t.equal(tk.eos, model.tokens.eos ?? -1, 'eos');
    t.equal(tk.eot, model.tokens.eot ?? -1, 'eot');
    const differ: number[] = [];
    for (let id = 0; id < tk.size; id++) if (tk.isEog(id) !== model.isEogToken(id as Token)) differ.push(id);
    t.same(differ, [], 'isEog agrees for every id');
  });
}

t.test('streaming: token-by-token output equals decode() and round-trips where llama.cpp does', async (t) => {
  if (!requireModels(t, 'stream decoder on real vocabularies')) return;
  const tokenizers: Array<[string, Tokenizer]> = [
    ...MODELS.map((rel): [string, Tokenizer] => [rel, ggufTokenizer(rel)]),
    ['llama-3.tiktoken', tiktokenTokenizer('llama-3.tiktoken')],
    ['qwen.tiktoken', tiktokenTokenizer('qwen.tiktoken')],
  ];
  for (const [name, tk] of tokenizers) {
    let same = 0;
    let roundTrips = 0;
    for (const text of PARITY_STRINGS) {
      const ids = tk.encode(text, { addBos: false });
      const d = tk.decoder();
      let streamed = '';
      for (const id of ids) streamed += d.push(id);
      streamed += d.end();
      if (streamed === tk.decode(ids)) same++;
      else t.equal(streamed, tk.decode(ids), `${name}: stream of ${JSON.stringify(text)}`);
      if (tk.decode(ids) === text) roundTrips++;
    }
    t.equal(same, PARITY_STRINGS.length, `${name}: stream = decode on ${same}/${PARITY_STRINGS.length}`);
    t.comment(`${name}: decode(encode(x)) === x for ${roundTrips}/${PARITY_STRINGS.length} strings`);
  }
});

t.test('round trips: ours fail exactly where llama.cpp\'s fail', async (t) => {
  if (!requireModels(t, 'round trips vs llama.cpp')) return;
  for (const rel of MODELS) {
    const model = await llama!.loadModel({ modelPath: join(modelsDir, rel), vocabOnly: true });
    const tk = ggufTokenizer(rel);
    const differ: string[] = [];
    for (const text of PARITY_STRINGS) {
      const theirs = model.detokenize(model.tokenize(text)) === text;
      const ours = tk.decode(tk.encode(text, { addBos: false })) === text;
      if (theirs !== ours) differ.push(text);
    }
    await model.dispose();
    t.same(differ, [], `${rel}: same round-trip outcome for every string`);
  }
});
