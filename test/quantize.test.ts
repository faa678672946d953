// `edgellm quantize` and quantizeModel: the bytes are the reference encoder's, the rules are
// llama.cpp's default ones (1-D tensors kept, output Q6_K falling back to Q8_0 when its rows are
// not whole 256-blocks, rows that are not whole 32-blocks as F16), metadata is copied, already
// quantized tensors are refused without --allow-requantize, and a failure never leaves an output
// behind. test/quantize-llamacpp.test.ts holds the mixes to llama.cpp's own files byte for byte.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo, type GgufInfo, type GgufTensorType } from '../src/engine/gguf.js';
import { GgufWriter, meta } from '../src/engine/gguf-writer.js';
import { loadModel, type Model } from '../src/engine/model.js';
import { decodeTensor, encodeTensor, quantizeQ4_0, quantizeQ8_0 } from '../src/engine/quant.js';
import { quantizeModel, type QuantizeOptions } from '../src/engine/quantize.js';
import { assertCliBuilt, requireModel as requireSharedModel, run, type TapTest } from './fixtures/paths.js';
import { rejects } from './helpers/rejects.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-quantize-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The real-model tests run when ../shared/models is there; in CI (CI=true) it must be. */
const requireModel = (t: TapTest, file: string) => requireSharedModel(t, file, `${file} quantize`);

t.before(assertCliBuilt);

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 0.4;
  }
  return out;
}

const E = 64, L = 2, F = 128, V = 96, H = 4, KV = 2;

/** Tensor name -> the f32 values written (before encoding in its type). */
interface Written {
  path: string;
  values: Map<string, Float32Array>;
}

/** A random llama: matrices in `matrixType`, norms F32, an F16 bias-free layout; `tied` drops output.weight. */
function writeLlama(name: string, opts: { matrixType?: GgufTensorType; tied?: boolean } = {}): Written {
  const type = opts.matrixType ?? 'F32';
  const w = new GgufWriter();
  const values = new Map<string, Float32Array>();
  let seed = 1;
  const add = (tensor: string, ttype: GgufTensorType, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    // Values as the file holds them: what a reader decodes from the encoded tensor.
    const v = decodeTensor(ttype, encodeTensor(ttype, random(n, seed++)), n);
    values.set(tensor, v);
    w.addTensor({ name: tensor, type: ttype, shape, data: v });
  };
  w.setMeta('general.architecture', meta.string('llama'));
  w.setMeta('general.name', meta.string('random llama'));
  w.setMeta('general.file_type', meta.uint32(0));
  w.setMeta('llama.context_length', meta.uint32(128));
  w.setMeta('llama.embedding_length', meta.uint32(E));
  w.setMeta('llama.block_count', meta.uint32(L));
  w.setMeta('llama.feed_forward_length', meta.uint32(F));
  w.setMeta('llama.attention.head_count', meta.uint32(H));
  w.setMeta('llama.attention.head_count_kv', meta.uint32(KV));
  w.setMeta('llama.attention.layer_norm_rms_epsilon', meta.float32(1e-5));
  w.setMeta('tokenizer.ggml.tokens', meta.array('string', Array.from({ length: V }, (_, i) => `t${i}`)));
  w.setMeta('tokenizer.ggml.scores', meta.array('float32', new Float32Array(V).fill(-1)));
  w.setMeta('tokenizer.ggml.token_type', meta.array('int32', new Int32Array(V).fill(1)));
  w.setMeta('test.big', meta.uint64(2n ** 60n));
  w.setMeta('test.nested', meta.array('array', [meta.array('int8', [1, -2]), meta.array('int8', [3])]));
  const kvDim = (E / H) * KV;
  add('token_embd.weight', type, [E, V]);
  for (let l = 0; l < L; l++) {
    const p = `blk.${l}.`;
    add(p + 'attn_norm.weight', 'F32', [E]);
    add(p + 'attn_q.weight', type, [E, E]);
    add(p + 'attn_k.weight', type, [E, kvDim]);
    add(p + 'attn_v.weight', type, [E, kvDim]);
    add(p + 'attn_output.weight', type, [E, E]);
    add(p + 'ffn_norm.weight', 'F32', [E]);
    add(p + 'ffn_gate.weight', type, [E, F]);
    add(p + 'ffn_up.weight', type, [E, F]);
    add(p + 'ffn_down.weight', type, [F, E]);
  }
  add('output_norm.weight', 'F32', [E]);
  if (!opts.tied) add('output.weight', type, [E, V]);
  const path = join(dir, name);
  w.writeFile(path);
  return { path, values };
}

function tensorBytes(info: GgufInfo, path: string, name: string): Uint8Array {
  const t = info.tensors.find((x) => x.name === name)!;
  return new Uint8Array(readFileSync(path).subarray(t.offset, t.offset + t.bytes));
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

async function greedy(model: Model, prompt: number[], n: number): Promise<number[]> {
  const seq = [...prompt];
  for (let i = 0; i < n; i++) seq.push(argmax(await model.evalLogits(Int32Array.from(seq))));
  return seq.slice(prompt.length);
}

for (const type of ['q4_0', 'q8_0'] as const) {
  t.test(`F32 -> ${type}: the reference encoder's bytes, norms kept, output at Q8_0 (64 is no Q6_K row), and it loads`, async (t) => {
    const src = writeLlama(`f32-${type}.gguf`);
    const out = join(dir, `out-${type}.gguf`);
    const s = await quantizeModel(src.path, out, { type, threads: 2 });
    const info = readGgufInfo(out);
    const target = type === 'q4_0' ? 'Q4_0' : 'Q8_0';
    for (const tensor of info.tensors) {
      const v = src.values.get(tensor.name)!;
      const bytes = tensorBytes(info, out, tensor.name);
      if (tensor.shape.length === 1) {
        t.equal(tensor.type, 'F32', `${tensor.name} stays F32`);
        t.same(bytes, encodeTensor('F32', v), `${tensor.name} copied`);
      } else if (tensor.name === 'output.weight') {
        t.equal(tensor.type, 'Q8_0', 'output.weight is Q8_0');
        t.same(bytes, quantizeQ8_0(v), 'output.weight bytes');
      } else {
        t.equal(tensor.type, target, `${tensor.name} is ${target}`);
        t.ok(Buffer.from(bytes).equals(Buffer.from(target === 'Q4_0' ? quantizeQ4_0(v) : quantizeQ8_0(v))), `${tensor.name}: the TS encoder's bytes`);
      }
    }
    t.equal(s.quantized, 2 * 7 + 2);
    t.equal(s.copied, 2 * 2 + 1);
    t.same(s.fallbacks, type === 'q4_0' ? [{ name: 'output.weight', wanted: 'Q6_K', type: 'Q8_0', rowLength: E }] : []);
    t.same(s.types, type === 'q4_0' ? { F32: 5, Q8_0: 1, Q4_0: 15 } : { F32: 5, Q8_0: 16 });
    const model = await loadModel(out, { threads: 1 });
    const logits = await model.evalLogits([1, 2, 3]);
    model.close();
    t.equal(logits.length, V);
    t.ok(logits.every(Number.isFinite), 'finite logits');
  });
}

t.test('metadata is copied with its types; file_type and quantization_version are set', async (t) => {
  const src = writeLlama('meta.gguf');
  const out = join(dir, 'meta-q4.gguf');
  await quantizeModel(src.path, out, { type: 'q4_0' });
  const a = readGgufInfo(src.path);
  const b = readGgufInfo(out);
  t.same(
    Object.keys(b.metadata),
    [...Object.keys(a.metadata).filter((k) => k !== 'general.file_type'), 'general.quantization_version', 'general.file_type'],
    'keys in order, the two llama.cpp sets moved to the end',
  );
  for (const key of Object.keys(a.metadata)) {
    if (key === 'general.file_type') continue;
    t.same(b.metadata[key], a.metadata[key], key);
    t.equal(b.metadataTypes[key], a.metadataTypes[key], `${key} type`);
  }
  t.equal(b.metadata['general.file_type'], 2, 'MOSTLY_Q4_0');
  t.equal(b.metadataTypes['general.file_type'], 'uint32');
  t.equal(b.metadata['general.quantization_version'], 2);
  t.same(
    b.tensors.map((x) => x.name).slice(0, 5),
    ['output.weight', 'output_norm.weight', 'token_embd.weight', 'blk.0.attn_k.weight', 'blk.0.attn_norm.weight'],
    'llama.cpp\'s tensor order: non-layer tensors, then by layer, by name within one',
  );
  t.equal(b.tensors.length, a.tensors.length);
  const out8 = join(dir, 'meta-q8.gguf');
  await quantizeModel(src.path, out8, { type: 'q8_0' });
  t.equal(readGgufInfo(out8).metadata['general.file_type'], 7, 'MOSTLY_Q8_0');
});

t.test('F16, BF16 and (with allowRequantize) Q8_0 sources convert through f32 exactly as the reference does', async (t) => {
  for (const [from, type] of [['F16', 'q4_0'], ['BF16', 'q8_0'], ['Q8_0', 'q4_0']] as Array<[GgufTensorType, 'q4_0' | 'q8_0']>) {
    const src = writeLlama(`${from}.gguf`, { matrixType: from });
    const out = join(dir, `${from}-${type}.gguf`);
    await quantizeModel(src.path, out, { type, allowRequantize: from === 'Q8_0' });
    const info = readGgufInfo(out);
    const v = src.values.get('blk.1.ffn_up.weight')!;
    const want = type === 'q4_0' ? quantizeQ4_0(v) : quantizeQ8_0(v);
    t.same(tensorBytes(info, out, 'blk.1.ffn_up.weight'), want, `${from} -> ${type}`);
  }
});

t.test('the native converter and the TS encoder write identical files', async (t) => {
  const src = writeLlama('js.gguf', { matrixType: 'F16' });
  for (const type of ['q4_0', 'q8_0'] as const) {
    const a = join(dir, `native-${type}.gguf`);
    const b = join(dir, `js-${type}.gguf`);
    await quantizeModel(src.path, a, { type, threads: 3 });
    await quantizeModel(src.path, b, { type, encoder: 'js' });
    t.ok(readFileSync(a).equals(readFileSync(b)), type);
  }
});

t.test('a tied model quantizes token_embd as its output: Q6_K, here Q8_0 (rows of 64)', async (t) => {
  const src = writeLlama('tied.gguf', { tied: true });
  const out = join(dir, 'tied-q4.gguf');
  const s = await quantizeModel(src.path, out, { type: 'q4_0' });
  const info = readGgufInfo(out);
  t.equal(info.tensors.find((x) => x.name === 'token_embd.weight')!.type, 'Q8_0');
  t.equal(info.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!.type, 'Q4_0');
  t.same(s.fallbacks, [{ name: 'token_embd.weight', wanted: 'Q6_K', type: 'Q8_0', rowLength: E }]);
});

t.test('stories260K -> q8_0: ffn_down (rows of 172) becomes F16, as llama.cpp does, and greedy ids from BOS match', async (t) => {
  const path = requireModel(t, 'stories260K.gguf');
  if (!path) return;
  const out = join(dir, 'stories-q8.gguf');
  const r = run(['quantize', path, out, '--type', 'q8_0']);
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.split('\n').length, 2, 'one summary line (no progress when stdout is not a terminal)');
  t.notMatch(r.stdout, /\r/);
  t.match(r.stdout, /q8_0 \(file type 7\), 37 of 48 tensors quantized, 11 copied as they were \(32 Q8_0, 11 F32, 5 F16\); 5 fell back because their rows are not whole blocks \(Q8_0 -> F16 for rows of 172\)/);
  const info = readGgufInfo(out);
  for (let l = 0; l < 5; l++) t.equal(info.tensors.find((x) => x.name === `blk.${l}.ffn_down.weight`)!.type, 'F16');
  t.equal(info.tensors.find((x) => x.name === 'blk.0.ffn_norm.weight')!.type, 'F32');
  t.equal(info.tensors.find((x) => x.name === 'blk.0.ffn_up.weight')!.type, 'Q8_0');
  t.equal(info.tensors.find((x) => x.name === 'output.weight')!.type, 'Q8_0');
  const f32 = await loadModel(path, { threads: 2 });
  const q8 = await loadModel(out, { threads: 2 });
  const [a, b] = [await greedy(f32, [1], 20), await greedy(q8, [1], 20)];
  f32.close();
  q8.close();
  t.same(b, a, 'first 20 greedy ids');
});

t.test('refusals: bad type, OUT == IN, existing OUT, a quantized source without allowRequantize, missing input', async (t) => {
  const src = writeLlama('refuse.gguf');
  await rejects(t, quantizeModel(src.path, join(dir, 'x.gguf'), { type: 'q4_k' } as unknown as QuantizeOptions), 'E_BAD_ARGUMENT', /q4_k/);
  await rejects(t, quantizeModel(src.path, src.path, { type: 'q4_0' }), 'E_BAD_ARGUMENT', /is the input file/);
  await rejects(t, quantizeModel(src.path, join(dir, '.', 'refuse.gguf'), { type: 'q4_0', force: true }), 'E_BAD_ARGUMENT', /is the input file/);
  const exists = join(dir, 'exists.gguf');
  writeFileSync(exists, 'old');
  await rejects(t, quantizeModel(src.path, exists, { type: 'q4_0' }), 'E_BAD_ARGUMENT', /exists; pass --force/);
  t.equal(readFileSync(exists, 'utf8'), 'old', 'left alone');
  await quantizeModel(src.path, exists, { type: 'q4_0', force: true });
  t.equal(readGgufInfo(exists).metadata['general.file_type'], 2, '--force replaces it');
  const q4 = writeLlama('q4src.gguf', { matrixType: 'Q4_0' });
  await rejects(t, quantizeModel(q4.path, join(dir, 'q4-q8.gguf'), { type: 'q8_0' }), 'E_MODEL_UNSUPPORTED',
    /tensor 'output\.weight' is already quantized \(Q4_0\); requantizing it to Q8_0 loses accuracy .*quantize the F16\/F32 original instead, or pass --allow-requantize/);
  t.notOk(existsSync(join(dir, 'q4-q8.gguf')), 'no output');
  const re = await quantizeModel(q4.path, join(dir, 'q4-q4.gguf'), { type: 'q4_0', allowRequantize: true });
  t.same(re.plan.filter((p) => p.action === 'quantize').map((p) => `${p.name} ${p.from}->${p.to}`), ['output.weight Q4_0->Q8_0'],
    'with allowRequantize a Q4_0 file into the Q4_0 mix converts only what the rules change');
  await rejects(t, quantizeModel(join(dir, 'missing.gguf'), join(dir, 'm.gguf'), { type: 'q8_0' }), 'E_MODEL_NOT_FOUND');
});

t.test('a failure while writing leaves neither OUT nor OUT.tmp', async (t) => {
  const src = writeLlama('fail.gguf');
  const out = join(dir, 'fail-out.gguf');
  let calls = 0;
  const onProgress = () => {
    if (++calls === 5) throw new Error('disk full (simulated)');
  };
  await t.rejects(quantizeModel(src.path, out, { type: 'q4_0', onProgress }), /disk full/);
  t.notOk(existsSync(out), 'no OUT');
  t.notOk(existsSync(`${out}.tmp`), 'no OUT.tmp');
  t.notOk(readdirSync(dir).some((f) => f.startsWith('fail-out')), 'nothing named after OUT');
});

t.test('the CLI: errors are one line and exit 2; an unknown --type names the types it writes', async (t) => {
  const src = writeLlama('cli.gguf');
  for (const [args, re] of [
    [['quantize', src.path, join(dir, 'c.gguf'), '--type', 'q3_k_s'], /^edgellm: E_BAD_ARGUMENT: --type q3_k_s cannot be written: edgellm quantizes to q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k_m, q4_k_s, q4_k_m, q5_k_m, q6_k, iq4_nl, iq4_xs$/],
    [['quantize', src.path, src.path, '--type', 'q4_0'], /^edgellm: E_BAD_ARGUMENT: the output .* is the input file/],
    [['quantize', src.path, join(dir, 'c.gguf'), '--type', 'q4_0', '--threads', '0'], /--threads takes a positive whole number/],
  ] as Array<[string[], RegExp]>) {
    const r = run(args);
    t.equal(r.status, 2, args.join(' '));
    t.equal(r.stderr.trim().split('\n').length, 1);
    t.match(r.stderr.trim(), re);
  }
  t.notOk(existsSync(join(dir, 'c.gguf')));
});

t.test('the writer refuses a stream that yields the wrong number of bytes', async (t) => {
  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'));
  w.addTensor({ name: 'x', type: 'F32', shape: [8], data: { chunks: async function* () { yield new Uint8Array(16); } } });
  const path = join(dir, 'short.gguf');
  await rejects(t, w.writeFileAsync(path), 'E_BAD_ARGUMENT', /needs 32 bytes, its stream gave 16/);
  t.notOk(existsSync(path));
  t.throws(() => w.toBytes(), /streamed/);
});

t.test('real files: edgellm quantize writes ../shared/models/llamacpp-quantized byte for byte (stories260K Q4_0 and Q4_K_M, TinyLLama-v0 requantized to Q4_K_M)', async (t) => {
  const stories = requireModel(t, 'stories260K.gguf');
  const tiny = requireModel(t, 'TinyLLama-v0-Q4_0.gguf');
  if (!stories || !tiny) return;
  for (const [src, type, want, allowRequantize] of [
    [stories, 'q4_0', 'stories260K-Q4_0.gguf', false],
    [stories, 'q4_k_m', 'stories260K-Q4_K_M.gguf', false],
    [tiny, 'q4_k_m', 'TinyLLama-v0-Q4_K_M.gguf', true],
  ] as const) {
    const expected = requireModel(t, join('llamacpp-quantized', want));
    if (!expected) continue;
    const out = join(dir, `real-${want}`);
    await quantizeModel(src, out, { type, allowRequantize });
    t.ok(readFileSync(out).equals(readFileSync(expected)), `${want}: identical to llama.cpp's file`);
  }
});

t.test('the CLI: a quantized input is refused with the accuracy warning, and --allow-requantize converts it', async (t) => {
  const q8 = writeLlama('cli-q8.gguf', { matrixType: 'Q8_0' });
  const out = join(dir, 'cli-q8-q4.gguf');
  const refused = run(['quantize', q8.path, out, '--type', 'q4_0']);
  t.equal(refused.status, 2);
  t.match(refused.stderr.trim(), /^edgellm: E_MODEL_UNSUPPORTED: .*is already quantized \(Q8_0\); requantizing it to Q4_0 loses accuracy .* or pass --allow-requantize to convert it anyway$/);
  t.notOk(existsSync(out));
  const ok = run(['quantize', q8.path, out, '--type', 'q4_0', '--allow-requantize']);
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /q4_0 \(file type 2\), 15 of 21 tensors quantized/);
  t.equal(readGgufInfo(out).tensors.find((x) => x.name === 'blk.0.ffn_up.weight')!.type, 'Q4_0');
});
