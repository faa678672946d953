// `edgellm inspect` and modelRequirements: what a model file needs, read from metadata alone, must
// agree with what loadModel allocates; the CLI prints it with a verdict line, or one error line.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GgufTensorType } from '../src/engine/gguf.js';
import { GgufWriter, meta } from '../src/engine/gguf-writer.js';
import { typeBytes } from '../src/engine/quant.js';
import { loadModel } from '../src/engine/model.js';
import { deviceMemory, memoryFit, modelRequirements, RUNTIME_BYTES, type ModelRequirements } from '../src/engine/requirements.js';
import { writeDeepseek2 } from './fixtures/random-deepseek2.js';
import { assertCliBuilt, requireModel as requireSharedModel, run, type TapTest } from './fixtures/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-inspect-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The real-model tests run when ../shared/models is there; in CI (CI=true) it must be. */
const requireModel = (t: TapTest, file: string) => requireSharedModel(t, file, `${file} inspect`);

t.before(assertCliBuilt);

/** A random-weight llama (F32), optionally Mistral-style sliding-window on every layer. */
function writeLlama(path: string, opts: { window?: number; context?: number } = {}): void {
  const E = 64, L = 3, F = 96, V = 40, H = 4, KV = 2;
  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'));
  w.setMeta('general.name', meta.string('tiny test llama'));
  w.setMeta('llama.context_length', meta.uint32(opts.context ?? 256));
  w.setMeta('llama.embedding_length', meta.uint32(E));
  w.setMeta('llama.block_count', meta.uint32(L));
  w.setMeta('llama.feed_forward_length', meta.uint32(F));
  w.setMeta('llama.attention.head_count', meta.uint32(H));
  w.setMeta('llama.attention.head_count_kv', meta.uint32(KV));
  if (opts.window) w.setMeta('llama.attention.sliding_window', meta.uint32(opts.window));
  const kvDim = (E / H) * KV;
  const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.1);
  w.addTensor({ name: 'token_embd.weight', type: 'F32', shape: [E, V], data: rnd(E * V) });
  for (let l = 0; l < L; l++) {
    const p = `blk.${l}.`;
    w.addTensor({ name: p + 'attn_norm.weight', type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
    w.addTensor({ name: p + 'attn_q.weight', type: 'F16', shape: [E, E], data: rnd(E * E) });
    w.addTensor({ name: p + 'attn_k.weight', type: 'F16', shape: [E, kvDim], data: rnd(E * kvDim) });
    w.addTensor({ name: p + 'attn_v.weight', type: 'F16', shape: [E, kvDim], data: rnd(E * kvDim) });
    w.addTensor({ name: p + 'attn_output.weight', type: 'F16', shape: [E, E], data: rnd(E * E) });
    w.addTensor({ name: p + 'ffn_norm.weight', type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
    w.addTensor({ name: p + 'ffn_gate.weight', type: 'Q8_0', shape: [E, F], data: rnd(E * F) });
    w.addTensor({ name: p + 'ffn_up.weight', type: 'Q8_0', shape: [E, F], data: rnd(E * F) });
    w.addTensor({ name: p + 'ffn_down.weight', type: 'Q4_0', shape: [F, E], data: rnd(E * F) });
  }
  w.addTensor({ name: 'output_norm.weight', type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
  w.writeFile(path);
}

t.test('stories260K: architecture, 292,800 parameters, 48 F32 tensors and a fits verdict', async (t) => {
  const path = requireModel(t, 'stories260K.gguf');
  if (!path) return;
  const r = run(['inspect', path]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^architecture:\s+llama$/m);
  t.match(r.stdout, /^parameters:\s+292,800$/m);
  t.match(r.stdout, /^\s+F32\s+48 tensors\s+1\.12 MiB$/m);
  t.match(r.stdout, /^context:\s+2048 trained; KV cache sized for 2048, 640 B per token$/m);
  t.match(r.stdout, /^device RAM:\s+\S+ \S+ total, \S+ \S+ available$/m);
  t.match(r.stdout, /^memory:\s+131 MiB = weights 1\.12 MiB \+ KV cache 1\.25 MiB \(1 sequence of 2048 positions\) \+ scratch 209 KiB \+ runtime 128 MiB$/m);
  t.match(r.stdout, /^verdict:\s+FITS: needs 131 MiB of .* available$/m);
});

t.test('TinyLLama-v0: 4,621,376 parameters, 58 Q4_0 and 17 F32 tensors', async (t) => {
  const path = requireModel(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!path) return;
  const r = run(['inspect', path, '--context', '512']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^architecture:\s+llama$/m);
  t.match(r.stdout, /^parameters:\s+4,621,376$/m);
  t.match(r.stdout, /^\s+Q4_0\s+58 tensors /m);
  t.match(r.stdout, /^\s+F32\s+17 tensors /m);
  t.match(r.stdout, /KV cache sized for 512, 2\.00 KiB per token$/m);
  t.match(r.stdout, /^verdict:\s+FITS: /m);
});

t.test('--json is one valid object: counts, bytes per type, KV bytes and the verdict', async (t) => {
  const path = requireModel(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!path) return;
  const r = run(['inspect', path, '--json', '--context', '512']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim().split('\n').length, 1);
  const j = JSON.parse(r.stdout) as ModelRequirements & {
    memory: { needed_bytes: number; total_bytes: number; available_bytes: number };
    fits: boolean;
    verdict: string;
  };
  t.match(j, { arch: 'llama', n_params: 4621376, n_layer: 8, n_head_kv: 16, head_dim: 4, context_size: 512, fits: true, verdict: 'fits' });
  t.same(Object.keys(j.tensor_types).sort(), ['F32', 'Q4_0']);
  t.equal(j.tensor_types.Q4_0!.count, 58);
  t.equal(j.tensor_types.F32!.count, 17);
  t.equal(j.tensor_types.Q4_0!.bytes + j.tensor_types.F32!.bytes, j.weight_bytes, 'bytes per type sum to the weights');
  t.equal(j.file_size, 3365984);
  // layers x kv_heads x head_dim x 2 (K, V) x 2 bytes (f16) x positions
  t.equal(j.kv_bytes_per_sequence, 8 * 16 * 4 * 2 * 2 * 512);
  t.equal(j.memory.needed_bytes, j.weight_bytes + j.kv_bytes_per_sequence + j.scratch_bytes + j.n_vocab * 4 + RUNTIME_BYTES);
  t.ok(j.memory.available_bytes > 0 && j.memory.available_bytes <= j.memory.total_bytes);
});

t.test('the KV bytes from metadata equal what loadModel allocates, full and sliding-window layers', async (t) => {
  for (const [name, opts, context] of [
    ['full.gguf', {}, undefined],
    ['full-ctx.gguf', { context: 8192 }, undefined],  // the default is capped at 4096, as loadModel does
    ['full-100.gguf', {}, 100],
    ['swa.gguf', { window: 16 }, undefined],
  ] as Array<[string, { window?: number; context?: number }, number | undefined]>) {
    const path = join(dir, name);
    writeLlama(path, opts);
    const req = modelRequirements(path, context ? { contextSize: context } : {});
    const model = await loadModel(path, { threads: 1, ...(context ? { contextSize: context } : {}) });
    const info = model.info();
    model.close();
    t.equal(req.kv_bytes_per_sequence, info.kv_bytes_per_sequence, `${name}: KV bytes`);
    t.equal(req.context_size, info.context_size, `${name}: context`);
    t.equal(req.unbounded, info.unbounded, `${name}: unbounded`);
    t.equal(req.n_params, info.n_params, `${name}: parameters`);
    t.equal(req.weight_bytes, info.weight_bytes, `${name}: weight bytes`);
    const slots = opts.window ? opts.window + 64 - 1 : Math.min(context ?? opts.context ?? 256, 4096);
    t.equal(req.kv_bytes_per_sequence, 3 * 2 * 16 * 2 * 2 * slots, `${name}: layers x kv_heads x head_dim x 2 x 2 x ${slots} slots`);
  }
  const swa = modelRequirements(join(dir, 'swa.gguf'));
  t.match(swa, { sliding_window: 16, swa_layers: 3, unbounded: true, tied_output: true, name: 'tiny test llama' });
  t.same(
    Object.fromEntries(Object.entries(swa.tensor_types).map(([k, v]) => [k, v.count])),
    { F32: 8, F16: 12, Q8_0: 6, Q4_0: 3 },
  );
  const r = run(['inspect', join(dir, 'swa.gguf')]);
  t.match(r.stdout, /3 of 3 layers sliding-window 16/);
  t.match(r.stdout, /tied output/);
});

t.test('the verdict: fits in available memory, tight within the total, too big beyond it', async (t) => {
  const req = { weight_bytes: 1000, kv_bytes_per_sequence: 200, scratch_bytes: 50, n_vocab: 10 } as ModelRequirements;
  const need = 1000 + 200 + 50 + 40 + RUNTIME_BYTES;
  t.match(memoryFit(req, { totalBytes: need + 4000, availableBytes: need, source: 'os' }), { neededBytes: need, verdict: 'fits' });
  t.equal(memoryFit(req, { totalBytes: need, availableBytes: need - 1, source: 'os' }).verdict, 'tight');
  t.equal(memoryFit(req, { totalBytes: need - 1, availableBytes: 10, source: 'os' }).verdict, 'too-big');
});

t.test('device memory comes from MemTotal and MemAvailable, or from os without /proc', async (t) => {
  const fake = join(dir, 'meminfo');
  writeFileSync(fake, 'MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    6000000 kB\n');
  t.same(deviceMemory(fake), { totalBytes: 8000000 * 1024, availableBytes: 6000000 * 1024, source: '/proc/meminfo' });
  const os = deviceMemory(join(dir, 'no-such-meminfo'));
  t.equal(os.source, 'os');
  t.ok(os.totalBytes > 0);
});

t.test('errors are one line with the reader\'s code and a non-zero exit', async (t) => {
  const notGguf = join(dir, 'not.gguf');
  writeFileSync(notGguf, 'this is not a model');
  const truncated = join(dir, 'truncated.gguf');
  writeLlama(join(dir, 'whole.gguf'));
  writeFileSync(truncated, readFileSync(join(dir, 'whole.gguf')).subarray(0, 200));
  for (const [args, re] of [
    [['inspect', join(dir, 'missing.gguf')], /^edgellm: E_MODEL_NOT_FOUND: .*missing\.gguf/],
    [['inspect', notGguf], /^edgellm: E_MODEL_UNSUPPORTED: .*not\.gguf: not a GGUF model file/],
    [['inspect', truncated], /^edgellm: E_MODEL_CORRUPT: .*truncated\.gguf/],
    [['inspect', notGguf, '--context', '0'], /^edgellm: E_BAD_ARGUMENT: --context takes a positive whole number/],
  ] as Array<[string[], RegExp]>) {
    const r = run(args);
    t.equal(r.status, 2, args.join(' '));
    t.equal(r.stdout, '', 'nothing on stdout');
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    t.match(r.stderr, re);
  }
});

/**
 * A llama whose matrices are in the mixed K-quant types of a Q4_K_M file (random blocks), with
 * `unrunnable` tensors patched to IQ2_XXS (ggml type 16: 66-byte blocks, fewer bytes than Q4_K's).
 */
function writeMixed(path: string, unrunnable: string[] = []): void {
  const E = 256, L = 2, F = 256, V = 300;
  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'));
  w.setMeta('llama.context_length', meta.uint32(128));
  w.setMeta('llama.embedding_length', meta.uint32(E));
  w.setMeta('llama.block_count', meta.uint32(L));
  w.setMeta('llama.feed_forward_length', meta.uint32(F));
  w.setMeta('llama.attention.head_count', meta.uint32(4));
  w.setMeta('llama.attention.head_count_kv', meta.uint32(4));
  let seed = 1;
  const blocks = (type: GgufTensorType, n: number) => {
    const bytes = new Uint8Array(typeBytes(type, n)).map(() => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 255);
    return bytes;
  };
  const add = (name: string, type: GgufTensorType, shape: number[]) =>
    w.addTensor({ name, type, shape, data: type === 'F32' ? new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(1) : blocks(type, shape.reduce((a, b) => a * b, 1)) });
  add('token_embd.weight', 'Q4_K', [E, V]);
  add('output_norm.weight', 'F32', [E]);
  add('output.weight', 'Q6_K', [E, V]);
  for (let l = 0; l < L; l++) {
    add(`blk.${l}.attn_norm.weight`, 'F32', [E]);
    for (const m of ['attn_q', 'attn_k', 'attn_output']) add(`blk.${l}.${m}.weight`, 'Q4_K', [E, E]);
    add(`blk.${l}.attn_v.weight`, 'Q6_K', [E, E]);
    add(`blk.${l}.ffn_norm.weight`, 'F32', [E]);
    add(`blk.${l}.ffn_gate.weight`, 'Q4_K', [E, F]);
    add(`blk.${l}.ffn_up.weight`, 'Q4_K', [E, F]);
    add(`blk.${l}.ffn_down.weight`, 'Q5_0', [F, E]);
  }
  const file = w.toBytes();
  for (const name of unrunnable) {
    // The type is the u32 after the name, the dimension count and two u64 dimensions.
    const at = Buffer.from(file).indexOf(Buffer.from(name + '\x02\x00\x00\x00')) + name.length + 4 + 16;
    new DataView(file.buffer, file.byteOffset).setUint32(at, 16, true);
  }
  writeFileSync(path, file);
}

t.test('a mixed K-quant file: every type with its count and bytes, and loading OK', async (t) => {
  const path = join(dir, 'mixed.gguf');
  writeMixed(path);
  const r = run(['inspect', path]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^\s+Q4_K\s+11 tensors /m);
  t.match(r.stdout, /^\s+Q6_K\s+3 tensors /m);
  t.match(r.stdout, /^\s+Q5_0\s+2 tensors /m);
  t.match(r.stdout, /^\s+F32\s+5 tensors /m);
  t.match(r.stdout, /^loading:\s+OK: edgellm runs every tensor type in this file$/m);
});

t.test('a file with a type edgellm does not run: inspect lists it, says which tensors block loading and what to do', async (t) => {
  const path = join(dir, 'iq2.gguf');
  writeMixed(path, ['blk.0.ffn_gate.weight', 'blk.1.ffn_gate.weight']);
  const r = run(['inspect', path]);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^\s+IQ2_XXS\s+2 tensors\s+\S+ \S+\s+\(edgellm does not run this type\)$/m);
  t.match(r.stdout, /^\s+Q4_K\s+9 tensors /m);
  t.match(r.stdout, /^loading:\s+BLOCKED by 2 tensors \('blk\.0\.ffn_gate\.weight', 'blk\.1\.ffn_gate\.weight'\): edgellm does not support IQ2_XXS yet \(it runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS\)\. Use a file of the model in one of those types \(e\.g\. Q4_K_M or Q8_0\), or re-quantize its F16\/F32 original: `edgellm quantize MODEL-F16\.gguf OUT\.gguf --type q2_k`$/m);
  const j = JSON.parse(run(['inspect', path, '--json']).stdout) as ModelRequirements & { loadable: boolean };
  t.equal(j.loadable, false);
  t.same(j.unsupported_tensors.map((u) => `${u.name} ${u.type}`), ['blk.0.ffn_gate.weight IQ2_XXS', 'blk.1.ffn_gate.weight IQ2_XXS']);
  t.equal(j.tensor_types.IQ2_XXS!.bytes, 2 * (256 / 256) * 66 * 256, 'sized by ggml\'s geometry: 66 bytes per 256 weights');
  // Loading names the tensor, the type and the same fix.
  await t.rejects(loadModel(path, { threads: 1 }), {
    code: 'E_MODEL_UNSUPPORTED',
    message: /tensor 'blk\.0\.ffn_gate\.weight' has type IQ2_XXS: edgellm does not support IQ2_XXS yet .*--type q2_k`$/,
  });
});

t.test('deepseek2: the KV line counts the compressed latent per token, not per-head K and V', async (t) => {
  assertCliBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'edgellm-inspect-mla-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { path } = writeDeepseek2(
    {
      name: 'mla', nVocab: 320, nEmbd: 64, nLayer: 3, nHead: 4, qLoraRank: 0, kvLoraRank: 32, qkNope: 16, qkRope: 8, vDim: 16,
      nFf: 128, nFfExp: 32, nExpert: 8, nExpertUsed: 2, nShared: 1, denseLead: 1, weightsScale: 1, weightsNorm: false, splitKvB: true,
    },
    dir,
  );
  const r = run(['inspect', path, '--context', '256']);
  t.equal(r.status, 0, r.stderr);
  // 3 layers x (32 + 8) x 2 bytes = 240 B per position.
  t.match(r.stdout, /KV cache sized for 256, 240 B per token \(latent attention: 32 latent \+ 8 rope values per layer, not per-head K and V\)$/m);
  t.match(r.stdout, /memory: .* KV cache 60\.0 KiB \(1 sequence of 256 positions\)/);
});
