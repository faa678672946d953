// `edgellm quantize` against llama.cpp's own quantizer (llama_model_quantize through the oracle
// tool, no importance matrix) on the same random F32 models, for every mix edgellm writes: the
// same tensor order and types (the per-tensor rules: output Q6_K, the _M mixes' attn_v/ffn_down
// layers, the 256-fallbacks, the 8-expert bumps, what stays F32), and then the same file, byte for
// byte: metadata (quantization_version and file_type moved to the end, as llama.cpp's gguf_set_val
// does), tensor table, alignment padding and every tensor's data.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo } from '../src/engine/gguf.js';
import { QUANTIZE_TYPES, chooseTypes, type QuantizeType } from '../src/engine/quant-mix.js';
import { quantizeModel } from '../src/engine/quantize.js';
import { writeModel, type Spec } from './fixtures/random-model.js';
import { llamaQuantizeModel, requireOracle } from './fixtures/oracle.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-quantize-llamacpp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// Small (ggml's IQ4_XS quantizer is slow: ~0.7 s per million weights here), but 256 wide.
const BASE = { nVocab: 320, nEmbd: 256, nLayer: 8, nHead: 4, nHeadKv: 2, headDim: 32, nFf: 256, contextLength: 256 };
/**
 * 8 layers make use_more_bits pick layers 0, 3, 6 and 7; GQA 2 and 4 take both sides of the
 * n_gqa >= 4 rules; 8 experts take the 8-expert bumps; 320 and 200 wide rows take the fallbacks
 * (Q4_K -> Q5_0 ..., and F16 for rows that are not a multiple of 32); gemma3 ties its output; one
 * model's matrices are F16, the other input llama.cpp's quantizer takes.
 */
const MODELS: Spec[] = [
  { ...BASE, name: 'llama dense gqa2', arch: 'llama' },
  { ...BASE, name: 'llama dense gqa4', arch: 'llama', nLayer: 3, nHead: 8, nHeadKv: 2 },
  { ...BASE, name: 'llama moe 8x2', arch: 'llama', nLayer: 2, nFf: 64, nExpert: 8, nExpertUsed: 2 },
  { ...BASE, name: 'qwen3moe 16x4', arch: 'qwen3moe', nLayer: 2, nFf: 64, nExpert: 16, nExpertUsed: 4 },
  { ...BASE, name: 'qwen2', arch: 'qwen2', nLayer: 3 },
  { ...BASE, name: 'qwen2 width 320', arch: 'qwen2', nEmbd: 320, nHead: 5, nHeadKv: 1, headDim: 64, nLayer: 3, nFf: 200 },
  { ...BASE, name: 'gemma3 tied', arch: 'gemma3', nLayer: 2, window: 16 },
  { ...BASE, name: 'llama F16 source', arch: 'llama', nLayer: 2, type: 'F16' },
];

/** llama-quantize's name of each mix (the oracle's FTYPE argument). */
const LLAMA_FTYPE: Record<QuantizeType, string> = {
  q4_0: 'Q4_0', q4_1: 'Q4_1', q5_0: 'Q5_0', q5_1: 'Q5_1', q8_0: 'Q8_0', q2_k: 'Q2_K', q3_k_m: 'Q3_K_M',
  q4_k_s: 'Q4_K_S', q4_k_m: 'Q4_K_M', q5_k_m: 'Q5_K_M', q6_k: 'Q6_K', iq4_nl: 'IQ4_NL', iq4_xs: 'IQ4_XS',
};

/** The index of the first differing byte, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Which tensor (or the header) holds byte `at` of a file. */
function whereIs(path: string, at: number): string {
  const info = readGgufInfo(path);
  if (at < info.dataOffset) return 'the header (metadata or tensor table)';
  const hit = info.tensors.find((x) => at >= x.offset && at < x.offset + x.bytes);
  return hit ? `tensor '${hit.name}' (${hit.type})` : 'padding between tensors';
}

for (const spec of MODELS) {
  t.test(`${spec.name}: every mix is llama.cpp's file, byte for byte`, async (t) => {
    if (!requireOracle(t, 'llama.cpp quantizer comparison')) return;
    const { path } = writeModel(spec, dir, { vocab: true });
    const info = readGgufInfo(path);
    const stem = join(dir, spec.name.replace(/\W+/g, '_'));
    for (const q of QUANTIZE_TYPES) {
      const theirsPath = `${stem}-${q}-llamacpp.gguf`, oursPath = `${stem}-${q}-edgellm.gguf`;
      llamaQuantizeModel(path, theirsPath, LLAMA_FTYPE[q]);
      const theirs = readGgufInfo(theirsPath).tensors.map((x) => `${x.name} ${x.type}`);
      t.same(chooseTypes(info, q).map((c) => `${c.name} ${c.type}`), theirs, `${q}: the rules give llama.cpp's order and types`);
      await quantizeModel(path, oursPath, { type: q, threads: 2 });
      const a = new Uint8Array(readFileSync(oursPath)), b = new Uint8Array(readFileSync(theirsPath));
      const at = firstDifference(a, b);
      t.equal(at, -1, at < 0 ? `${q}: identical files (${a.length} bytes)` : `${q}: first difference at byte ${at}, in ${whereIs(theirsPath, at)}`);
      rmSync(theirsPath);
      rmSync(oursPath);
    }
  });
}
