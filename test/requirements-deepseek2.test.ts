// DeepSeek-V2-Lite's real shape (its config.json) at llama.cpp's Q4_K_M, through the engine's own
// requirements code (modelRequirements, memoryFit) on a header-only GGUF: weights, KV bytes per
// token against a plain-attention model of the same active size, and the verdict for 8 GB and
// 16 GB devices. The README's "DeepSeek-V2-Lite on a Pi" section is this test's output: the test
// fails when the two differ.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { meta, type GgufWriteValue } from '../src/engine/gguf-writer.js';
import { memoryFit, modelRequirements, type ModelRequirements } from '../src/engine/requirements.js';
import { formatBytes } from '../src/cli/units.js';
import { root } from './fixtures/paths.js';
import { writeShapeGguf, type ShapeTensor } from './fixtures/shape-gguf.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-shape-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

// deepseek-ai/DeepSeek-V2-Lite config.json.
const V2_LITE = {
  hidden: 2048, layers: 27, heads: 16, kvLoraRank: 512, qkRope: 64, qkNope: 128, vDim: 128,
  experts: 64, used: 6, shared: 2, moeFf: 1408, denseLead: 1, denseFf: 10944, vocab: 102400,
};

/** The embeddings, the final norm and the classifier, V2-Lite's width and vocabulary. */
function outerTensors(): ShapeTensor[] {
  const D = V2_LITE.hidden;
  return [
    { name: 'token_embd.weight', shape: [D, V2_LITE.vocab] },
    { name: 'output_norm.weight', shape: [D] },
    { name: 'output.weight', shape: [D, V2_LITE.vocab] },
  ];
}

function v2LiteShape(): { metadata: Record<string, GgufWriteValue>; tensors: ShapeTensor[] } {
  const s = V2_LITE, p = 'deepseek2.';
  const D = s.hidden, H = s.heads, R = s.kvLoraRank, hd = s.qkNope + s.qkRope;
  const metadata: Record<string, GgufWriteValue> = {
    'general.architecture': meta.string('deepseek2'),
    'general.name': meta.string('DeepSeek-V2-Lite (shape only)'),
    [p + 'context_length']: meta.uint32(163840),
    [p + 'embedding_length']: meta.uint32(D),
    [p + 'block_count']: meta.uint32(s.layers),
    [p + 'feed_forward_length']: meta.uint32(s.denseFf),
    [p + 'attention.head_count']: meta.uint32(H),
    [p + 'attention.head_count_kv']: meta.uint32(1),
    [p + 'attention.layer_norm_rms_epsilon']: meta.float32(1e-6),
    [p + 'attention.kv_lora_rank']: meta.uint32(R),
    [p + 'attention.key_length']: meta.uint32(R + s.qkRope),
    [p + 'attention.value_length']: meta.uint32(R),
    [p + 'attention.key_length_mla']: meta.uint32(hd),
    [p + 'attention.value_length_mla']: meta.uint32(s.vDim),
    [p + 'rope.dimension_count']: meta.uint32(s.qkRope),
    [p + 'rope.freq_base']: meta.float32(10000),
    [p + 'rope.scaling.type']: meta.string('yarn'),
    [p + 'rope.scaling.factor']: meta.float32(40),
    [p + 'rope.scaling.original_context_length']: meta.uint32(4096),
    [p + 'rope.scaling.yarn_log_multiplier']: meta.float32(0.0707),
    [p + 'leading_dense_block_count']: meta.uint32(s.denseLead),
    [p + 'expert_count']: meta.uint32(s.experts),
    [p + 'expert_used_count']: meta.uint32(s.used),
    [p + 'expert_feed_forward_length']: meta.uint32(s.moeFf),
    [p + 'expert_shared_count']: meta.uint32(s.shared),
    [p + 'expert_weights_scale']: meta.float32(1),
  };
  const tensors = outerTensors();
  for (let l = 0; l < s.layers; l++) {
    const b = `blk.${l}.`;
    tensors.push(
      { name: b + 'attn_norm.weight', shape: [D] },
      { name: b + 'attn_q.weight', shape: [D, H * hd] },
      { name: b + 'attn_kv_a_mqa.weight', shape: [D, R + s.qkRope] },
      { name: b + 'attn_kv_a_norm.weight', shape: [R] },
      { name: b + 'attn_k_b.weight', shape: [s.qkNope, R, H] },
      { name: b + 'attn_v_b.weight', shape: [R, s.vDim, H] },
      { name: b + 'attn_output.weight', shape: [H * s.vDim, D] },
      { name: b + 'ffn_norm.weight', shape: [D] },
    );
    if (l < s.denseLead) {
      tensors.push(
        { name: b + 'ffn_gate.weight', shape: [D, s.denseFf] },
        { name: b + 'ffn_up.weight', shape: [D, s.denseFf] },
        { name: b + 'ffn_down.weight', shape: [s.denseFf, D] },
      );
    } else {
      const FS = s.moeFf * s.shared;
      tensors.push(
        { name: b + 'ffn_gate_inp.weight', shape: [D, s.experts] },
        { name: b + 'ffn_gate_exps.weight', shape: [D, s.moeFf, s.experts] },
        { name: b + 'ffn_up_exps.weight', shape: [D, s.moeFf, s.experts] },
        { name: b + 'ffn_down_exps.weight', shape: [s.moeFf, D, s.experts] },
        { name: b + 'ffn_gate_shexp.weight', shape: [D, FS] },
        { name: b + 'ffn_up_shexp.weight', shape: [D, FS] },
        { name: b + 'ffn_down_shexp.weight', shape: [FS, D] },
      );
    }
  }
  return { metadata, tensors };
}

/**
 * A llama with plain multi-head attention of the same width, depth and heads (128 per head, K and
 * V cached per head) and the FFN width that makes its weights per token equal V2-Lite's active ones.
 */
function plainShape(nHeadKv: number, ffn: number): { metadata: Record<string, GgufWriteValue>; tensors: ShapeTensor[] } {
  const s = V2_LITE, p = 'llama.', D = s.hidden, kd = (D / s.heads) * nHeadKv;
  const metadata: Record<string, GgufWriteValue> = {
    'general.architecture': meta.string('llama'),
    [p + 'context_length']: meta.uint32(163840),
    [p + 'embedding_length']: meta.uint32(D),
    [p + 'block_count']: meta.uint32(s.layers),
    [p + 'feed_forward_length']: meta.uint32(ffn),
    [p + 'attention.head_count']: meta.uint32(s.heads),
    [p + 'attention.head_count_kv']: meta.uint32(nHeadKv),
  };
  const tensors = outerTensors();
  for (let l = 0; l < s.layers; l++) {
    const b = `blk.${l}.`;
    tensors.push(
      { name: b + 'attn_norm.weight', shape: [D] },
      { name: b + 'attn_q.weight', shape: [D, D] },
      { name: b + 'attn_k.weight', shape: [D, kd] },
      { name: b + 'attn_v.weight', shape: [D, kd] },
      { name: b + 'attn_output.weight', shape: [D, D] },
      { name: b + 'ffn_norm.weight', shape: [D] },
      { name: b + 'ffn_gate.weight', shape: [D, ffn] },
      { name: b + 'ffn_up.weight', shape: [D, ffn] },
      { name: b + 'ffn_down.weight', shape: [ffn, D] },
    );
  }
  return { metadata, tensors };
}

/** Weights one token reads: everything but the unused routed experts (and all but one embedding row). */
function activeParams(shape: { tensors: ShapeTensor[] }): number {
  const s = V2_LITE;
  return shape.tensors.reduce((n, t) => {
    const elems = t.shape.reduce((a, b) => a * b, 1);
    if (t.name === 'token_embd.weight') return n + t.shape[0]!;
    if (t.name.includes('_exps.')) return n + (elems / s.experts) * s.used;
    return n + elems;
  }, 0);
}

const GiB = 1024 ** 3;
// A device's memory as the verdict sees it: the whole RAM, less 0.5 GiB the OS and services hold.
const device = (gib: number) => ({ totalBytes: gib * GiB, availableBytes: (gib - 0.5) * GiB, source: '/proc/meminfo' as const });

function verdicts(req: ModelRequirements): string {
  return [8, 16].map((gib) => `${gib} GB: ${memoryFit(req, device(gib)).verdict}`).join(', ');
}

t.test("DeepSeek-V2-Lite Q4_K_M: weights, compressed KV per token vs plain attention, and the 8/16 GB verdicts (as in the README)", async (t) => {
  const lite = v2LiteShape();
  const litePath = join(dir, 'deepseek-v2-lite-q4_k_m.gguf');
  await writeShapeGguf(litePath, lite.metadata, lite.tensors, 'q4_k_m');
  const req = modelRequirements(litePath, { contextSize: 4096 });
  const req32k = modelRequirements(litePath, { contextSize: 32768 });

  // 27 layers x (512 latent + 64 rope) x 2 bytes: the compressed cache, not 16 heads' K and V.
  t.equal(req.kv_bytes_per_token, 27 * 576 * 2);
  t.equal(req.kv_bytes_per_sequence, 4096 * 27 * 576 * 2);
  t.equal(req.kv_lora_rank, 512);

  // A plain-attention llama whose weights per token match V2-Lite's active weights.
  const active = activeParams(lite);
  const D = V2_LITE.hidden;
  const rows: string[] = [];
  const plain: Record<string, ModelRequirements> = {};
  const ffnOf: Record<string, number> = {};
  for (const kv of [16, 4]) {
    // Per layer: what is left of V2-Lite's active weights after the attention, in three FFN matrices.
    const attn = 2 * D * D + 2 * D * (D / V2_LITE.heads) * kv;
    const perLayer = (active - D - D * V2_LITE.vocab) / V2_LITE.layers - attn;
    const ffn = (ffnOf[kv] = Math.round(perLayer / (3 * D) / 256) * 256);
    const shape = plainShape(kv, ffn);
    const path = join(dir, `plain-${kv}.gguf`);
    await writeShapeGguf(path, shape.metadata, shape.tensors, 'q4_k_m');
    plain[kv] = modelRequirements(path, { contextSize: 4096 });
    const ratio = activeParams(shape) / active;
    t.ok(Math.abs(ratio - 1) < 0.02, `plain model with ${kv} KV heads: ${(ratio * 100).toFixed(1)}% of V2-Lite's active weights`);
  }
  t.equal(plain[16]!.kv_bytes_per_token, 27 * 2 * 2048 * 2, 'multi-head attention: 16 heads of K and V per layer');

  const line = (label: string, r: ModelRequirements, r32k?: ModelRequirements) =>
    `| ${label} | ${formatBytes(r.weight_bytes)} | ${formatBytes(r.kv_bytes_per_token)} | ${formatBytes(r.kv_bytes_per_sequence)} |` +
    ` ${r32k ? formatBytes(r32k.kv_bytes_per_sequence) : formatBytes(r.kv_bytes_per_token * 32768)} | ${verdicts(r)} |`;
  rows.push(
    '| model (Q4_K_M) | weights | KV per token | KV at 4096 | KV at 32768 | verdict at 4096 (8 GB, 16 GB) |',
    '| --- | --- | --- | --- | --- | --- |',
    line('DeepSeek-V2-Lite, latent attention', req, req32k),
    line(`plain multi-head attention, same active size (16 KV heads, FFN ${ffnOf[16]})`, plain[16]!),
    line(`grouped-query attention, same active size (4 KV heads, FFN ${ffnOf[4]})`, plain[4]!),
  );
  const table = rows.join('\n');
  t.comment('\n' + table);
  t.equal(memoryFit(req, device(16)).verdict, 'fits');
  t.equal(memoryFit(req, device(8)).verdict, 'too-big');

  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  t.ok(readme.includes(table), "README's DeepSeek-V2-Lite table is this output (update it from the comment above)");
});
