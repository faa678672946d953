// The random llama models the speed benchmarks run on (bench-vs-llamacpp.mjs,
// bench-batching.mjs), written with the engine's GGUF writer: random Q4_0 blocks (the values do
// not change the speed) or random F16 weights for a quantizer to turn into a real file's mix
// (quantizeWithLlamaCpp), and a SentencePiece vocabulary that both llama.cpp and edgellm accept.
// Runs on the built package (npm run build:ts).
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GgufWriter, meta } from '../../dist/engine/gguf-writer.js';
import { f32ToF16 } from '../../dist/engine/quant.js';

/** The dense model: ~122M weights read per token: 8 x (q, o 1024x1024; k, v 256x1024; 3 x 2816x1024) + 32000x1024. */
export const DENSE = { name: 'dense 1024x8, ffn 2816', arch: 'llama', nEmbd: 1024, nLayer: 8, nHead: 16, nHeadKv: 4, nFf: 2816, nVocab: 32000 };
/** 32 experts of 512 per layer, 4 used per token: ~26M of ~214M weights read per token. */
export const MOE = { name: 'MoE 32x4, 1024x4, expert ffn 512', arch: 'llama', nEmbd: 1024, nLayer: 4, nHead: 16, nHeadKv: 4, nFf: 512, nVocab: 32000, nExpert: 32, nExpertUsed: 4 };

/**
 * OLMoE-1B-7B's layout scaled down (its 2048 x 16 layers, 64 experts of 1024, top 8): no GQA,
 * full-width QK-norm, 64 experts of 512 per layer, 8 used per token: ~21M of ~425M weights per token.
 */
export const OLMOE = { name: 'olmoe 64x8, 1024x4, expert ffn 512', arch: 'olmoe', nEmbd: 1024, nLayer: 4, nHead: 16, nHeadKv: 16, nFf: 512, nVocab: 32000, nExpert: 64, nExpertUsed: 8 };

/**
 * DeepSeek-V2-Lite's layout at half its width and 4 layers: multi-head latent attention (no q LoRA,
 * kv_lora_rank 512, 128 + 64 rope dims per query/key head, 128 per value head, the split
 * attn_k_b / attn_v_b of newer converters), the first layer dense, then 64 experts of 512 top-6 plus
 * 2 shared: ~29M of ~70M weights read per token.
 */
export const DEEPSEEK2 = {
  name: 'deepseek2 MLA, 1024x4, 64x6 + 2 shared of 512', arch: 'deepseek2', nEmbd: 1024, nLayer: 4, nHead: 8, nHeadKv: 1, nFf: 2816,
  nVocab: 32000, nExpert: 64, nExpertUsed: 6, nShared: 2, nFfExp: 512, denseLead: 1, kvLoraRank: 512, qkNope: 128, qkRope: 64, vDim: 128,
};

/** Random Q4_0 blocks of n weights with standard deviation ~std: a scale, then 16 bytes of nibbles. */
function randomQ4_0(n, std) {
  const blocks = n / 32;
  const out = new Uint8Array(blocks * 18);
  randomFillSync(out);
  const d = f32ToF16(std / 4.6); // nibbles uniform on -8..7 have a standard deviation of ~4.6
  for (let b = 0; b < blocks; b++) {
    out[b * 18] = d & 0xff;
    out[b * 18 + 1] = d >> 8;
  }
  return out;
}

/** A SentencePiece vocabulary llama.cpp accepts: specials, the 256 byte tokens, made-up pieces. */
function setVocab(g, nVocab) {
  const hex = (i) => i.toString(16).toUpperCase().padStart(2, '0');
  const tokens = Array.from({ length: nVocab }, (_, i) => (i < 3 ? ['<unk>', '<s>', '</s>'][i] : i < 259 ? `<0x${hex(i - 3)}>` : `t${i}`));
  g.setMeta('tokenizer.ggml.model', meta.string('llama'));
  g.setMeta('tokenizer.ggml.tokens', meta.array('string', tokens));
  g.setMeta('tokenizer.ggml.scores', meta.array('float32', tokens.map((_, i) => -i)));
  g.setMeta('tokenizer.ggml.token_type', meta.array('int32', tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1))));
  g.setMeta('tokenizer.ggml.bos_token_id', meta.uint32(1));
  g.setMeta('tokenizer.ggml.eos_token_id', meta.uint32(2));
}

/** Random F16 weights of n elements, magnitudes 2^-8 .. 2^-4 with random signs (a quantizer's input). */
function randomF16(n) {
  const out = new Uint16Array(n);
  randomFillSync(out);
  for (let i = 0; i < n; i++) {
    const r = out[i];
    out[i] = (r & 0x83ff) | ((7 + ((r >> 10) & 3)) << 10);
  }
  return new Uint8Array(out.buffer);
}

/**
 * Writes the model with random weights: Q4_0 blocks (type 'Q4_0', the default) or F16 values
 * (type 'F16': the input of a quantizer, e.g. llama.cpp's, to make the mixes real files have).
 */
export function writeModel(s, path, { type = 'Q4_0' } = {}) {
  const g = new GgufWriter();
  const p = s.arch + '.';
  g.setMeta('general.architecture', meta.string(s.arch));
  g.setMeta(p + 'context_length', meta.uint32(4096));
  g.setMeta(p + 'embedding_length', meta.uint32(s.nEmbd));
  g.setMeta(p + 'block_count', meta.uint32(s.nLayer));
  g.setMeta(p + 'feed_forward_length', meta.uint32(s.nFf));
  g.setMeta(p + 'attention.head_count', meta.uint32(s.nHead));
  g.setMeta(p + 'attention.head_count_kv', meta.uint32(s.nHeadKv));
  g.setMeta(p + 'attention.layer_norm_rms_epsilon', meta.float32(1e-5));
  if (s.nExpert) {
    g.setMeta(p + 'expert_count', meta.uint32(s.nExpert));
    g.setMeta(p + 'expert_used_count', meta.uint32(s.nExpertUsed));
  }
  setVocab(g, s.nVocab);
  if (s.arch === 'deepseek2') {
    writeDeepseek2Layers(g, s, type);
    g.writeFile(path);
    return;
  }
  const D = s.nEmbd, kd = (D / s.nHead) * s.nHeadKv;
  const q4 = (name, shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (type === 'F16') g.addTensor({ name, type: 'F16', shape, data: () => randomF16(n) });
    else g.addTensor({ name, type: 'Q4_0', shape, data: () => randomQ4_0(n, 1 / Math.sqrt(shape[0])) });
  };
  const ones = (name, n = D) => g.addTensor({ name, type: 'F32', shape: [n], data: () => new Float32Array(n).fill(1) });
  q4('token_embd.weight', [D, s.nVocab]);
  ones('output_norm.weight');
  q4('output.weight', [D, s.nVocab]);
  for (let l = 0; l < s.nLayer; l++) {
    const b = `blk.${l}.`;
    ones(b + 'attn_norm.weight');
    q4(b + 'attn_q.weight', [D, D]);
    q4(b + 'attn_k.weight', [D, kd]);
    q4(b + 'attn_v.weight', [D, kd]);
    q4(b + 'attn_output.weight', [D, D]);
    if (s.arch === 'olmoe') {
      ones(b + 'attn_q_norm.weight');
      ones(b + 'attn_k_norm.weight', kd);
    }
    ones(b + 'ffn_norm.weight');
    if (s.nExpert) {
      const E = s.nExpert;
      g.addTensor({
        name: b + 'ffn_gate_inp.weight', type: 'F32', shape: [D, E],
        data: () => Float32Array.from({ length: D * E }, () => (Math.random() - 0.5) * 0.1),
      });
      q4(b + 'ffn_gate_exps.weight', [D, s.nFf, E]);
      q4(b + 'ffn_up_exps.weight', [D, s.nFf, E]);
      q4(b + 'ffn_down_exps.weight', [s.nFf, D, E]);
    } else {
      q4(b + 'ffn_gate.weight', [D, s.nFf]);
      q4(b + 'ffn_up.weight', [D, s.nFf]);
      q4(b + 'ffn_down.weight', [s.nFf, D]);
    }
  }
  g.writeFile(path);
}

/** deepseek2's keys and tensors (writeModel's general keys and vocabulary are already set). */
function writeDeepseek2Layers(g, s, type) {
  const p = 'deepseek2.', D = s.nEmbd, H = s.nHead, R = s.kvLoraRank, hd = s.qkNope + s.qkRope;
  g.setMeta(p + 'attention.q_lora_rank', meta.uint32(0));
  g.setMeta(p + 'attention.kv_lora_rank', meta.uint32(R));
  g.setMeta(p + 'attention.key_length', meta.uint32(R + s.qkRope));
  g.setMeta(p + 'attention.value_length', meta.uint32(R));
  g.setMeta(p + 'attention.key_length_mla', meta.uint32(hd));
  g.setMeta(p + 'attention.value_length_mla', meta.uint32(s.vDim));
  g.setMeta(p + 'rope.dimension_count', meta.uint32(s.qkRope));
  g.setMeta(p + 'leading_dense_block_count', meta.uint32(s.denseLead));
  g.setMeta(p + 'expert_count', meta.uint32(s.nExpert));
  g.setMeta(p + 'expert_used_count', meta.uint32(s.nExpertUsed));
  g.setMeta(p + 'expert_feed_forward_length', meta.uint32(s.nFfExp));
  g.setMeta(p + 'expert_shared_count', meta.uint32(s.nShared));
  g.setMeta(p + 'expert_weights_scale', meta.float32(1));
  const mat = (name, shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (type === 'F16') g.addTensor({ name, type: 'F16', shape, data: () => randomF16(n) });
    else g.addTensor({ name, type: 'Q4_0', shape, data: () => randomQ4_0(n, 1 / Math.sqrt(shape[0])) });
  };
  const ones = (name, n) => g.addTensor({ name, type: 'F32', shape: [n], data: () => new Float32Array(n).fill(1) });
  mat('token_embd.weight', [D, s.nVocab]);
  ones('output_norm.weight', D);
  mat('output.weight', [D, s.nVocab]);
  for (let l = 0; l < s.nLayer; l++) {
    const b = `blk.${l}.`;
    ones(b + 'attn_norm.weight', D);
    mat(b + 'attn_q.weight', [D, H * hd]);
    mat(b + 'attn_kv_a_mqa.weight', [D, R + s.qkRope]);
    ones(b + 'attn_kv_a_norm.weight', R);
    mat(b + 'attn_k_b.weight', [s.qkNope, R, H]);
    mat(b + 'attn_v_b.weight', [R, s.vDim, H]);
    mat(b + 'attn_output.weight', [H * s.vDim, D]);
    ones(b + 'ffn_norm.weight', D);
    if (l < s.denseLead) {
      mat(b + 'ffn_gate.weight', [D, s.nFf]);
      mat(b + 'ffn_up.weight', [D, s.nFf]);
      mat(b + 'ffn_down.weight', [s.nFf, D]);
      continue;
    }
    const E = s.nExpert, F = s.nFfExp, FS = F * s.nShared;
    g.addTensor({
      name: b + 'ffn_gate_inp.weight', type: 'F32', shape: [D, E],
      data: () => Float32Array.from({ length: D * E }, () => (Math.random() - 0.5) * 0.1),
    });
    mat(b + 'ffn_gate_exps.weight', [D, F, E]);
    mat(b + 'ffn_up_exps.weight', [D, F, E]);
    mat(b + 'ffn_down_exps.weight', [F, D, E]);
    mat(b + 'ffn_gate_shexp.weight', [D, FS]);
    mat(b + 'ffn_up_shexp.weight', [D, FS]);
    mat(b + 'ffn_down_shexp.weight', [FS, D]);
  }
}

/**
 * Quantizes `src` (F16) into `dst` with llama.cpp's own quantizer (llama_model_quantize from
 * node-llama-cpp's prebuilt libllama, through the native test tool edgellm_ggml_oracle that
 * `npm run build:tests` builds): the per-tensor mix a file of that type from a model hub has, e.g. FTYPE
 * Q4_0 (Q6_K output) or Q4_K_M.
 */
export function quantizeWithLlamaCpp(src, dst, ftype, threads = 2) {
  const oracle = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'native', 'edgellm_ggml_oracle');
  if (!existsSync(oracle)) throw new Error(`${oracle} not found: build it with \`npm run build:tests\``);
  const r = spawnSync(oracle, ['quantize-model', src, dst, ftype, String(threads)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`llama.cpp's quantizer failed on ${src} (${ftype}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
}

/**
 * A random F16 LoRA adapter of `rank` for a dense model of `s` (llama.cpp's GGUF adapter format,
 * as convert_lora_to_gguf.py writes it), adapting every attention and FFN projection of every layer
 * (PEFT's "all-linear" less the classifier): the most a usual adapter costs. alpha = rank (scale 1).
 */
export function writeLoraAdapter(s, path, rank) {
  const g = new GgufWriter();
  g.setMeta('general.architecture', meta.string(s.arch));
  g.setMeta('general.type', meta.string('adapter'));
  g.setMeta('adapter.type', meta.string('lora'));
  g.setMeta('adapter.lora.alpha', meta.float32(rank));
  const D = s.nEmbd, kd = (D / s.nHead) * s.nHeadKv;
  const pair = (name, cols, rows) => {
    g.addTensor({ name: `${name}.lora_a`, type: 'F16', shape: [cols, rank], data: () => randomF16(cols * rank) });
    g.addTensor({ name: `${name}.lora_b`, type: 'F16', shape: [rank, rows], data: () => randomF16(rank * rows) });
  };
  for (let l = 0; l < s.nLayer; l++) {
    const b = `blk.${l}.`;
    pair(b + 'attn_q.weight', D, D);
    pair(b + 'attn_k.weight', D, kd);
    pair(b + 'attn_v.weight', D, kd);
    pair(b + 'attn_output.weight', D, D);
    pair(b + 'ffn_gate.weight', D, s.nFf);
    pair(b + 'ffn_up.weight', D, s.nFf);
    pair(b + 'ffn_down.weight', s.nFf, D);
  }
  g.writeFile(path);
}
