// deepseek2 (multi-head latent attention, leading dense layer, routed + shared experts, YaRN) held
// to llama.cpp (node-llama-cpp, pinned) on random models of DeepSeek-V2's shape, scaled down:
// F32/F16 at mean KL(llama.cpp || edgellm) <= 1e-4 and argmax >= 99% over 144 positions, through
// prefill and through decode (one token per step, two sequences per step), and llama.cpp's
// Q4_K_M of one against the float64 reference as the formats tests hold quantized files.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GgufTensorType } from '../src/engine/gguf.js';
import { loadModel, logSoftmax } from '../src/engine/model.js';
import { readGgufInfo } from '../src/engine/gguf.js';
import { argmax, readWeights } from './fixtures/random-model.js';
import { referenceDeepseek2, writeDeepseek2, type MlaSpec } from './fixtures/random-deepseek2.js';
import { llamaQuantizeModel, requireOracle } from './fixtures/oracle.js';
import { argmaxAgreement, disposeLlamaCpp, edgellmRows, llamaCppRows, meanEntropy, meanKl, randomTokens, type Rows } from './fixtures/parity.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-parity-ds2-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const POSITIONS = 144;

t.teardown(disposeLlamaCpp);

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
  // YaRN without yarn_log_multiplier: llama.cpp keeps ggml's magnitude on the rope part.
  { ...BASE, name: 'deepseek2 yarn without log multiplier', splitKvB: true, yarn: { factor: 8, origCtx: 32 } },
];

for (const spec of SPECS) {
  for (const type of ['F32', 'F16'] as GgufTensorType[]) {
    t.test(`${spec.name} ${type}: edgellm's distributions match llama.cpp's (KL <= 1e-4, argmax >= 99%)`, async (t) => {
      const s = { ...spec, name: `${spec.name} ${type}`, type };
      const { path, w } = writeDeepseek2(s, dir);
      const tokens = randomTokens(POSITIONS, s.nVocab, 3);
      const ours = await edgellmRows(path, tokens);
      const theirs = await llamaCppRows(path, tokens, s.nVocab);
      const exact = referenceDeepseek2(s, w, tokens).map(logSoftmax);
      const kl = meanKl(theirs, ours);
      t.comment(
        `${s.name}: KL(llama.cpp || edgellm) = ${fmt(kl)}, KL(exact || edgellm) = ${fmt(meanKl(exact, ours))}, ` +
          `KL(exact || llama.cpp) = ${fmt(meanKl(exact, theirs))} nats; argmax ${(argmaxAgreement(theirs, ours) * 100).toFixed(1)}%, entropy ${meanEntropy(theirs).toFixed(2)}`,
      );
      t.ok(meanEntropy(theirs) > 0.3, 'distributions are not degenerate');
      t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
      checkArgmax(t, theirs, ours, exact);
    });
  }
}

/**
 * Argmax agreement >= 99%, where a split position counts against edgellm only when edgellm's
 * choice is not the exact (float64) one (near-ties round either way; parity.test.ts does the same).
 */
function checkArgmax(t: Test, theirs: Rows, ours: Rows, exact: Rows): void {
  const split = theirs.flatMap((lp, i) => (argmax(lp) === argmax(ours[i]!) ? [] : [i]));
  const oursOff = split.filter((i) => argmax(ours[i]!) !== argmax(exact[i]!)).length;
  const agree = 1 - oursOff / theirs.length;
  t.ok(agree >= 0.99, `argmax agreement ${agree} >= 0.99 (${split.length} split position(s), ${oursOff} where edgellm is not the exact choice)`);
}

// Decode: after a short prefill every token is its own step, and two sequences share each step
// (their latent rows live in separate caches): the absorbed path is what generation runs.
for (const spec of SPECS.slice(0, 2)) {
  t.test(`${spec.name} F32, decoding two sequences one token per step: matches llama.cpp (KL <= 1e-4, argmax >= 99%)`, async (t) => {
    const s = { ...spec, name: `${spec.name} decode` };
    const { path, w } = writeDeepseek2(s, dir);
    const seqs = [randomTokens(POSITIONS, s.nVocab, 21), randomTokens(POSITIONS - 40, s.nVocab, 22)];
    const model = await loadModel(path, { threads: 2, contextSize: POSITIONS, batchSize: 16 });
    let ours: Rows[];
    try {
      const logits = await model.evalSequences([
        { tokens: seqs[0]!, prefill: 24 },
        { tokens: seqs[1]!, prefill: 8 },
      ]);
      ours = logits.map((l, i) => seqs[i]!.map((_, p) => logSoftmax(l.subarray(p * s.nVocab, (p + 1) * s.nVocab))));
    } finally {
      model.close();
    }
    for (let i = 0; i < seqs.length; i++) {
      const theirs = await llamaCppRows(path, seqs[i]!, s.nVocab);
      const exact = referenceDeepseek2(s, w, seqs[i]!).map(logSoftmax);
      const kl = meanKl(theirs, ours[i]!);
      t.comment(`${s.name} sequence ${i} (${seqs[i]!.length} positions): KL(llama.cpp || edgellm) = ${fmt(kl)}, argmax ${(argmaxAgreement(theirs, ours[i]!) * 100).toFixed(1)}%`);
      t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
      checkArgmax(t, theirs, ours[i]!, exact);
    }
  });
}

t.test('YaRN is applied: without it the float64 reference is measurably further from edgellm', async (t) => {
  const s = { ...SPECS[0]!, name: 'deepseek2 yarn check' };
  const { path, w } = writeDeepseek2(s, dir);
  const tokens = randomTokens(POSITIONS, s.nVocab, 5);
  const ours = await edgellmRows(path, tokens);
  const kl = meanKl(referenceDeepseek2(s, w, tokens).map(logSoftmax), ours);
  const klPlain = meanKl(referenceDeepseek2({ ...s, yarn: undefined }, w, tokens).map(logSoftmax), ours);
  t.comment(`KL(reference || edgellm) = ${fmt(kl)}, without YaRN in the reference ${fmt(klPlain)}`);
  t.ok(kl <= 1e-4, `mean KL ${kl} <= 1e-4`);
  t.ok(klPlain > 100 * Math.max(kl, 1e-7), 'the reference without YaRN is far from edgellm');
});

t.test('the KV cache holds the compressed latent: kv_lora_rank + rope dims of f16 per token and layer', async (t) => {
  for (const spec of SPECS.slice(0, 2)) {
    const { path } = writeDeepseek2({ ...spec, name: `${spec.name} kv` }, dir);
    const model = await loadModel(path, { threads: 1, contextSize: 256 });
    try {
      const info = model.info();
      const perToken = spec.nLayer * (spec.kvLoraRank + spec.qkRope) * 2;
      t.equal(info.kv_bytes_per_sequence, 256 * perToken, `${spec.name}: ${perToken} bytes per position, not the expanded K and V`);
    } finally {
      model.close();
    }
  }
});

// 256 wide so the K-quants keep their own types where the rows allow (attn_k_b's rows are qk_nope
// wide and take llama.cpp's fallback); 64 positions per model keep the float64 reference quick.
const MIX: MlaSpec = {
  ...BASE,
  name: 'deepseek2 256 wide',
  nEmbd: 256,
  nLayer: 2,
  nHead: 4,
  qLoraRank: 0,
  kvLoraRank: 256,
  qkNope: 64,
  qkRope: 32,
  vDim: 64,
  nFf: 512,
  nFfExp: 256,
  nExpert: 8,
  nExpertUsed: 2,
  nShared: 1,
  splitKvB: true,
  yarn: { factor: 4, origCtx: 64, mscaleAllDim: 0.707 },
};

// Both forms of the per-head K/V matrices: split (newer converters) and attn_kv_b, whose quantized
// rows edgellm transposes into f32 at load. The engines quantize activations at different places
// (the absorbed path quantizes each head's attended latent once before attn_v_b; llama.cpp's
// expanded path for attn_kv_b files quantizes every position's latent, errors that partly average
// out in the softmax sum), so each is held over three models and 192 positions, not one seed's noise.
const MIX_SEEDS = [11, 12, 13];
for (const spec of [MIX, { ...MIX, name: 'deepseek2 256 wide, attn_kv_b', splitKvB: false }]) {
  t.test(`${spec.name}, llama.cpp's Q4_K_M (3 models): KL(exact || edgellm) <= 1.1 x KL(exact || llama.cpp) + 1e-4`, async (t) => {
    if (!requireOracle(t, 'deepseek2 parity on a llama.cpp-quantized file')) return;
    const exact: Rows = [], ours: Rows = [], theirs: Rows = [];
    let types = '';
    for (const seed of MIX_SEEDS) {
      const { path } = writeDeepseek2(spec, dir, seed);
      const qpath = join(dir, `${spec.splitKvB ? 'split' : 'kv_b'}-${seed}-Q4_K_M.gguf`);
      llamaQuantizeModel(path, qpath, 'Q4_K_M');
      types = [...new Set(readGgufInfo(qpath).tensors.map((x) => x.type))].sort().join(' ');
      const tokens = randomTokens(64, spec.nVocab, seed);
      exact.push(...referenceDeepseek2(spec, readWeights(qpath), tokens).map(logSoftmax));
      ours.push(...(await edgellmRows(qpath, tokens)));
      theirs.push(...(await llamaCppRows(qpath, tokens, spec.nVocab)));
    }
    const klOurs = meanKl(exact, ours);
    const klTheirs = meanKl(exact, theirs);
    t.comment(
      `${spec.name} Q4_K_M (${types}): KL(exact || edgellm) = ${fmt(klOurs)}, KL(exact || llama.cpp) = ${fmt(klTheirs)}, ` +
        `KL(llama.cpp || edgellm) = ${fmt(meanKl(theirs, ours))} nats; argmax vs exact: edgellm ${(argmaxAgreement(exact, ours) * 100).toFixed(1)}%, llama.cpp ${(argmaxAgreement(exact, theirs) * 100).toFixed(1)}%`,
    );
    t.ok(klOurs <= 1.1 * klTheirs + 1e-4, `KL(exact || edgellm) ${klOurs} <= 1.1 x KL(exact || llama.cpp) ${klTheirs} + 1e-4`);
  });
}
