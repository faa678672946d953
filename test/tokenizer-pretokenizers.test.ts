// The pre-tokenizers of SmolLM (`smollm`), OLMo/OLMoE (`olmo`), DeepSeek LLM/V2 (`deepseek-llm`) and
// Phi-4-mini (`gpt-4o`),
// and Gemma's SentencePiece without a space prefix, held to llama.cpp (node-llama-cpp, pinned).
// ../shared/models has no vocabularies of these families, so each is the GPT-2 (or Llama SPM)
// vocabulary re-written with the family's tokenizer.ggml.pre (or add_space_prefix): the split
// into words is what differs between families, and llama.cpp applies it to any vocabulary.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import { readGgufInfo } from '../src/engine/gguf.js';
import { GgufWriter, meta, writeValueOf, type GgufWriteValue } from '../src/engine/gguf-writer.js';
import { Tokenizer } from '../src/engine/tokenizer/index.js';
import { requireModels } from './fixtures/paths.js';
import { vocabCases, vocabDir } from './fixtures/tokenizer-data.js';
import { PARITY_STRINGS } from './fixtures/tokenizer-strings.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-pretokenizers-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let llama: Llama | undefined;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});
t.teardown(async () => {
  await llama?.dispose();
});

/** A copy of a vocab-only GGUF of ../shared/models/vocab with some metadata replaced. */
function vocabVariant(file: string, name: string, overrides: Record<string, GgufWriteValue>): string {
  const info = readGgufInfo(join(vocabDir, file));
  const w = new GgufWriter();
  for (const [k, v] of Object.entries(info.metadata)) w.setMeta(k, overrides[k] ?? writeValueOf(info.metadataTypes[k]!, v));
  for (const [k, v] of Object.entries(overrides)) if (!(k in info.metadata)) w.setMeta(k, v);
  const path = join(dir, `${name}.gguf`);
  w.writeFile(path);
  return path;
}

const VARIANTS: Array<{ name: string; file: string; overrides: Record<string, GgufWriteValue>; family: string }> = [
  { name: 'smollm', file: 'ggml-vocab-gpt-2.gguf', overrides: { 'tokenizer.ggml.pre': meta.string('smollm') }, family: 'smollm' },
  { name: 'olmo', file: 'ggml-vocab-gpt-2.gguf', overrides: { 'tokenizer.ggml.pre': meta.string('olmo') }, family: 'gpt-2' },
  { name: 'deepseek-llm', file: 'ggml-vocab-gpt-2.gguf', overrides: { 'tokenizer.ggml.pre': meta.string('deepseek-llm') }, family: 'deepseek-llm' },
  // Phi-4-mini's BPE vocabulary.
  { name: 'gpt-4o', file: 'ggml-vocab-gpt-2.gguf', overrides: { 'tokenizer.ggml.pre': meta.string('gpt-4o') }, family: 'gpt-4o' },
  // Gemma (2 and 3) GGUFs: a "llama" SentencePiece vocabulary with add_space_prefix = false.
  { name: 'gemma-spm', file: 'ggml-vocab-llama-spm.gguf', overrides: { 'tokenizer.ggml.add_space_prefix': meta.bool(false) }, family: 'spm' },
];

// Every string of the shared llama.cpp vocab tests plus the suite's own hard strings.
const STRINGS = () => [...new Set([...PARITY_STRINGS, ...vocabCases('ggml-vocab-gpt-2.gguf').map((c) => c.text)])];

for (const v of VARIANTS) {
  t.test(`${v.name}: encode and decode match llama.cpp`, async (t) => {
    if (!requireModels(t, `${v.name} pre-tokenizer parity`)) return;
    const path = vocabVariant(v.file, v.name, v.overrides);
    const tk = Tokenizer.fromMetadata(readGgufInfo(path).metadata);
    t.equal(tk.vocab.pre?.name ?? 'spm', v.family, `tokenizer.ggml.pre selects the ${v.family} rules`);
    const model = await llama!.loadModel({ modelPath: path, vocabOnly: true });
    t.teardown(() => model.dispose());
    const strings = STRINGS();
    let encOk = 0;
    let decOk = 0;
    for (const text of strings) {
      const expected = Array.from(model.tokenize(text, false));
      const got = tk.encode(text, { addBos: false });
      if (JSON.stringify(got) === JSON.stringify(expected)) encOk++;
      else t.same(got, expected, `encode ${JSON.stringify(text)}`);
      const want = model.detokenize(expected, false);
      const have = tk.decode(expected);
      if (have === want) decOk++;
      else t.equal(have, want, `decode ${JSON.stringify(text)}`);
    }
    t.comment(`${v.name}: encode ${encOk}/${strings.length}, decode ${decOk}/${strings.length} identical to llama.cpp`);
    t.equal(encOk, strings.length, `encode: ${encOk}/${strings.length}`);
    t.equal(decOk, strings.length, `decode: ${decOk}/${strings.length}`);
  });
}

t.test('the families split differently on these strings (the comparisons above can fail)', async (t) => {
  if (!requireModels(t, 'pre-tokenizer differences')) return;
  const tk = (name: string) => Tokenizer.fromMetadata(readGgufInfo(join(dir, `${name}.gguf`)).metadata);
  const olmo = tk('olmo');
  for (const name of ['smollm', 'deepseek-llm', 'gpt-4o']) {
    const other = tk(name);
    const differ = STRINGS().filter((s) => JSON.stringify(other.encode(s)) !== JSON.stringify(olmo.encode(s)));
    t.comment(`${name} vs olmo (GPT-2's split): ${differ.length} strings tokenize differently`);
    t.ok(differ.length >= 10, `${name}: ${differ.length} strings differ from GPT-2's split`);
  }
  // smollm puts every digit on its own; GPT-2 keeps a run of digits together.
  t.same(tk('smollm').encode('2024').length, 4);
});
