/**
 * Which type each tensor of a model gets in one of llama.cpp's quantization mixes ("Q4_K_M",
 * "Q4_0", ...): the rules of llama.cpp's llama_model_quantize without an importance matrix
 * (src/llama-quant.cpp of the release node-llama-cpp 3.21.1 bundles: tensor_allows_quantization,
 * llama_tensor_get_type_impl, tensor_type_fallback), for the mixes edgellm writes.
 *
 * In short: 1-D tensors, norms, the MoE router and position/token-type embeddings keep their type;
 * the output matrix (or a tied token embedding) becomes Q6_K (Q8_0 in a Q8_0 file, or when its rows
 * do not fit the mix's block); attn_v and ffn_down get more bits in some layers of the _M mixes
 * (use_more_bits: the first and last eighth and every third layer between); a tensor whose rows are
 * not whole blocks of its type falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
 * Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL) and, if still not whole blocks, to F16.
 *
 * Tensors are decided, and written, in llama.cpp's order (non-layer tensors first, then by layer
 * number, by name within a layer): the per-layer counters of the rules follow that order.
 */
import type { GgufInfo, GgufTensorInfo, GgufTensorType } from './gguf.js';
import { blockElems } from './quant.js';

export type QuantizeType =
  | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q8_0'
  | 'q2_k' | 'q3_k_m' | 'q4_k_s' | 'q4_k_m' | 'q5_k_m' | 'q6_k'
  | 'iq4_nl' | 'iq4_xs';

export const QUANTIZE_TYPES: readonly QuantizeType[] = [
  'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0', 'q2_k', 'q3_k_m', 'q4_k_s', 'q4_k_m', 'q5_k_m', 'q6_k', 'iq4_nl', 'iq4_xs',
];

/** A mix: llama.cpp's llama_ftype (written to general.file_type) and the type most tensors get. */
export const MIXES: Readonly<Record<QuantizeType, { fileType: number; base: GgufTensorType }>> = {
  q4_0: { fileType: 2, base: 'Q4_0' },
  q4_1: { fileType: 3, base: 'Q4_1' },
  q8_0: { fileType: 7, base: 'Q8_0' },
  q5_0: { fileType: 8, base: 'Q5_0' },
  q5_1: { fileType: 9, base: 'Q5_1' },
  q2_k: { fileType: 10, base: 'Q2_K' },
  q3_k_m: { fileType: 12, base: 'Q3_K' },
  q4_k_s: { fileType: 14, base: 'Q4_K' },
  q4_k_m: { fileType: 15, base: 'Q4_K' },
  q5_k_m: { fileType: 17, base: 'Q5_K' },
  q6_k: { fileType: 18, base: 'Q6_K' },
  iq4_nl: { fileType: 25, base: 'IQ4_NL' },
  iq4_xs: { fileType: 30, base: 'IQ4_XS' },
};

/** The hyperparameters the rules read. */
export interface MixModel {
  arch: string;
  /** block_count (llama.cpp's n_layer_all). */
  nLayer: number;
  /** expert_count (0 for a dense model). */
  nExpert: number;
  /** Query heads per KV head (head_count / head_count_kv, integer division; 0 without KV heads). */
  nGqa: number;
  /** llama.cpp's LLM_TYPE_70B (80-layer llama with GQA, or 80-layer qwen2): attn_v gets Q5_K. */
  is70B: boolean;
}

function metaNumber(info: GgufInfo, key: string): number | undefined {
  const v = info.metadata[key];
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  // Per-layer arrays (head_count_kv of models with varying heads): llama.cpp's n_gqa() reads layer 0.
  if (v instanceof Int32Array || Array.isArray(v)) return typeof v[0] === 'number' ? v[0] : undefined;
  return undefined;
}

export function mixModel(info: GgufInfo): MixModel {
  const arch = String(info.metadata['general.architecture'] ?? '');
  const nLayer = metaNumber(info, `${arch}.block_count`) ?? 0;
  const nExpert = metaNumber(info, `${arch}.expert_count`) ?? 0;
  const nHead = metaNumber(info, `${arch}.attention.head_count`) ?? 0;
  const nHeadKv = metaNumber(info, `${arch}.attention.head_count_kv`) ?? nHead;
  const is70B = nLayer === 80 && ((arch === 'llama' && nExpert !== 8 && nHead !== nHeadKv) || arch === 'qwen2');
  return { arch, nLayer, nExpert, nGqa: nHeadKv ? Math.floor(nHead / nHeadKv) : 0, is70B };
}

/** ggml_n_dims: dimensions up to the last one larger than 1 (a [64, 1] tensor is 1-D). */
function nDims(shape: number[]): number {
  for (let i = shape.length - 1; i > 0; i--) if (shape[i]! > 1) return i + 1;
  return 1;
}

/** Name parts of tensors llama.cpp never quantizes (of any architecture it knows). */
const NEVER_QUANTIZED = [
  '_norm.weight', 'ffn_gate_inp.weight', 'ffn_gate_tid2eid.weight', 'altup', 'laurel', 'per_layer_model_proj',
  'ssm_conv1d', 'shortconv.conv.weight', 'indexer.k_proj.weight', 'indexer.q_proj.weight',
  'time_mix_first.weight', 'time_mix_w0.weight', 'time_mix_w1.weight', 'time_mix_w2.weight', 'time_mix_v0.weight',
  'time_mix_v1.weight', 'time_mix_v2.weight', 'time_mix_a0.weight', 'time_mix_a1.weight', 'time_mix_a2.weight',
  'time_mix_g1.weight', 'time_mix_g2.weight', 'time_mix_decay_w1.weight', 'time_mix_decay_w2.weight',
  'time_mix_lerp_fused.weight', 'attn_rel_b.weight', '.position_embd', 'sam.pos_embd', 'sam.neck.', 'sam.net_',
  '.rel_pos', '.patch_embd', '.patch_merger', 'a.rvq.codebook', 'mm.a.code_embd',
];

/** llama.cpp's tensor_allows_quantization: 2-D+ tensors named *weight, less the exceptions. */
export function allowsQuantization(t: Pick<GgufTensorInfo, 'name' | 'shape'>): boolean {
  const n = t.name;
  return (
    nDims(t.shape) >= 2 &&
    n.endsWith('weight') &&
    !NEVER_QUANTIZED.some((part) => n.includes(part)) &&
    n !== 'position_embd.weight' &&
    n !== 'token_types.weight'
  );
}

/** The layer of "blk.N.…" (sscanf("blk.%d.")), or -1. */
function layerOf(name: string): number {
  const m = /^blk\.\s*([+-]?\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** llama.cpp's tensor order (its weight_name_comparer): by layer (-1 for non-layer tensors first), then by name. */
export function llamaTensorOrder<T extends { name: string }>(tensors: readonly T[]): T[] {
  return [...tensors].sort((a, b) => {
    const la = layerOf(a.name), lb = layerOf(b.name);
    if (la !== lb) return la - lb;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}

type Category =
  | 'token_embd' | 'output' | 'attn_qkv' | 'attn_kv_b' | 'attn_v' | 'attn_k' | 'attn_q' | 'attn_output'
  | 'ffn_up' | 'ffn_gate' | 'ffn_down' | 'other';

/** llama.cpp's tensor_get_category (first match wins, by substring). */
function categoryOf(name: string): Category {
  if (name === 'output.weight') return 'output';
  if (name === 'token_embd.weight' || name === 'per_layer_token_embd.weight') return 'token_embd';
  for (const c of ['attn_qkv', 'attn_kv_b', 'attn_v', 'attn_k', 'attn_q', 'attn_output'] as const) {
    if (name.includes(`${c}.weight`)) return c;
  }
  for (const c of ['ffn_up', 'ffn_gate', 'ffn_down'] as const) if (name.includes(c)) return c;
  return 'other';
}

const isAttnV = (c: Category) => c === 'attn_v' || c === 'attn_qkv' || c === 'attn_kv_b';

/** More bits for the first and last eighth of the layers and every third one between. */
function useMoreBits(i: number, n: number): boolean {
  return i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
}

/** What happens to one tensor. */
export interface TensorChoice {
  name: string;
  type: GgufTensorType;
  /** The type the rules chose, when the tensor's rows are not whole blocks of it (then `type` is the fallback). */
  wanted?: GgufTensorType;
}

/**
 * The type of every tensor of `info` in mix `q`, in llama.cpp's order. A tensor llama.cpp keeps
 * keeps its type. Throws Error only for a MoE tensor name without a layer (llama.cpp refuses those too).
 */
export function chooseTypes(info: GgufInfo, q: QuantizeType): TensorChoice[] {
  const model = mixModel(info);
  const base = MIXES[q].base;
  const ordered = llamaTensorOrder(info.tensors);
  const tied = !info.tensors.some((t) => t.name === 'output.weight');
  const nAttnV = ordered.filter((t) => isAttnV(categoryOf(t.name))).length;
  const falcon = model.arch === 'falcon';
  const counters = { attnV: 0, ffnDown: 0, ffnGate: 0, ffnUp: 0 };

  // llama.cpp's layer_info: MoE tensors take the layer from their name, dense ones from the count so far.
  const layer = (count: number, name: string): number => {
    if (model.nExpert <= 1) return count;
    const l = layerOf(name);
    if (l < 0 || l >= model.nLayer) throw new Error(`cannot tell the layer of tensor '${name}' (of ${model.nLayer})`);
    return l;
  };

  /** llama_tensor_get_type_impl for the mixes edgellm writes. */
  const rule = (t: GgufTensorInfo, cat: Category): GgufTensorType => {
    let type = base;
    const n = model.nLayer;
    if (cat === 'output' || (tied && cat === 'token_embd')) {
      if (falcon || t.shape[0]! % blockElems(type) !== 0) return 'Q8_0';
      return type === 'Q8_0' ? type : 'Q6_K';
    }
    if (cat === 'token_embd') return type;  // changes only in mixes edgellm does not write
    if (isAttnV(cat)) {
      if (q === 'q2_k') type = model.nGqa >= 4 ? 'Q4_K' : 'Q3_K';
      else if (q === 'q3_k_m') type = counters.attnV < 2 ? 'Q5_K' : 'Q4_K';
      else if ((q === 'iq4_nl' || q === 'iq4_xs') && model.nGqa >= 4) type = 'Q5_K';
      else if ((q === 'q4_k_m' || q === 'q5_k_m') && useMoreBits(counters.attnV, nAttnV)) type = 'Q6_K';
      else if (q === 'q4_k_s' && counters.attnV < 4) type = 'Q5_K';
      if (model.is70B && (type === 'Q3_K' || type === 'Q4_K')) type = 'Q5_K';
      if (model.nExpert === 8) type = 'Q8_0';
      counters.attnV++;
      return type;
    }
    if (cat === 'attn_k') return model.nExpert === 8 ? 'Q8_0' : type;
    if (cat === 'attn_q') return type;
    if (cat === 'ffn_down') {
      const i = layer(counters.ffnDown, t.name);
      counters.ffnDown++;
      if (q === 'q2_k') return 'Q3_K';
      if (q === 'q3_k_m') return i < Math.trunc(n / 16) ? 'Q5_K' : !falcon || useMoreBits(i, n) ? 'Q4_K' : 'Q3_K';
      if (q === 'q4_k_m') {
        if (falcon) return i < Math.trunc(n / 16) ? 'Q6_K' : useMoreBits(i, n) ? 'Q5_K' : 'Q4_K';
        return useMoreBits(i, n) ? 'Q6_K' : type;
      }
      if (i < Math.trunc(n / 8) && (q === 'iq4_nl' || q === 'iq4_xs')) return 'Q5_K';  // no imatrix
      if (q === 'q5_k_m') return useMoreBits(i, n) ? 'Q6_K' : type;
      if (q === 'q4_k_s' && !falcon && i < Math.trunc(n / 8)) return 'Q5_K';
      return type;
    }
    if (cat === 'attn_output') {
      if (falcon) return type;
      if (model.nExpert === 8) {
        return q === 'q2_k' || q === 'q3_k_m' || q === 'iq4_nl' || q === 'q4_k_s' || q === 'q4_k_m' || q === 'iq4_xs' ? 'Q5_K' : type;
      }
      return q === 'q2_k' ? 'Q3_K' : q === 'q3_k_m' ? 'Q4_K' : type;
    }
    if (cat === 'ffn_gate') {
      layer(counters.ffnGate++, t.name);
      return type;
    }
    if (cat === 'ffn_up') {
      layer(counters.ffnUp++, t.name);
      return type;
    }
    return type;
  };

  return ordered.map((t): TensorChoice => {
    if (!allowsQuantization(t)) return { name: t.name, type: t.type };
    const wanted = rule(t, categoryOf(t.name));
    const type = fallback(wanted, t.shape[0]!);
    return type === wanted ? { name: t.name, type } : { name: t.name, type, wanted };
  });
}

/** llama.cpp's tensor_type_fallback: a type whose blocks fit a row of `rowLength`, else F16. */
export function fallback(type: GgufTensorType, rowLength: number): GgufTensorType {
  if (rowLength % blockElems(type) === 0) return type;
  const smaller: Partial<Record<GgufTensorType, GgufTensorType>> = {
    IQ4_XS: 'IQ4_NL', Q2_K: 'Q4_0', Q3_K: 'Q4_0', Q4_K: 'Q5_0', Q5_K: 'Q5_1', Q6_K: 'Q8_0',
  };
  const next = smaller[type] ?? type;
  return rowLength % blockElems(next) === 0 ? next : 'F16';
}
