// llama.cpp's own tokenizer test vectors (models/ggml-vocab-*.gguf.inp/.out) and the known
// prompts of the real models in ../shared/models: every case must give exactly the listed ids.
import t from 'tap';
import { join } from 'node:path';
import { readGgufInfo } from '../src/engine/gguf.js';
import { EdgeError } from '../src/errors.js';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { readGgufFileInfo } from 'node-llama-cpp';
import { modelsDir, requireModels } from './fixtures/paths.js';
import { ggufTokenizer, tiktokenTokenizer, vocabCases, vocabDir } from './fixtures/tokenizer-data.js';

type TapTest = Parameters<Extract<Parameters<typeof t.test>[0], (...args: never[]) => unknown>>[0];

/** Runs every case of a .inp/.out pair and reports "passed / total" for the file. */
function checkCases(t: TapTest, caseFile: string, tk: Tokenizer): void {
  const cases = vocabCases(caseFile);
  let passed = 0;
  for (const c of cases) {
    const got = tk.encode(c.text, { addBos: false });
    if (JSON.stringify(got) === JSON.stringify(c.ids)) passed++;
    else t.same(got, c.ids, `${caseFile}: ${JSON.stringify(c.text)}`);
  }
  t.comment(`${caseFile}: ${passed}/${cases.length} cases pass`);
  t.equal(passed, cases.length, `${caseFile}: ${passed}/${cases.length} cases pass`);
}

for (const file of ['ggml-vocab-llama-spm.gguf', 'ggml-vocab-phi-3.gguf', 'ggml-vocab-gpt-2.gguf']) {
  t.test(`${file}: every llama.cpp test case gives the expected ids`, async (t) => {
    if (!requireModels(t, `${file} vectors`)) return;
    checkCases(t, file, ggufTokenizer(join('vocab', file)));
  });
}

t.test('llama-2-tiny-random.gguf has the Llama-2 vocabulary: the llama-spm cases hold for it', async (t) => {
  if (!requireModels(t, 'llama-2-tiny-random vectors')) return;
  checkCases(t, 'ggml-vocab-llama-spm.gguf', ggufTokenizer('llama-2-tiny-random.gguf'));
});

t.test('ggml-vocab-llama-bpe cases through llama-3.tiktoken and the llama-bpe pre-tokenizer', async (t) => {
  if (!requireModels(t, 'llama-bpe vectors')) return;
  checkCases(t, 'ggml-vocab-llama-bpe.gguf', tiktokenTokenizer('llama-3.tiktoken'));
});

for (const file of ['ggml-vocab-qwen2.gguf', 'ggml-vocab-deepseek-r1-qwen.gguf']) {
  t.test(`${file} cases through qwen.tiktoken and the qwen2 pre-tokenizer`, async (t) => {
    if (!requireModels(t, `${file} vectors`)) return;
    checkCases(t, file, tiktokenTokenizer('qwen.tiktoken'));
  });
}

t.test('ggml-vocab-dbrx.gguf: our reader refuses its duplicate key, as llama.cpp does', async (t) => {
  if (!requireModels(t, 'dbrx refusal')) return;
  const path = join(vocabDir, 'ggml-vocab-dbrx.gguf');
  let err: unknown;
  try {
    readGgufInfo(path);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof EdgeError, 'an EdgeError');
  t.equal((err as EdgeError).code, 'E_MODEL_CORRUPT');
  t.match((err as Error).message, /duplicate key/);
});

t.test('ggml-vocab-dbrx.gguf cases, with the metadata read by a reader that tolerates its duplicate key', async (t) => {
  if (!requireModels(t, 'dbrx vectors')) return;
  // The file repeats general.file_type with the same value; node-llama-cpp's JS metadata reader
  // keeps going, so the vocabulary (cl100k, Llama-3 regex) can still be checked against its .out.
  const info = await readGgufFileInfo(join(vocabDir, 'ggml-vocab-dbrx.gguf'), { readTensorInfo: false });
  const tk = Tokenizer.fromMetadata(flatten(info.metadata as Record<string, unknown>));
  t.equal(tk.vocab.pre?.name, 'dbrx');
  checkCases(t, 'ggml-vocab-dbrx.gguf', tk);
});

t.test('TinyLLama-v0: "Once upon a time" with BOS is 1 4612 2619 260 647', async (t) => {
  if (!requireModels(t, 'TinyLLama-v0 prompt')) return;
  const tk = ggufTokenizer('TinyLLama-v0-Q4_0.gguf');
  t.same(tk.encode('Once upon a time'), [1, 4612, 2619, 260, 647]);
  t.equal(tk.decode([1, 4612, 2619, 260, 647, 31844, 635]), ' Once upon a time, there');
  t.equal(tk.decode([4612, 2619, 260, 647]), 'Once upon a time');
});

t.test("stories260K: 'Once upon a time' without BOS is 403 407 261 378", async (t) => {
  if (!requireModels(t, 'stories260K prompt')) return;
  const tk = ggufTokenizer('stories260K.gguf');
  t.same(tk.encode('Once upon a time', { addBos: false }), [403, 407, 261, 378]);
  t.same(tk.encode('Once upon a time'), [1, 403, 407, 261, 378], 'BOS by default (SentencePiece)');
  t.equal(tk.bos, 1);
  t.equal(tk.eos, 2);
  t.ok(tk.isEog(2));
  t.notOk(tk.isEog(1));
  // The reference greedy continuation decodes to the README text.
  const ids = [403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
  t.equal(tk.decode([1, ...ids]), ' Once upon a time, there was a little girl named Lily.');
});

t.test('the shared folder is found relative to the repository', async (t) => {
  if (!requireModels(t, 'folder check')) return;
  t.match(modelsDir, /shared[\\/]models$/);
});

/** node-llama-cpp nests metadata by dotted key; the GGUF reader's shape is flat. */
function flatten(o: Record<string, unknown>, prefix = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      flatten(v as Record<string, unknown>, key, out);
    } else {
      out[key] = v;
    }
  }
  return out;
}
