// Memory: weights are mapped, not copied, so loading a model costs little resident memory until
// its pages are read; and a sliding-window model keeps a fixed KV cache however long it runs.
// Resident memory is read from /proc/self/status (Linux): RssAnon is the engine's own memory,
// RssFile the pages of mapped files that have been touched.
import t from 'tap';
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchModel } from '../src/engine/bench-model.js';
import { GgufWriter, meta } from '../src/engine/gguf-writer.js';
import { loadModel } from '../src/engine/model.js';
import { f32ToF16 } from '../src/engine/quant.js';
import { writeModel, type Spec } from './fixtures/random-model.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-memory-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const MB = 1024 * 1024;

/** kB fields of /proc/self/status, in bytes. */
function status(): { rss: number; anon: number; file: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** Block bytes and the byte offsets of the f16 scales (d, dmin) of the types these models use. */
const BLOCKS = {
  Q4_0: { elems: 32, bytes: 18, scales: [0] },
  Q4_K: { elems: 256, bytes: 144, scales: [0, 2] },
  Q6_K: { elems: 256, bytes: 210, scales: [208] },
} as const;
type BlockType = keyof typeof BLOCKS;

/**
 * A dense llama of random blocks (the values do not matter here): 1024 wide, 8 layers, FFN 2816,
 * 32000 tokens: an 84 MB file in Q4_0, 69 MB of it read per decoded token. `typeOf` gives each
 * matrix's type (Q4_0 everywhere by default; Q4_K with Q6_K output and ffn_down is the shape of a
 * Q4_K_M file). Blocks are random bytes with fixed scales, so writing it takes well under a second.
 */
function writeLargeQ4Model(path: string, typeOf: (name: string) => BlockType = () => 'Q4_0'): void {
  const D = 1024, F = 2816, V = 32000, L = 8, KD = 256;
  const g = new GgufWriter();
  g.setMeta('general.architecture', meta.string('llama'));
  g.setMeta('llama.context_length', meta.uint32(4096));
  g.setMeta('llama.embedding_length', meta.uint32(D));
  g.setMeta('llama.block_count', meta.uint32(L));
  g.setMeta('llama.feed_forward_length', meta.uint32(F));
  g.setMeta('llama.attention.head_count', meta.uint32(16));
  g.setMeta('llama.attention.head_count_kv', meta.uint32(4));
  g.setMeta('llama.attention.layer_norm_rms_epsilon', meta.float32(1e-5));
  const d = f32ToF16(0.005);
  const q4 = (name: string, shape: number[]) => {
    const type = typeOf(name);
    const { elems, bytes, scales } = BLOCKS[type];
    g.addTensor({
      name, type, shape,
      data: () => {
        const out = randomFillSync(new Uint8Array((shape[0]! * shape[1]! / elems) * bytes));
        for (let b = 0; b < out.length; b += bytes) for (const o of scales) (out[b + o] = d & 0xff), (out[b + o + 1] = d >> 8);
        return out;
      },
    });
  };
  const ones = (name: string) => g.addTensor({ name, type: 'F32', shape: [D], data: () => new Float32Array(D).fill(1) });
  q4('token_embd.weight', [D, V]);
  ones('output_norm.weight');
  q4('output.weight', [D, V]);
  for (let l = 0; l < L; l++) {
    ones(`blk.${l}.attn_norm.weight`);
    ones(`blk.${l}.ffn_norm.weight`);
    q4(`blk.${l}.attn_q.weight`, [D, D]);
    q4(`blk.${l}.attn_k.weight`, [D, KD]);
    q4(`blk.${l}.attn_v.weight`, [D, KD]);
    q4(`blk.${l}.attn_output.weight`, [D, D]);
    q4(`blk.${l}.ffn_gate.weight`, [D, F]);
    q4(`blk.${l}.ffn_up.weight`, [D, F]);
    q4(`blk.${l}.ffn_down.weight`, [F, D]);
  }
  g.writeFile(path);
}

const linux = existsSync('/proc/self/status');

t.test('loading an 84 MB Q4_0 model adds <= 64 MB resident; one decode adds only the weight pages it reads', { skip: !linux && 'needs /proc/self/status' }, async (t) => {
  const path = join(dir, 'large-q4_0.gguf');
  writeLargeQ4Model(path);
  const fileBytes = statSync(path).size;
  const before = status();
  const model = await loadModel(path, { threads: 2, contextSize: 512 });
  t.teardown(() => model.close());
  const loaded = status();
  const info = model.info();
  await model.evalLogits([1]);
  const decoded = status();
  const mb = (x: number) => (x / MB).toFixed(1);
  t.comment(
    `file ${mb(fileBytes)} MB, weights ${mb(info.weight_bytes)} MB, KV ${mb(info.kv_bytes_per_sequence)} MB (context 512); ` +
      `RSS before ${mb(before.rss)} MB; after load +${mb(loaded.rss - before.rss)} MB ` +
      `(anon +${mb(loaded.anon - before.anon)}, file +${mb(loaded.file - before.file)}); ` +
      `after one decode +${mb(decoded.rss - before.rss)} MB (anon +${mb(decoded.anon - before.anon)}, file +${mb(decoded.file - before.file)})`,
  );
  t.ok(loaded.rss - before.rss <= 64 * MB, `load without running: +${mb(loaded.rss - before.rss)} MB <= 64 MB`);
  // One decode reads every weight once (file pages) and allocates the sequence's KV cache.
  t.ok(decoded.anon - before.anon <= 64 * MB + info.kv_bytes_per_sequence, `engine memory after a decode: +${mb(decoded.anon - before.anon)} MB <= 64 MB + KV`);
  t.ok(decoded.rss - before.rss <= 64 * MB + info.kv_bytes_per_sequence + fileBytes, 'RSS after a decode <= 64 MB + KV + the file');
  t.ok(decoded.file - loaded.file >= 0.5 * info.weight_bytes, 'the decode did read the weights through the mapping');
});

t.test('a Q4_K_M file adds no more resident memory than the Q4_0 file of the same model (weights stay mapped)', { skip: !linux && 'needs /proc/self/status' }, async (t) => {
  // Both stay loaded, the second on top of the first, so neither load reuses memory the other
  // freed: each load's growth of the engine's own memory (RssAnon) after one decode, which
  // allocates the KV cache and the activation scratch.
  const models: Array<{ close(): void }> = [];
  t.teardown(() => models.forEach((m) => m.close()));
  const growth = async (path: string) => {
    const before = status();
    const model = await loadModel(path, { threads: 2, contextSize: 512 });
    models.push(model);
    await model.evalLogits([1]);
    return { anon: status().anon - before.anon, kv: model.info().kv_bytes_per_sequence };
  };
  const q4_0 = join(dir, 'large-q4_0-b.gguf');
  const q4_k_m = join(dir, 'large-q4_k_m.gguf');
  writeLargeQ4Model(q4_0);
  writeLargeQ4Model(q4_k_m, (name) => (name === 'output.weight' || name.endsWith('ffn_down.weight') ? 'Q6_K' : 'Q4_K'));
  const a = await growth(q4_0);
  const b = await growth(q4_k_m);
  const mb = (x: number) => (x / MB).toFixed(1);
  t.comment(`engine memory after load + one decode: Q4_0 +${mb(a.anon)} MB, Q4_K_M +${mb(b.anon)} MB (KV ${mb(b.kv)} MB)`);
  // The only per-type difference allowed is the activation scratch (Q8_K is 292 bytes per 256
  // floats against Q8_0's 34 per 32: a few KiB here); 4 MB covers the allocator's noise.
  t.ok(b.anon <= a.anon + 4 * MB, `Q4_K_M +${mb(b.anon)} MB <= Q4_0 +${mb(a.anon)} MB + 4 MB`);
  t.ok(b.anon <= 64 * MB + b.kv, `Q4_K_M engine memory +${mb(b.anon)} MB <= 64 MB + KV`);
});

t.test('a sliding-window model generates 100,000 tokens with its KV cache fixed at W slots per layer', async (t) => {
  const W = 16;
  const spec: Spec = { name: 'mistral window 16', arch: 'llama', nVocab: 96, nEmbd: 64, nLayer: 2, nHead: 4, nHeadKv: 1, headDim: 16, nFf: 96, window: W };
  const { path } = writeModel(spec, dir);
  // Each layer: W slots (batch 1: a ring of W + batch - 1) x K and V x 1 head x 16 dims x 2 bytes.
  const ringBytes = spec.nLayer * 2 * W * spec.nHeadKv * spec.headDim * 2;
  const N = 100_000;

  // Through the public API: one sequence decoded one token per step, context only 64 positions.
  const model = await loadModel(path, { threads: 1, contextSize: 64, batchSize: 1 });
  t.teardown(() => model.close());
  t.equal(model.info().unbounded, true, 'no layer can fill up');
  t.equal(model.info().kv_bytes_per_sequence, ringBytes, `KV per sequence = ${ringBytes} bytes`);
  const tokens = Int32Array.from({ length: N }, (_, i) => (i * 37 + 3) % spec.nVocab);
  const [logits] = await model.evalSequences([{ tokens, prefill: 1 }]);
  t.equal(logits!.length, N * spec.nVocab, `${N} positions evaluated`);
  const last = logits!.subarray((N - 1) * spec.nVocab);
  t.ok(last.every(Number.isFinite), 'the last position has finite logits');
  t.equal(model.info().kv_bytes_per_sequence, ringBytes, 'KV bytes unchanged after 100,000 tokens');

  // Natively, as the decode loop runs: no JS per token.
  const r = await benchModel(path, { threads: 1, promptTokens: 0, genTokens: N, batchSize: 1 });
  t.comment(`window ${W}: ${N} tokens decoded at ${r.tg_tps.toFixed(0)} tokens/s with a ${r.kv_bytes}-byte KV cache (${W} slots x ${spec.nLayer} layers x K,V)`);
  t.equal(r.kv_bytes, ringBytes, 'the native decode keeps the same fixed KV');
});
