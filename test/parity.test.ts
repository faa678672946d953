// Parity with llama.cpp (through node-llama-cpp, pinned) on the same GGUF files: random models of
// every architecture written here and the real files in ../shared/models, 128+ positions each.
//
// - F32/F16 weights: both engines compute nearly the same function, so the next-token
//   distributions must agree: mean KL(llama.cpp || edgellm) <= 1e-4 nats, same argmax at >= 99%.
// - Q4_0/Q8_0 weights: both quantize activations to Q8_0, each in its own order, so neither is
//   "the" answer. Both are held to the exact result (the float64 reference forward pass on the
//   same dequantized weights): KL(exact || edgellm) <= KL(exact || llama.cpp) + 1e-4.
// - llama.cpp's own mixes (Q4_0 mix, Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K, IQ4_XS, IQ4_NL, Q4_1,
//   Q5_0, Q5_1, Q8_0), written by llama.cpp's quantizer from random F32 models (dense, MoE,
//   qwen2, and one 320 wide, whose rows take the 256-fallbacks): every weight type edgellm runs.
//   Both engines quantize activations (Q8_0, Q8_1, Q8_K), so both are held to the exact result:
//   KL(exact || edgellm) <= 1.1 x KL(exact || llama.cpp) + 1e-4.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo, type GgufTensorType } from '../src/engine/gguf.js';
import { logSoftmax } from '../src/engine/model.js';
import { argmax, readModelFile, readWeights, reference, writeModel, type Spec } from './fixtures/random-model.js';
import { argmaxAgreement, edgellmRows, llamaCppRows as llamaCppRowsOf, meanEntropy, meanKl, randomTokens, useLlamaCpp } from './fixtures/parity.js';
import { llamaQuantizeModel, requireOracle } from './fixtures/oracle.js';
import { modelsDir, requireModels } from './fixtures/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-parity-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const POSITIONS = 144;

const llama = useLlamaCpp(t);
const llamaCppRows = (path: string, tokens: number[], nVocab: number) => llamaCppRowsOf(llama(), path, tokens, nVocab);

// Logits are spread by a few nats (logitScale 3: a standard deviation of ~3 over 320 tokens),
// giving entropies of ~1-3 nats: neither uniform nor one-hot.
const BASE = { nVocab: 320, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 16, nFf: 96, logitScale: 3, contextLength: 512 };
const ARCHS: Spec[] = [
  { ...BASE, name: 'llama dense GQA', arch: 'llama' },
  { ...BASE, name: 'llama MoE 32x4', arch: 'llama', nFf: 32, nExpert: 32, nExpertUsed: 4 },
  { ...BASE, name: 'qwen2', arch: 'qwen2', ropeBase: 1e6 },
  { ...BASE, name: 'qwen3', arch: 'qwen3', headDim: 32, ropeBase: 1e6 },
  { ...BASE, name: 'qwen3moe 32x4', arch: 'qwen3moe', headDim: 32, nFf: 32, nExpert: 32, nExpertUsed: 4, ropeBase: 1e6 },
  // 6 layers: 5 sliding-window (W = 16, well inside 144 positions) and one global.
  { ...BASE, name: 'gemma3', arch: 'gemma3', nLayer: 6, nHead: 2, nHeadKv: 1, headDim: 32, window: 16, ropeBase: 1e6, ropeScale: 8 },
];

function fmt(x: number): string {
  return x.toExponential(2);
}

for (const spec of ARCHS) {
  for (const type of ['F32', 'F16'] as GgufTensorType[]) {
    t.test(`${spec.name} ${type}: edgellm's distributions match llama.cpp's (KL <= 1e-4, argmax >= 99%)`, async (t) => {
      const s = { ...spec, name: `${spec.name} ${type}`, type };
      const { path, w } = writeModel(s, dir, { vocab: true });
      const tokens = randomTokens(POSITIONS, s.nVocab, 3);
      const ours = await edgellmRows(path, tokens);
      const theirs = await llamaCppRows(path, tokens, s.nVocab);
      const kl = meanKl(theirs, ours);
      const agree = argmaxAgreement(theirs, ours);
      t.comment(`${s.name}: KL(llama.cpp || edgellm) = ${fmt(kl)} nats, argmax agreement ${(agree * 100).toFixed(1)}%, entropy ${meanEntropy(theirs).toFixed(2)} nats`);
      t.ok(meanEntropy(theirs) > 0.3, 'distributions are not degenerate');
      t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
      // At a near-tie the two engines' rounding can pick different tokens: llama.cpp's F16 matmuls
      // round the activations to F16 too (its CPU variant decides how), edgellm keeps them in F32.
      // A position where they disagree counts against edgellm only when edgellm's choice is not the
      // exact (float64) one; every such position is listed with its top-2 margin.
      const exact = reference(s, w, tokens).map(logSoftmax);
      const split = theirs.flatMap((lp, i) => (argmax(lp) === argmax(ours[i]!) ? [] : [i]));
      for (const i of split) {
        const top2 = [...exact[i]!].sort((a, b) => b - a);
        t.comment(
          `position ${i}: llama.cpp picks ${argmax(theirs[i]!)}, edgellm ${argmax(ours[i]!)}, exact ${argmax(exact[i]!)} (exact top-2 margin ${fmt(top2[0]! - top2[1]!)} nats)`,
        );
      }
      const oursOff = split.filter((i) => argmax(ours[i]!) !== argmax(exact[i]!)).length;
      const agreeFair = 1 - oursOff / theirs.length;
      t.ok(agreeFair >= 0.99, `argmax agreement ${agreeFair} >= 0.99 (${split.length} split position(s), ${oursOff} where edgellm is not the exact choice)`);
    });
  }
  for (const type of ['Q4_0', 'Q8_0'] as GgufTensorType[]) {
    t.test(`${spec.name} ${type}: edgellm is as close to the exact result as llama.cpp (+1e-4)`, async (t) => {
      const s = { ...spec, name: `${spec.name} ${type}`, type };
      const { path, w } = writeModel(s, dir, { vocab: true });
      const tokens = randomTokens(POSITIONS, s.nVocab, 4);
      const exact = reference(s, w, tokens).map(logSoftmax);
      const ours = await edgellmRows(path, tokens);
      const theirs = await llamaCppRows(path, tokens, s.nVocab);
      const klOurs = meanKl(exact, ours);
      const klTheirs = meanKl(exact, theirs);
      t.comment(
        `${s.name}: KL(exact || edgellm) = ${fmt(klOurs)}, KL(exact || llama.cpp) = ${fmt(klTheirs)} nats; ` +
          `argmax vs exact: edgellm ${(argmaxAgreement(exact, ours) * 100).toFixed(1)}%, llama.cpp ${(argmaxAgreement(exact, theirs) * 100).toFixed(1)}%`,
      );
      t.ok(klOurs <= klTheirs + 1e-4, `KL(exact || edgellm) ${klOurs} <= KL(exact || llama.cpp) ${klTheirs} + 1e-4`);
    });
  }
}

// 256 wide, so the K-quants and IQ4_XS keep their own type; 64 positions keep the float64
// reference quick (its cost is one model per mix). The MoE's 4 experts are 256 wide too, so its
// expert tensors take the mixes' types.
const MIX_BASE = { nVocab: 320, nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 64, nFf: 256, logitScale: 3, contextLength: 512 };
const MIX_MODELS: Spec[] = [
  { ...MIX_BASE, name: 'llama dense', arch: 'llama' },
  { ...MIX_BASE, name: 'llama MoE 4x2', arch: 'llama', nExpert: 4, nExpertUsed: 2 },
  { ...MIX_BASE, name: 'qwen2', arch: 'qwen2', ropeBase: 1e6 },
  { ...MIX_BASE, name: 'qwen2 320 wide', arch: 'qwen2', nEmbd: 320, nHead: 5, nHeadKv: 1, ropeBase: 1e6 },
];
const LLAMA_MIXES = ['Q4_0', 'Q4_K_M', 'Q5_K_M', 'Q6_K', 'Q3_K_M', 'Q2_K', 'IQ4_XS', 'IQ4_NL', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0'];
const MIX_POSITIONS = 64;

for (const spec of MIX_MODELS) {
  t.test(`${spec.name}, llama.cpp's own mixes: KL(exact || edgellm) <= 1.1 x KL(exact || llama.cpp) + 1e-4`, async (t) => {
    if (!requireOracle(t, 'parity on llama.cpp-quantized files')) return;
    const { path } = writeModel(spec, dir, { vocab: true });
    const tokens = randomTokens(MIX_POSITIONS, spec.nVocab, 8);
    for (const mix of LLAMA_MIXES) {
      const qpath = join(dir, `${spec.name.replace(/\W+/g, '_')}-${mix}.gguf`);
      llamaQuantizeModel(path, qpath, mix);
      const types = [...new Set(readGgufInfo(qpath).tensors.map((x) => x.type))].sort().join(' ');
      const exact = reference(spec, readWeights(qpath), tokens).map(logSoftmax);
      const ours = await edgellmRows(qpath, tokens);
      const theirs = await llamaCppRows(qpath, tokens, spec.nVocab);
      const klOurs = meanKl(exact, ours);
      const klTheirs = meanKl(exact, theirs);
      t.comment(
        `${spec.name} ${mix} (${types}): KL(exact || edgellm) = ${fmt(klOurs)}, KL(exact || llama.cpp) = ${fmt(klTheirs)} nats; ` +
          `argmax vs exact: edgellm ${(argmaxAgreement(exact, ours) * 100).toFixed(1)}%, llama.cpp ${(argmaxAgreement(exact, theirs) * 100).toFixed(1)}%`,
      );
      t.ok(klOurs <= 1.1 * klTheirs + 1e-4, `${mix}: KL(exact || edgellm) ${fmt(klOurs)} <= 1.1 x ${fmt(klTheirs)} + 1e-4`);
      rmSync(qpath);
    }
  });
}

// llama.cpp's llama architecture ignores `llama.attention.sliding_window` (Mistral): it attends to
// every earlier position. So the window is checked against the float64 reference, whose mask is
// explicit (position p sees p-W+1 .. p), with the same bounds as the llama.cpp comparisons.
t.test('mistral sliding window (W = 16, 144 positions): edgellm matches the float64 reference with an explicit mask', async (t) => {
  const s: Spec = { ...BASE, name: 'mistral sliding window', arch: 'llama', nHeadKv: 1, window: 16 };
  const { path, w } = writeModel(s, dir, { vocab: true });
  const tokens = randomTokens(POSITIONS, s.nVocab, 5);
  const exact = reference(s, w, tokens).map(logSoftmax);
  const ours = await edgellmRows(path, tokens);
  const kl = meanKl(exact, ours);
  const agree = argmaxAgreement(exact, ours);
  t.comment(`${s.name}: KL(reference || edgellm) = ${fmt(kl)} nats, argmax agreement ${(agree * 100).toFixed(1)}%`);
  t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
  t.ok(agree >= 0.99, `argmax agreement ${agree} >= 0.99`);
  // Without the mask the answer must differ: the window is really applied.
  const full = reference({ ...s, window: 0 }, w, tokens).map(logSoftmax);
  t.ok(meanKl(full, ours) > 10 * Math.max(kl, 1e-6), 'the full-attention answer is measurably different');
});

// ---- Real files (../shared/models; skipped loudly when missing, required when CI=true) -----------

t.test('stories260K.gguf (F32): KL(llama.cpp || edgellm) <= 1e-4 and argmax >= 99% over 144 positions', async (t) => {
  if (!requireModels(t, 'stories260K.gguf llama.cpp parity')) return;
  const path = join(modelsDir, 'stories260K.gguf');
  const tokens = [1, ...randomTokens(POSITIONS - 1, 512, 6)];
  const ours = await edgellmRows(path, tokens);
  const theirs = await llamaCppRows(path, tokens, 512);
  const kl = meanKl(theirs, ours);
  const agree = argmaxAgreement(theirs, ours);
  t.comment(`stories260K: KL(llama.cpp || edgellm) = ${fmt(kl)} nats, argmax agreement ${(agree * 100).toFixed(1)}%`);
  t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
  t.ok(agree >= 0.99, `argmax agreement ${agree} >= 0.99`);
});

t.test('TinyLLama-v0-Q4_0.gguf: edgellm is as close to the exact result as llama.cpp (+1e-4)', async (t) => {
  if (!requireModels(t, 'TinyLLama-v0-Q4_0.gguf llama.cpp parity')) return;
  const path = join(modelsDir, 'TinyLLama-v0-Q4_0.gguf');
  const { spec, w } = readModelFile(path);
  const tokens = [1, ...randomTokens(POSITIONS - 1, spec.nVocab, 7)];
  const exact = reference(spec, w, tokens).map(logSoftmax);
  const ours = await edgellmRows(path, tokens);
  const theirs = await llamaCppRows(path, tokens, spec.nVocab);
  const klOurs = meanKl(exact, ours);
  const klTheirs = meanKl(exact, theirs);
  t.comment(
    `TinyLLama-v0 Q4_0: KL(exact || edgellm) = ${fmt(klOurs)}, KL(exact || llama.cpp) = ${fmt(klTheirs)}, ` +
      `KL(llama.cpp || edgellm) = ${fmt(meanKl(theirs, ours))} nats; argmax edgellm vs llama.cpp ${(argmaxAgreement(theirs, ours) * 100).toFixed(1)}%`,
  );
  t.ok(klOurs <= klTheirs + 1e-4, `KL(exact || edgellm) ${klOurs} <= KL(exact || llama.cpp) ${klTheirs} + 1e-4`);
});
