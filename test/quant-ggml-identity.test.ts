// edgellm's reference quantizers and dequantizers against ggml's own, run from node-llama-cpp's
// prebuilt libraries by the oracle (test/fixtures/oracle.ts):
// - quantizing: the same bytes as ggml_quantize_chunk without an importance matrix (what
//   llama.cpp's quantizer writes), for every weight type, row lengths 256, 512 and 4352, and
//   rows that are normal, scaled, with outliers, all zero, constant, one-signed, integer-valued
//   (ties), sparse, heavy-tailed or tiny;
// - dequantizing: the same f32 bits as ggml's to_float on those blocks;
// - llama_model_quantize itself (--pure, every type) writes each tensor as edgellm's quantizer does;
// - the oracle's llama_model_quantize reproduces llama.cpp's own files in ../shared/models (its
//   declaration of llama_model_quantize_params matches the library).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufInfo, type GgufTensorType } from '../src/engine/gguf.js';
import { loadAddon } from '../src/engine/native.js';
import { TYPE_LAYOUT } from '../src/engine/quant.js';
import { normalSampler } from '../src/engine/random.js';
import { ggmlDequantize, ggmlQuantizeRows, llamaQuantizeDefaultParams, llamaQuantizeModel, requireOracle } from './fixtures/oracle.js';
import { requireModel } from './fixtures/paths.js';
import { writeModel, type Spec } from './fixtures/random-model.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-ggml-identity-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const TYPES: GgufTensorType[] = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_NL', 'IQ4_XS'];
const ROW_LENGTHS = [256, 512, 4096 + 256];

/** Rows of `n` values, three of each kind a weight matrix may hold (and the corner cases). */
function testRows(n: number, seed: number): { kinds: string[]; data: Float32Array } {
  const normal = normalSampler(seed);
  const REPEATS = 3;
  const kinds: Array<[string, (i: number) => number]> = [
    ['normal', () => normal()],
    ['normal * 1e-3', () => normal() * 1e-3],
    ['normal with 2% outliers x40', () => (normal() < -2.05 ? 40 : 1) * normal()],
    ['all zero', () => 0],
    ['constant 0.37', () => 0.37],
    ['constant -2.5', () => -2.5],
    ['positive only', () => Math.abs(normal()) + 0.1],
    ['integers (ties)', () => Math.round(normal() * 4)],
    ['sparse (1 in 16)', (i) => (i % 16 === 5 ? normal() : 0)],
    ['heavy tail normal^5', () => normal() ** 5],
    ['tiny 1e-18', () => normal() * 1e-18],
  ];
  const rows = kinds.flatMap((k) => Array.from({ length: REPEATS }, () => k));
  const data = new Float32Array(rows.length * n);
  rows.forEach(([, f], r) => {
    for (let i = 0; i < n; i++) data[r * n + i] = f(i);
  });
  return { kinds: rows.map(([k]) => k), data };
}

const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Where edgellm's blocks first differ from ggml's (row, block, byte), or undefined when identical. */
function firstDifference(type: GgufTensorType, n: number, ours: Uint8Array, theirs: Uint8Array): { row: number; text: string } | undefined {
  if (ours.length !== theirs.length) return { row: 0, text: `lengths differ: edgellm ${ours.length} bytes, ggml ${theirs.length}` };
  if (Buffer.from(ours).equals(Buffer.from(theirs))) return undefined;
  const { blockElems, blockBytes } = TYPE_LAYOUT[type];
  const rowBytes = (n / blockElems) * blockBytes;
  let i = 0;
  while (ours[i] === theirs[i]) i++;
  const row = Math.floor(i / rowBytes), inRow = i % rowBytes;
  return { row, text: `row ${row}, block ${Math.floor(inRow / blockBytes)}, byte ${inRow % blockBytes}: edgellm ${ours[i]} ggml ${theirs[i]}` };
}

t.test('every weight type quantizes to the bytes of ggml_quantize_chunk without an importance matrix', async (t) => {
  if (!requireOracle(t, 'ggml quantizer identity')) return;
  for (const type of TYPES) {
    for (const n of ROW_LENGTHS) {
      const { kinds, data } = testRows(n, n + TYPE_LAYOUT[type].blockBytes);
      const theirs = ggmlQuantizeRows(type, data, kinds.length, n);
      const ours = await loadAddon().convertRows(bytesOf(data), 'F32', type, n);
      const diff = firstDifference(type, n, ours, theirs);
      t.equal(diff, undefined, `${type}, ${kinds.length} rows of ${n}: byte-identical${diff ? ` (${kinds[diff.row]} row) ${diff.text}` : ''}`);
    }
  }
});

t.test("edgellm's dequantizers give the f32 bits of ggml's to_float on ggml's blocks", async (t) => {
  if (!requireOracle(t, 'ggml dequantizer identity')) return;
  for (const type of TYPES) {
    for (const n of ROW_LENGTHS) {
      const { kinds, data } = testRows(n, 3 * n + 1);
      const blocks = ggmlQuantizeRows(type, data, kinds.length, n);
      const expected = new Uint32Array(ggmlDequantize(type, blocks, data.length).buffer);
      const out = await loadAddon().convertRows(blocks, type, 'F32', n);
      const got = new Uint32Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength));
      let bad = got.length === expected.length ? -1 : 0;
      for (let i = 0; i < expected.length && bad < 0; i++) if (got[i] !== expected[i]) bad = i;
      const detail = bad < 0 ? '' : ` (first at element ${bad}, a ${kinds[Math.floor(bad / n)]} row: edgellm bits ${got[bad]?.toString(16)} ggml ${expected[bad]?.toString(16)})`;
      t.equal(bad, -1, `${type}, ${kinds.length} rows of ${n}: bit-identical f32${detail}`);
    }
  }
});

/** The llama.cpp ftype whose --pure output holds every matrix in `type`. */
const PURE_FTYPE: Partial<Record<GgufTensorType, string>> = {
  Q4_0: 'Q4_0', Q4_1: 'Q4_1', Q5_0: 'Q5_0', Q5_1: 'Q5_1', Q8_0: 'Q8_0', Q2_K: 'Q2_K', Q3_K: 'Q3_K_M', Q4_K: 'Q4_K_M',
  Q5_K: 'Q5_K_M', Q6_K: 'Q6_K', IQ4_NL: 'IQ4_NL', IQ4_XS: 'IQ4_XS',
};

t.test('llama_model_quantize writes every matrix of a model as edgellm quantizes it (each type, --pure, no imatrix)', async (t) => {
  if (!requireOracle(t, 'llama_model_quantize identity')) return;
  // Rows of 256 and 512: whole super-blocks, so no K-quant falls back to another type.
  const spec: Spec = { name: 'identity', arch: 'llama', nVocab: 512, nEmbd: 256, nLayer: 1, nHead: 4, nHeadKv: 2, headDim: 64, nFf: 512 };
  const { path } = writeModel(spec, dir, { vocab: true });
  const source = readGgufInfo(path);
  const file = readFileSync(path);
  for (const type of TYPES) {
    const out = join(dir, `model-${type}.gguf`);
    llamaQuantizeModel(path, out, PURE_FTYPE[type]!, { pure: true });
    const quantized = readFileSync(out);
    let compared = 0;
    for (const tensor of readGgufInfo(out).tensors) {
      if (tensor.type !== type) continue;
      const src = source.tensors.find((s) => s.name === tensor.name)!;
      if (src.type !== 'F32') {
        t.fail(`${tensor.name} is ${src.type} in the source, not F32`);
        continue;
      }
      const n = tensor.shape[0]!;
      const ours = await loadAddon().convertRows(file.subarray(src.offset, src.offset + src.bytes), 'F32', type, n);
      const diff = firstDifference(type, n, ours, quantized.subarray(tensor.offset, tensor.offset + tensor.bytes));
      t.equal(diff, undefined, `${type} ${tensor.name} [${tensor.shape.join(', ')}]: byte-identical${diff ? ` (${diff.text})` : ''}`);
      compared++;
    }
    // The layer's 7 projection matrices at least are in the type asked for.
    t.ok(compared >= 7, `${type}: ${compared} tensors of llama.cpp's output are ${type}`);
  }
});

t.test("the oracle's llama_model_quantize reproduces llama.cpp's own quantized files (its params struct matches the library)", async (t) => {
  if (!requireOracle(t, 'llama_model_quantize reproduction')) return;
  t.match(
    llamaQuantizeDefaultParams(),
    /^nthread 0\nftype 7\noutput_tensor_type 43\ntoken_embedding_type 43\nallow_requantize 0\nquantize_output_tensor 1\nonly_copy 0\npure 0\nkeep_split 0\ndry_run 0\n[\s\S]*max_buf_size 8589934592\n$/,
    "llama_model_quantize_default_params() read through the oracle's struct are the release's defaults",
  );
  const stories = requireModel(t, 'stories260K.gguf', 'ggml oracle llama_model_quantize');
  if (!stories) return;
  for (const [ftype, file] of [['Q4_0', 'stories260K-Q4_0.gguf'], ['Q4_K_M', 'stories260K-Q4_K_M.gguf']] as const) {
    const expected = requireModel(t, join('llamacpp-quantized', file), 'ggml oracle llama_model_quantize');
    if (!expected) continue;
    const out = join(dir, file);
    llamaQuantizeModel(stories, out, ftype);
    t.ok(readFileSync(out).equals(readFileSync(expected)), `${ftype}: the oracle's output is byte for byte llamacpp-quantized/${file}`);
  }
});
