// Parity with llama.cpp (node-llama-cpp, pinned) for phi3, gemma2, olmoe and smollm3: random
// models written here with each architecture's tensors and metadata as llama.cpp reads them,
// shapes like the real ones scaled down, 144 positions each.
//
// - F32/F16: mean KL(llama.cpp || edgellm) <= 1e-4 nats and the same argmax at >= 99% of positions.
// - Q4_0: both engines quantize activations, each its own way, so both are held to the exact
//   result, here llama.cpp on an F32 file of the same (dequantized) weights:
//   KL(exact || edgellm) <= KL(exact || llama.cpp) + 1e-4.
// - Each architecture with a feature edgellm does not run is E_MODEL_UNSUPPORTED naming it.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo, type GgufTensorType } from '../src/engine/gguf.js';
import { GgufWriter, meta, writeValueOf } from '../src/engine/gguf-writer.js';
import { loadModel } from '../src/engine/model.js';
import {
  argmaxAgreement,
  disposeLlamaCpp,
  edgellmRows,
  fmt,
  llamaCppRows,
  meanEntropy,
  meanKl,
  randomTokens,
} from './fixtures/parity.js';
import { readWeights, writeModel, type Spec, type Weights } from './fixtures/random-model.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-parity-archs-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const POSITIONS = 144;

t.teardown(disposeLlamaCpp);

/** The same model with every tensor as F32 holding `w` (the exact values of a quantized file). */
function writeF32Copy(path: string, w: Weights, out: string): string {
  const info = readGgufInfo(path);
  const g = new GgufWriter();
  for (const [k, v] of Object.entries(info.metadata)) g.setMeta(k, writeValueOf(info.metadataTypes[k]!, v));
  for (const ti of info.tensors) g.addTensor({ name: ti.name, type: 'F32', shape: ti.shape, data: Float32Array.from(w.get(ti.name)!) });
  g.writeFile(out);
  return out;
}

// Shapes like the real models' (head size 64-256 scaled to 16-32, GQA where they have it).
const BASE = { nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, logitScale: 3, contextLength: 512 };
const ARCHS: Spec[] = [
  // Phi-3-mini: no GQA, fused QKV and gate/up.
  { ...BASE, name: 'phi3', arch: 'phi3', nHeadKv: 4 },
  // Phi-3-mini-128k / Phi-3.5 / Phi-4-mini: LongRoPE; an original context of 64 < both engines'
  // contexts, so both take the long factors, and the cos/sin scale.
  { ...BASE, name: 'phi3 LongRoPE', arch: 'phi3', nHeadKv: 4, longRope: { origContext: 64, attnFactor: 1.19 } },
  // and with an original context above both contexts: the short factors.
  { ...BASE, name: 'phi3 LongRoPE short', arch: 'phi3', nHeadKv: 4, longRope: { origContext: 4096, attnFactor: 1.19 } },
  // Gemma 2: 4 layers alternating window 16 / global; caps low enough to bite on these scores.
  { ...BASE, name: 'gemma2', arch: 'gemma2', nLayer: 4, nHead: 2, nHeadKv: 1, headDim: 32, window: 16, softcaps: { attn: 1.5, final: 4 } },
  // OLMoE: 64 experts, top 8, no GQA, full-width QK-norm.
  { ...BASE, name: 'olmoe 64x8', arch: 'olmoe', nHeadKv: 4, nFf: 32, nExpert: 64, nExpertUsed: 8 },
  // SmolLM3: GQA, layer 3 (every 4th) without RoPE.
  { ...BASE, name: 'smollm3', arch: 'smollm3', nLayer: 4, ropeBase: 5e6 },
];

for (const spec of ARCHS) {
  for (const type of ['F32', 'F16'] as GgufTensorType[]) {
    t.test(`${spec.name} ${type}: edgellm's distributions match llama.cpp's (KL <= 1e-4, argmax >= 99%)`, async (t) => {
      const s = { ...spec, name: `${spec.name} ${type}`, type };
      const { path } = writeModel(s, dir, { vocab: true });
      const tokens = randomTokens(POSITIONS, s.nVocab, 3);
      const ours = await edgellmRows(path, tokens);
      const theirs = await llamaCppRows(path, tokens, s.nVocab);
      const kl = meanKl(theirs, ours);
      const agree = argmaxAgreement(theirs, ours);
      t.comment(`${s.name}: KL(llama.cpp || edgellm) = ${fmt(kl)} nats, argmax agreement ${(agree * 100).toFixed(1)}% over ${POSITIONS} positions, entropy ${meanEntropy(theirs).toFixed(2)} nats`);
      t.ok(meanEntropy(theirs) > 0.3, 'distributions are not degenerate');
      t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
      t.ok(agree >= 0.99, `argmax agreement ${agree} >= 0.99`);
    });
  }
  t.test(`${spec.name} Q4_0: edgellm is as close to the exact result as llama.cpp (+1e-4)`, async (t) => {
    const s = { ...spec, name: `${spec.name} Q4_0`, type: 'Q4_0' as GgufTensorType };
    const { path, w } = writeModel(s, dir, { vocab: true });
    const exactPath = writeF32Copy(path, w, join(dir, `${s.name.replace(/\W+/g, '_')}-exact.gguf`));
    const tokens = randomTokens(POSITIONS, s.nVocab, 4);
    const exact = await llamaCppRows(exactPath, tokens, s.nVocab);
    const ours = await edgellmRows(path, tokens);
    const theirs = await llamaCppRows(path, tokens, s.nVocab);
    const klOurs = meanKl(exact, ours);
    const klTheirs = meanKl(exact, theirs);
    t.comment(
      `${s.name}: KL(exact || edgellm) = ${fmt(klOurs)}, KL(exact || llama.cpp) = ${fmt(klTheirs)} nats; ` +
        `argmax vs exact: edgellm ${(argmaxAgreement(exact, ours) * 100).toFixed(1)}%, llama.cpp ${(argmaxAgreement(exact, theirs) * 100).toFixed(1)}%`,
    );
    t.ok(klTheirs > 1e-5, 'quantization moves llama.cpp measurably (the bound is not vacuous)');
    t.ok(klOurs <= klTheirs + 1e-4, `KL(exact || edgellm) ${klOurs} <= KL(exact || llama.cpp) ${klTheirs} + 1e-4`);
  });
}

t.test('each new architecture with a feature edgellm does not run is E_MODEL_UNSUPPORTED naming it', async (t) => {
  const cases: Array<[Spec, (g: GgufWriter, p: string) => void, RegExp]> = [
    [{ ...BASE, name: 'phi3 yarn', arch: 'phi3', nHeadKv: 4 }, (g, p) => g.setMeta(p + 'rope.scaling.type', meta.string('yarn')), /RoPE scaling 'yarn' is not supported/],
    [{ ...BASE, name: 'gemma2 moe', arch: 'gemma2', nHead: 2, nHeadKv: 1, headDim: 32 }, (g, p) => (g.setMeta(p + 'expert_count', meta.uint32(4)), g.setMeta(p + 'expert_used_count', meta.uint32(2))), /experts \(expert_count\) are not supported for architecture 'gemma2'/],
    [{ ...BASE, name: 'olmoe vlen', arch: 'olmoe', nHeadKv: 4, nFf: 32, nExpert: 8, nExpertUsed: 2 }, (g, p) => g.setMeta(p + 'attention.value_length', meta.uint32(8)), /value_length 8 differs from key_length 16/],
    [{ ...BASE, name: 'smollm3 moe', arch: 'smollm3', nLayer: 4 }, (g, p) => (g.setMeta(p + 'expert_count', meta.uint32(4)), g.setMeta(p + 'expert_used_count', meta.uint32(2))), /experts \(expert_count\) are not supported for architecture 'smollm3'/],
  ];
  for (const [spec, change, why] of cases) {
    const { path } = writeModel(spec, dir);
    const info = readGgufInfo(path);
    const g = new GgufWriter();
    for (const [k, v] of Object.entries(info.metadata)) g.setMeta(k, writeValueOf(info.metadataTypes[k]!, v));
    change(g, `${spec.arch}.`);
    const weights = readWeights(path);
    for (const ti of info.tensors) g.addTensor({ name: ti.name, type: ti.type, shape: ti.shape, data: Float32Array.from(weights.get(ti.name)!) });
    const bad = join(dir, `${spec.name.replace(/\W+/g, '_')}-bad.gguf`);
    g.writeFile(bad);
    await t.rejects(loadModel(bad, { threads: 1 }), { code: 'E_MODEL_UNSUPPORTED', message: why }, spec.name);
  }
});
