// GGUF end to end: the TypeScript writer makes files, the native parser reads them back through
// readGgufInfo; real models from ../shared/models; refusals arrive as EdgeErrors with codes.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EdgeError } from '../src/errors.js';
import { readGgufInfo, type GgufInfo, type GgufTensorType } from '../src/engine/gguf.js';
import { GgufWriter, meta } from '../src/engine/gguf-writer.js';
import { modelsDir, skipOrFail, type TapTest } from './fixtures/paths.js';
import {
  bf16ToF32, blockElems, decodeTensor, f16ToF32, f32ToBf16, f32ToF16, quantizeQ4_0, quantizeQ8_0, typeBytes,
} from '../src/engine/quant.js';
import { loadModel } from '../src/engine/model.js';
import { loadAddon } from '../src/engine/native.js';

const dir = mkdtempSync(join(tmpdir(), 'edgellm-gguf-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function writeTemp(bytes: Uint8Array, name = `f${fileNo++}.gguf`): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** A deterministic PRNG (mulberry32), so the fuzz and the random weights are the same every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function randomWeights(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * (1 + 3 * r());
  return x;
}

/** The real-model tests run when ../shared/models is there; in CI (CI=true) it must be. */
function requireModels(t: TapTest): boolean {
  if (existsSync(join(modelsDir, 'stories260K.gguf'))) return true;
  skipOrFail(t, {
    ciFailure: `../shared/models not found at ${modelsDir} and CI=true: the real-model tests must run in CI`,
    skipped: `../shared/models not found (${modelsDir}); real-model GGUF tests did not run`,
    pass: 'skipped: no ../shared/models',
  });
  return false;
}

function expectCode(t: TapTest, fn: () => unknown, code: string, ...parts: Array<string | RegExp>): void {
  try {
    fn();
    t.fail(`expected ${code}, but the call succeeded`);
  } catch (err) {
    t.ok(err instanceof EdgeError, 'an EdgeError');
    t.equal((err as EdgeError).code, code, (err as Error).message);
    for (const p of parts) t.match((err as Error).message, p);
  }
}

t.test('every metadata value type round-trips through the writer and the parser', async (t) => {
  const w = new GgufWriter();
  w.setMeta('u8', meta.uint8(200))
    .setMeta('i8', meta.int8(-100))
    .setMeta('u16', meta.uint16(60000))
    .setMeta('i16', meta.int16(-30000))
    .setMeta('u32', meta.uint32(4000000000))
    .setMeta('i32', meta.int32(-2000000000))
    .setMeta('f32', meta.float32(0.1))
    .setMeta('f64', meta.float64(0.1))
    .setMeta('bool', meta.bool(true))
    .setMeta('string', meta.string('héllo ▁world'))
    .setMeta('u64.small', meta.uint64(5))
    .setMeta('u64.big', meta.uint64(2n ** 64n - 1n))
    .setMeta('i64.big', meta.int64(-(2n ** 63n)))
    .setMeta('i64.small', meta.int64(-7n))
    .setMeta('__proto__', meta.string('an ordinary key'))
    .setMeta('a.u8', meta.array('uint8', [1, 255]))
    .setMeta('a.i8', meta.array('int8', [-128, 127]))
    .setMeta('a.u16', meta.array('uint16', [65535]))
    .setMeta('a.i16', meta.array('int16', [-32768]))
    .setMeta('a.i32', meta.array('int32', [-7, 2147483647]))
    .setMeta('a.u32', meta.array('uint32', [7, 4294967295]))
    .setMeta('a.f32', meta.array('float32', new Float32Array([0.5, -1.25, 0.1])))
    .setMeta('a.f64', meta.array('float64', [1e300, 0.1]))
    .setMeta('a.u64', meta.array('uint64', [1n, 2n ** 60n]))
    .setMeta('a.i64', meta.array('int64', [-1n, -(2n ** 60n)]))
    .setMeta('a.bool', meta.array('bool', [true, false]))
    .setMeta('a.str', meta.array('string', ['<unk>', '', '▁the']))
    .setMeta('a.empty', meta.array('float32', []))
    .setMeta('a.nested', meta.array('array', [meta.array('int32', [1, 2]), meta.array('string', ['x'])]));
  const info = readGgufInfo(writeTemp(w.toBytes()));
  const m = info.metadata;
  t.equal(info.version, 3);
  t.equal(info.alignment, 32);
  t.equal(m.u8, 200);
  t.equal(m.i8, -100);
  t.equal(m.u16, 60000);
  t.equal(m.i16, -30000);
  t.equal(m.u32, 4000000000);
  t.equal(m.i32, -2000000000);
  t.equal(m.f32, Math.fround(0.1), 'float32 arrives as the f32 value');
  t.equal(m.f64, 0.1);
  t.equal(m.bool, true);
  t.equal(m.string, 'héllo ▁world');
  t.equal(m['u64.small'], 5, 'a uint64 within 2^53 is a number');
  t.equal(m['u64.big'], 2n ** 64n - 1n, 'a uint64 beyond 2^53 is a bigint');
  t.equal(m['i64.big'], -(2n ** 63n));
  t.equal(m['i64.small'], -7);
  t.ok(Object.prototype.hasOwnProperty.call(m, '__proto__'), '"__proto__" is an own key, not the prototype');
  t.equal(m['__proto__'], 'an ordinary key');
  t.same(m['a.u8'], new Int32Array([1, 255]));
  t.ok(m['a.u8'] instanceof Int32Array && m['a.i32'] instanceof Int32Array);
  t.same(m['a.i8'], new Int32Array([-128, 127]));
  t.same(m['a.u16'], new Int32Array([65535]));
  t.same(m['a.i16'], new Int32Array([-32768]));
  t.same(m['a.i32'], new Int32Array([-7, 2147483647]));
  t.same(m['a.u32'], [7, 4294967295]);
  t.ok(m['a.f32'] instanceof Float32Array);
  t.same(m['a.f32'], new Float32Array([0.5, -1.25, 0.1]));
  t.ok(m['a.f64'] instanceof Float64Array);
  t.same(m['a.f64'], new Float64Array([1e300, 0.1]));
  t.same(m['a.u64'], [1, 2n ** 60n]);
  t.same(m['a.i64'], [-1, -(2n ** 60n)]);
  t.same(m['a.bool'], [true, false]);
  t.same(m['a.str'], ['<unk>', '', '▁the']);
  t.same(m['a.empty'], new Float32Array(0));
  t.same(m['a.nested'], [new Int32Array([1, 2]), ['x']]);
  t.same(Object.keys(m).slice(0, 3), ['u8', 'i8', 'u16'], 'keys keep file order');
  t.equal(info.metadataTypes.u8, 'uint8');
  t.equal(info.metadataTypes['u64.big'], 'uint64');
  t.equal(info.metadataTypes['a.f32'], 'array[float32]');
  t.equal(info.metadataTypes['a.str'], 'array[string]');
  t.equal(info.metadataTypes['a.nested'], 'array[array[int32]]');
  t.equal(info.tensors.length, 0);
});

t.test('the writer refuses values that do not fit their type', async (t) => {
  t.throws(() => new GgufWriter().setMeta('k', meta.uint8(256)).toBytes(), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => new GgufWriter().setMeta('k', meta.int32(1.5)).toBytes(), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => new GgufWriter().setMeta('k', meta.uint64(-1n)).toBytes(), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => new GgufWriter().setMeta('k', meta.uint64(2 ** 60)).toBytes(), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => new GgufWriter({ alignment: 48 }), { code: 'E_BAD_ARGUMENT' });
  const w = new GgufWriter();
  t.throws(() => w.addTensor({ name: 'q', type: 'Q4_0', shape: [48, 2], data: new Float32Array(96) }),
    { code: 'E_BAD_ARGUMENT', message: /not a multiple of 32/ });
  t.throws(() => w.addTensor({ name: 'x', type: 'F32', shape: [0], data: [] }), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'y', type: 'F32', shape: [1, 1, 1, 1, 1], data: [1] }), { code: 'E_BAD_ARGUMENT' });
  t.throws(() => w.addTensor({ name: 'n'.repeat(65), type: 'F32', shape: [1], data: [1] }), { code: 'E_BAD_ARGUMENT' });
  w.addTensor({ name: 'raw', type: 'F16', shape: [4], data: new Uint8Array(7) });
  t.throws(() => w.toBytes(), { code: 'E_BAD_ARGUMENT', message: /needs 8 bytes, got 7/ });
  const path = join(dir, 'partial.gguf');
  t.throws(() => w.writeFile(path), { code: 'E_BAD_ARGUMENT' });
  t.notOk(existsSync(path), 'a failed write leaves no partial file');
});

t.test('f16 and bf16 conversions round to nearest even like ggml', async (t) => {
  t.equal(f32ToF16(1), 0x3c00);
  t.equal(f32ToF16(-2), 0xc000);
  t.equal(f32ToF16(65504), 0x7bff);
  t.equal(f32ToF16(65520), 0x7c00, 'rounds up to infinity');
  t.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'a tie rounds to even (down)');
  t.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, 'a tie rounds to even (up)');
  t.equal(f32ToF16(2 ** -24), 0x0001, 'the smallest subnormal');
  t.equal(f32ToF16(2 ** -25), 0x0000, 'half the smallest subnormal ties to zero');
  t.equal(f32ToF16(1.5 * 2 ** -25), 0x0001);
  t.equal(f32ToF16(-0), 0x8000);
  t.equal(f32ToF16(NaN), 0x7e00);
  t.equal(f32ToF16(Infinity), 0x7c00);
  t.equal(f16ToF32(0x3555), Math.fround(0.333251953125));
  t.equal(f16ToF32(0x0001), 2 ** -24);
  t.ok(Number.isNaN(f16ToF32(0x7e00)));
  for (let h = 0; h < 0x7c00; h += 7) t.equal(f32ToF16(f16ToF32(h)), h, `f16 ${h} survives a round trip`);
  t.equal(f32ToBf16(1), 0x3f80);
  t.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, 'bf16 tie rounds to even (down)');
  t.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82, 'bf16 tie rounds to even (up)');
  t.equal(f32ToBf16(NaN) & 0x7fc0, 0x7fc0);
  t.equal(bf16ToF32(0xbf80), -1);
});

t.test('Q4_0 and Q8_0 blocks match values computed by hand', async (t) => {
  // x = -16..15: the value of largest magnitude is -16, so d = -16 / -8 = 2 and nibble = trunc(x/2 + 8.5).
  const x = Float32Array.from({ length: 32 }, (_, j) => j - 16);
  const q4 = quantizeQ4_0(x);
  t.same([...q4.subarray(0, 2)], [0x00, 0x40], 'd = 2.0 as f16 (0x4000)');
  t.same([...q4.subarray(2)], [
    0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4, 0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8,
  ], 'low nibble = weight j, high nibble = weight j+16, the top clamped to 15');
  const allZero = quantizeQ4_0(new Float32Array(32));
  t.same([...allZero], [0x00, 0x80, ...new Array(16).fill(0x88)], 'a zero block has d = 0 / -8 = -0 and nibbles 8');
  // Q8_0: d = amax / 127 = 16 / 127; q = round(x / d), ties away from zero.
  const q8 = quantizeQ8_0(x);
  const d = f16ToF32(q8[0]! | (q8[1]! << 8));
  t.equal(d, f16ToF32(f32ToF16(Math.fround(16 / 127))));
  const q = new Int8Array(q8.buffer, 2, 32);
  t.equal(q[0], -127);
  t.equal(q[16], 0);
  t.equal(q[24], Math.round(8 * 127 / 16));
  t.equal(q[31], Math.round(15 * 127 / 16));
  const half = Float32Array.from({ length: 32 }, (_, j) => (j === 0 ? 127 : j === 1 ? 2.5 : j === 2 ? -2.5 : 0));
  const qh = new Int8Array(quantizeQ8_0(half).buffer, 2, 32);
  t.same([qh[0], qh[1], qh[2]], [127, 3, -3], 'ties round away from zero');
});

t.test('every tensor type round-trips: shapes, aligned offsets, and the values', async (t) => {
  const types: GgufTensorType[] = ['F32', 'F16', 'BF16', 'Q4_0', 'Q8_0'];
  const shape = [64, 3];
  const n = 64 * 3;
  const w = new GgufWriter();
  const source = new Map<string, Float32Array>();
  types.forEach((type, i) => {
    const x = randomWeights(n, 100 + i);
    source.set(type, x);
    w.addTensor({ name: `t.${type}`, type, shape, data: x });
  });
  const lazy = randomWeights(2 * 32 * 2 * 2, 7);
  w.addTensor({ name: 'lazy.4d', type: 'Q8_0', shape: [32, 2, 2, 2], data: () => lazy });
  const raw = quantizeQ4_0(source.get('F32')!);
  w.addTensor({ name: 'raw.q4', type: 'Q4_0', shape, data: raw });
  w.addTensor({ name: 'odd.f32', type: 'F32', shape: [3], data: [1, 2, 3] });
  const path = join(dir, 'tensors.gguf');
  w.writeFile(path);
  const file = new Uint8Array(readFileSync(path));
  const info: GgufInfo = readGgufInfo(path);
  t.equal(info.fileSize, file.length);
  t.equal(info.tensors.length, types.length + 3);
  t.equal(info.dataOffset % 32, 0);
  for (const type of types) {
    const ti = info.tensors.find((x) => x.name === `t.${type}`)!;
    t.equal(ti.type, type);
    t.same(ti.shape, shape);
    t.equal(ti.bytes, typeBytes(type, n));
    t.equal(ti.offset % 32, 0, `${type} data is aligned`);
    const got = decodeTensor(type, file.subarray(ti.offset, ti.offset + ti.bytes), n);
    const x = source.get(type)!;
    let worst = 0;
    for (let b = 0; b < n / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        const err = Math.abs(got[i]! - x[i]!);
        // Allowed error: half an f16/bf16 ulp, or half a quantization step (plus the f16 rounding
        // of the scale): Q8_0 steps are amax/127, Q4_0 steps amax/8.
        const tol =
          type === 'F32' ? 0 :
          type === 'F16' ? Math.abs(x[i]!) * 2 ** -11 + 2 ** -25 :
          type === 'BF16' ? Math.abs(x[i]!) * 2 ** -8 :
          type === 'Q8_0' ? (amax / 127) * (0.5 + 2 ** -10 * 127) :
          (amax / 8) * (0.5 + 2 ** -10 * 8);
        worst = Math.max(worst, err - tol);
      }
    }
    t.ok(worst <= 0, `${type} values within tolerance (excess ${worst})`);
  }
  const rq = info.tensors.find((x) => x.name === 'raw.q4')!;
  t.same(file.subarray(rq.offset, rq.offset + rq.bytes), raw, 'raw bytes are written verbatim');
  const tq = info.tensors.find((x) => x.name === 't.Q4_0')!;
  t.same(file.subarray(tq.offset, tq.offset + tq.bytes), quantizeQ4_0(source.get('Q4_0')!),
    'float data is quantized like the reference');
  const l = info.tensors.find((x) => x.name === 'lazy.4d')!;
  t.same(l.shape, [32, 2, 2, 2]);
  t.same(file.subarray(l.offset, l.offset + l.bytes), quantizeQ8_0(lazy));
  const odd = info.tensors.find((x) => x.name === 'odd.f32')!;
  t.same(decodeTensor('F32', file.subarray(odd.offset, odd.offset + 12), 3), new Float32Array([1, 2, 3]));
});

t.test('a custom alignment is written as general.alignment and honoured', async (t) => {
  const w = new GgufWriter({ alignment: 256 });
  w.addTensor({ name: 'a', type: 'F32', shape: [3], data: [1, 2, 3] });
  w.addTensor({ name: 'b', type: 'F16', shape: [5], data: [1, 2, 3, 4, 5] });
  const info = readGgufInfo(writeTemp(w.toBytes()));
  t.equal(info.alignment, 256);
  t.equal(info.metadata['general.alignment'], 256);
  t.equal(info.metadataTypes['general.alignment'], 'uint32');
  for (const ti of info.tensors) t.equal(ti.offset % 256, 0);
});

t.test('the writer streams: the header, then one chunk per tensor in order', async (t) => {
  const w = new GgufWriter();
  const produced: string[] = [];
  for (const name of ['x', 'y', 'z']) {
    w.addTensor({ name, type: 'F32', shape: [8], data: () => (produced.push(name), new Float32Array(8).fill(1)) });
  }
  const chunks: Uint8Array[] = [];
  w.write((c) => chunks.push(c));
  t.same(produced, ['x', 'y', 'z'], 'each tensor is produced when its turn comes');
  t.equal(chunks.length, 4, 'no padding needed between 32-byte tensors');
  t.equal(chunks[0]!.length % 32, 0, 'the header is padded to the alignment');
});

t.test('refusals reach TypeScript as EdgeErrors with the right code and the file name', async (t) => {
  const missing = join(dir, 'no-such-model.gguf');
  expectCode(t, () => readGgufInfo(missing), 'E_MODEL_NOT_FOUND', missing);

  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'));
  w.addTensor({ name: 'blk.0.ffn_down.weight', type: 'F32', shape: [256, 2], data: new Float32Array(512) });
  const good = w.toBytes();

  const cut = writeTemp(good.subarray(0, good.length - 1), 'cut.gguf');
  expectCode(t, () => readGgufInfo(cut), 'E_MODEL_CORRUPT', cut, /'blk\.0\.ffn_down\.weight'/, /past the end/);

  const v1 = good.slice();
  v1[4] = 1;
  const v1Path = writeTemp(v1, 'v1.gguf');
  expectCode(t, () => readGgufInfo(v1Path), 'E_MODEL_UNSUPPORTED', v1Path, /GGUF v1 is obsolete/);

  // Patch the tensor's type to 16 (IQ2_XXS, which edgellm does not run): the u32 after the name,
  // n_dims and two u64 dims.
  const iq2 = good.slice();
  const nameAt = Buffer.from(iq2).indexOf('blk.0.ffn_down.weight');
  const typeAt = nameAt + 'blk.0.ffn_down.weight'.length + 4 + 16;
  new DataView(iq2.buffer).setUint32(typeAt, 16, true);
  const iq2Path = writeTemp(iq2, 'iq2.gguf');
  expectCode(t, () => readGgufInfo(iq2Path), 'E_MODEL_UNSUPPORTED', iq2Path, /'blk\.0\.ffn_down\.weight' has type IQ2_XXS/,
    /edgellm quantize MODEL-F16\.gguf OUT\.gguf --type q2_k/);
  // Q4_K (12) is a type edgellm runs.
  const q4k = good.slice();
  new DataView(q4k.buffer).setUint32(typeAt, 12, true);
  t.equal(readGgufInfo(writeTemp(q4k, 'q4k.gguf')).tensors[0]!.type, 'Q4_K');

  t.throws(() => readGgufInfo(42 as unknown as string), { code: 'E_BAD_ARGUMENT' });
});

/**
 * Truncations and random byte edits of `good`, each read back: a defined result or a coded
 * E_MODEL_CORRUPT / E_MODEL_UNSUPPORTED naming the file, never anything else.
 */
function fuzzHeader(t: TapTest, good: Uint8Array, seed: number, edits = 300): Record<string, number> {
  const r = rng(seed);
  const counts: Record<string, number> = { ok: 0, E_MODEL_CORRUPT: 0, E_MODEL_UNSUPPORTED: 0 };
  let unexpected = 0;
  const path = join(dir, `fuzz-${seed}.gguf`);
  const variants: Uint8Array[] = [];
  for (let n = 0; n < good.length; n += Math.max(3, Math.floor(good.length / 2000))) variants.push(good.subarray(0, n));
  for (let v = 0; v < edits; v++) {
    const b = good.slice();
    const count = 1 + Math.floor(r() * 6);
    for (let k = 0; k < count; k++) {
      const at = Math.floor(r() * b.length);
      b[at] = r() < 0.5 ? Math.floor(r() * 256) : [0, 0xff, 0x7f, 0x80, 1][Math.floor(r() * 5)]!;
    }
    variants.push(b);
  }
  for (const b of variants) {
    writeFileSync(path, b);
    try {
      readGgufInfo(path);
      counts.ok!++;
    } catch (err) {
      const code = (err as EdgeError).code;
      if (err instanceof EdgeError && (code === 'E_MODEL_CORRUPT' || code === 'E_MODEL_UNSUPPORTED') &&
          err.message.startsWith(path)) {
        counts[code]!++;
      } else {
        unexpected++;
        t.fail(`unexpected error: ${String(err)}`);
      }
    }
  }
  t.equal(unexpected, 0);
  t.ok(counts.E_MODEL_CORRUPT! > 0);
  t.comment(`${variants.length} variants: ${JSON.stringify(counts)}`);
  return counts;
}

t.test('fuzz: truncated and mutated files never crash the process', async (t) => {
  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'))
    .setMeta('llama.block_count', meta.uint32(1))
    .setMeta('tokenizer.ggml.tokens', meta.array('string', ['<unk>', '<s>', 'a']))
    .setMeta('tokenizer.ggml.scores', meta.array('float32', [0, 0, -1]))
    .setMeta('nested', meta.array('array', [meta.array('uint64', [1n])]));
  w.addTensor({ name: 'a', type: 'Q4_0', shape: [32, 2], data: randomWeights(64, 1) });
  w.addTensor({ name: 'b', type: 'F16', shape: [8], data: randomWeights(8, 2) });
  fuzzHeader(t, w.toBytes(), 4242);
});

/** Byte offsets of the f16 scale fields in one block of each type (d, and m / dmin where there is one). */
const SCALE_FIELDS: Partial<Record<GgufTensorType, number[]>> = {
  Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], IQ4_NL: [0], Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208], IQ4_XS: [0],
};

/**
 * A 2-layer llama whose tensors hold every new weight type (valid blocks from the native
 * quantizer), the token embedding Q4_K (its lookup dequantizes one row) and the output Q6_K.
 */
async function writeEveryTypeModel(): Promise<{ bytes: Uint8Array; tensors: Array<{ name: string; type: GgufTensorType }> }> {
  const E = 256, F = 256, V = 64;
  const types: Array<[string, GgufTensorType, number[]]> = [
    ['token_embd.weight', 'Q4_K', [E, V]],
    ['output.weight', 'Q6_K', [E, V]],
  ];
  const layer = (l: number, t: GgufTensorType[]) => {
    const p = `blk.${l}.`;
    types.push([p + 'attn_q.weight', t[0]!, [E, E]], [p + 'attn_k.weight', t[1]!, [E, E / 2]], [p + 'attn_v.weight', t[2]!, [E, E / 2]],
      [p + 'attn_output.weight', t[3]!, [E, E]], [p + 'ffn_gate.weight', t[4]!, [E, F]], [p + 'ffn_up.weight', t[5]!, [E, F]],
      [p + 'ffn_down.weight', t[6]!, [F, E]]);
  };
  layer(0, ['Q2_K', 'Q3_K', 'Q5_K', 'IQ4_XS', 'Q4_1', 'Q5_1', 'Q5_0']);
  layer(1, ['Q4_K', 'Q6_K', 'IQ4_NL', 'Q5_0', 'Q3_K', 'Q2_K', 'IQ4_NL']);
  const w = new GgufWriter();
  w.setMeta('general.architecture', meta.string('llama'));
  w.setMeta('llama.context_length', meta.uint32(64));
  w.setMeta('llama.embedding_length', meta.uint32(E));
  w.setMeta('llama.block_count', meta.uint32(2));
  w.setMeta('llama.feed_forward_length', meta.uint32(F));
  w.setMeta('llama.attention.head_count', meta.uint32(4));
  w.setMeta('llama.attention.head_count_kv', meta.uint32(2));
  let seed = 10;
  for (const [name, type, shape] of types) {
    const x = randomWeights(shape[0]! * shape[1]!, seed++).map((v) => v / 16);
    w.addTensor({ name, type, shape, data: await loadAddon().convertRows(new Uint8Array(x.buffer), 'F32', type, shape[0]!) });
  }
  for (let l = 0; l < 2; l++) {
    w.addTensor({ name: `blk.${l}.attn_norm.weight`, type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
    w.addTensor({ name: `blk.${l}.ffn_norm.weight`, type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
  }
  w.addTensor({ name: 'output_norm.weight', type: 'F32', shape: [E], data: new Float32Array(E).fill(1) });
  return { bytes: w.toBytes(), tensors: types.map(([name, type]) => ({ name, type })) };
}

t.test('fuzz: K-quant files, header and tensor data corrupted, load and run or fail with a code, never crash', async (t) => {
  const { bytes: good, tensors } = await writeEveryTypeModel();
  fuzzHeader(t, good, 777, 200);

  // Tensor data: random bytes, and NaN / Inf / huge values in the blocks' f16 scales. Loading
  // reads no weights, so each variant loads; evaluating three tokens must give V logits or a coded
  // error. What the logits are is defined, not necessarily finite: a NaN/Inf output.weight scale
  // gives NaN/Inf logits; a NaN reaching the hidden state quantizes to zero activations (the Q8
  // quantizers' amax skips NaN, as ggml's does), so the logits after it are all 0.
  const path = join(dir, 'fuzz-data.gguf');
  writeFileSync(path, good);
  const info = readGgufInfo(path);
  const clean = await loadModel(path, { threads: 1, contextSize: 16 });
  const V = clean.info().n_vocab;
  const base = await clean.evalLogits([1, 2, 3]);
  clean.close();
  t.ok(base.length === V && base.every(Number.isFinite), 'the uncorrupted model gives finite logits');
  const r = rng(31337);
  const counts: Record<string, number> = { unchanged: 0, changed: 0, nonFinite: 0 };
  for (let v = 0; v < 60; v++) {
    const b = good.slice();
    const view = new DataView(b.buffer);
    const edits = 1 + Math.floor(r() * 4);
    for (let k = 0; k < edits; k++) {
      const name = tensors[Math.floor(r() * tensors.length)]!.name;
      const ti = info.tensors.find((x) => x.name === name)!;
      if (r() < 0.5) {
        b[ti.offset + Math.floor(r() * ti.bytes)] = Math.floor(r() * 256);
      } else {
        const fields = SCALE_FIELDS[ti.type]!;
        const block = Math.floor(r() * (ti.bytes / typeBytes(ti.type, blockElems(ti.type))));
        const at = ti.offset + block * typeBytes(ti.type, blockElems(ti.type)) + fields[Math.floor(r() * fields.length)]!;
        view.setUint16(at, [0x7e00, 0x7c00, 0xfc00, 0x7bff, 0xfbff][Math.floor(r() * 5)]!, true);
      }
    }
    writeFileSync(path, b);
    try {
      const m = await loadModel(path, { threads: 1, contextSize: 16 });
      try {
        const logits = await m.evalLogits([1, 2, 3]);
        t.equal(logits.length, V);
        const kind = !logits.every(Number.isFinite) ? 'nonFinite' : logits.every((x, i) => x === base[i]) ? 'unchanged' : 'changed';
        counts[kind]!++;
      } finally {
        m.close();
      }
    } catch (err) {
      const code = err instanceof EdgeError ? err.code : 'uncoded';
      counts[code] = (counts[code] ?? 0) + 1;
      if (!(err instanceof EdgeError) || !code.startsWith('E_MODEL_')) t.fail(`unexpected error: ${String(err)}`);
    }
  }
  t.comment(`60 corrupted data variants: ${JSON.stringify(counts)}`);
  t.ok(counts.changed! + counts.nonFinite! > 0, 'corruptions reach the logits (the corrupted blocks are read)');
  // A NaN scale in output.weight's first super-block (row 0, token 0) makes logit 0 NaN, and only it.
  const b = good.slice();
  const out = info.tensors.find((x) => x.name === 'output.weight')!;
  new DataView(b.buffer).setUint16(out.offset + SCALE_FIELDS.Q6_K![0]!, 0x7e00, true);
  writeFileSync(path, b);
  const m = await loadModel(path, { threads: 1, contextSize: 16 });
  const logits = await m.evalLogits([1, 2, 3]);
  m.close();
  t.ok(Number.isNaN(logits[0]) && logits.subarray(1).every((x, i) => x === base[i + 1]), 'a NaN output scale: logit 0 is NaN, the others as before');
});

t.test('real models: metadata of stories260K, TinyLLama Q4_0 and the tiny random F16 model', async (t) => {
  if (!requireModels(t)) return;
  const s = readGgufInfo(join(modelsDir, 'stories260K.gguf'));
  t.equal(s.version, 3);
  t.equal(s.fileSize, 1185376);
  t.equal(s.tensors.length, 48);
  t.equal(Object.keys(s.metadata).length, 19);
  const m = s.metadata;
  t.equal(m['general.architecture'], 'llama');
  t.equal(m['llama.context_length'], 2048);
  t.equal(m['llama.embedding_length'], 64);
  t.equal(m['llama.feed_forward_length'], 172);
  t.equal(m['llama.block_count'], 5);
  t.equal(m['llama.attention.head_count'], 8);
  t.equal(m['llama.attention.head_count_kv'], 4);
  t.equal(m['llama.rope.dimension_count'], 8);
  t.equal(m['llama.attention.layer_norm_rms_epsilon'], Math.fround(1e-5));
  t.notOk('llama.rope.freq_base' in m);
  t.equal(m['tokenizer.ggml.model'], 'llama');
  t.equal(m['tokenizer.ggml.seperator_token_id'], 0xffffffff);
  const tokens = m['tokenizer.ggml.tokens'] as string[];
  t.equal(tokens.length, 512);
  t.same(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  const scores = m['tokenizer.ggml.scores'] as Float32Array;
  t.ok(scores instanceof Float32Array && scores.length === 512);
  t.ok(m['tokenizer.ggml.token_type'] instanceof Int32Array);
  t.ok(s.tensors.every((x) => x.type === 'F32'));
  t.equal(s.tensors.reduce((a, x) => a + x.shape.reduce((p, d) => p * d, 1), 0), 292800);
  t.same(s.tensors.find((x) => x.name === 'blk.0.attn_k.weight')!.shape, [64, 32]);
  t.same(s.tensors.find((x) => x.name === 'blk.0.ffn_down.weight')!.shape, [172, 64]);

  const q = readGgufInfo(join(modelsDir, 'TinyLLama-v0-Q4_0.gguf'));
  t.equal(q.tensors.length, 75);
  t.equal(q.tensors.filter((x) => x.type === 'Q4_0').length, 58);
  t.equal(q.tensors.filter((x) => x.type === 'F32').length, 17);
  t.equal(q.metadata['general.file_type'], 2);
  t.equal((q.metadata['tokenizer.ggml.tokens'] as string[]).length, 32000);
  const out = q.tensors.find((x) => x.name === 'output.weight')!;
  t.same(out.shape, [64, 32000]);
  t.equal(out.bytes, (64 / 32) * 18 * 32000);

  const r = readGgufInfo(join(modelsDir, 'llama-2-tiny-random.gguf'));
  t.equal(r.tensors.length, 12);
  t.equal(r.metadata['general.name'], 'LLaMA v2');
  t.equal(r.tensors.find((x) => x.name === 'token_embd.weight')!.type, 'F16');
  t.equal(r.tensors.reduce((a, x) => a + x.shape.reduce((p, d) => p * d, 1), 0), 513048);
});

t.test('real models: the non-conforming files are refused with the reason', async (t) => {
  if (!requireModels(t)) return;
  const v1 = join(modelsDir, 'legacy', 'tinyllamas-stories-260k-f32.gguf');
  expectCode(t, () => readGgufInfo(v1), 'E_MODEL_UNSUPPORTED', v1, /GGUF v1 is obsolete/);
  const q8 = join(modelsDir, 'legacy', 'tinyllamas-stories-260k-q8_0.gguf');
  expectCode(t, () => readGgufInfo(q8), 'E_MODEL_CORRUPT', q8,
    /tensor 'blk\.\d+\.ffn_down\.weight' \(Q8_0\): row of 172 elements is not a multiple of the block size 32/);
  const dbrx = join(modelsDir, 'vocab', 'ggml-vocab-dbrx.gguf');
  expectCode(t, () => readGgufInfo(dbrx), 'E_MODEL_CORRUPT', dbrx, /'general\.file_type'/, /duplicate key/);
  const ggjt = join(modelsDir, 'legacy', 'TinyLLama-v0.ggmlv3.q4_0.bin');
  expectCode(t, () => readGgufInfo(ggjt), 'E_MODEL_UNSUPPORTED', ggjt, /pre-GGUF GGML\/GGJT/, /convert/i);
});

t.test('a header larger than the writer\'s first 4 KiB buffer is written whole, whatever write grows it', async (t) => {
  // Keys of varied lengths and types, so the buffer grows during string, integer and float writes.
  const w = new GgufWriter();
  for (let i = 0; i < 600; i++) {
    const key = `key.${'k'.repeat(i % 7)}.${i}`;
    if (i % 4 === 0) w.setMeta(key, meta.string('x'.repeat(i % 13)));
    else if (i % 4 === 1) w.setMeta(key, meta.uint32(i));
    else if (i % 4 === 2) w.setMeta(key, meta.uint64(BigInt(i) * 1000003n));
    else w.setMeta(key, meta.float64(i / 3));
  }
  const info = readGgufInfo(writeTemp(w.toBytes()));
  t.equal(Object.keys(info.metadata).length, 600);
  let wrong = 0;
  for (let i = 0; i < 600; i++) {
    const v = info.metadata[`key.${'k'.repeat(i % 7)}.${i}`];
    const want = ['x'.repeat(i % 13), i, i * 1000003, i / 3][i % 4];
    if (v !== want) wrong++;
  }
  t.equal(wrong, 0, 'every value reads back');
});
