/**
 * Tensor element encodings, bit-exact with ggml's reference code (and native/src/quant):
 * f32 <-> f16 / bf16 with round-to-nearest-even, and the Q4_0 / Q8_0 block formats.
 * Arithmetic is done in f32 with Math.fround, as the C reference does it.
 *
 * Block layouts (32 weights per block):
 *   Q4_0: f16 scale d, then 16 bytes; byte j holds weight j (low nibble) and weight j+16 (high
 *         nibble), stored +8: weight = d * (nibble - 8). 18 bytes.
 *   Q8_0: f16 scale d, then 32 int8: weight = d * q. 34 bytes.
 */
import type { GgufTensorType } from './gguf.js';

export const QK = 32;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f32 -> IEEE half bits, round to nearest even; overflow to infinity, NaN to a quiet NaN. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;  // below half the smallest subnormal: rounds to zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;  // a carry may round up to infinity
  return sign | h;
}

/** IEEE half bits -> f32 (exact). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** f32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 bits -> f32 (exact). */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** Quantizes n = x.length weights (a multiple of 32) to Q4_0 blocks, as ggml's reference does. */
export function quantizeQ4_0(x: ArrayLike<number>): Uint8Array {
  checkBlocks(x.length);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * 18);
  const view = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    // The scale is the signed value of largest magnitude / -8, so that value maps to nibble 0.
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = Math.fround(x[i * QK + j]!);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(i * 18, f32ToF16(d), true);
    for (let j = 0; j < QK / 2; j++) {
      const x0 = Math.fround(Math.fround(x[i * QK + j]!) * id);
      const x1 = Math.fround(Math.fround(x[i * QK + QK / 2 + j]!) * id);
      const q0 = Math.min(15, Math.trunc(Math.fround(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(x1 + 8.5)));
      out[i * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Quantizes n = x.length weights (a multiple of 32) to Q8_0 blocks, as ggml's reference does. */
export function quantizeQ8_0(x: ArrayLike<number>): Uint8Array {
  checkBlocks(x.length);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * 34);
  const view = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(Math.fround(x[i * QK + j]!)));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    view.setUint16(i * 34, f32ToF16(d), true);
    for (let j = 0; j < QK; j++) {
      const v = Math.fround(Math.fround(x[i * QK + j]!) * id);
      const q = Math.sign(v) * Math.floor(Math.abs(v) + 0.5);  // round half away from zero
      view.setInt8(i * 34 + 2 + j, q);
    }
  }
  return out;
}

export function dequantizeQ4_0(bytes: Uint8Array, n: number): Float32Array {
  checkBlocks(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n / QK; i++) {
    const d = f16ToF32(view.getUint16(i * 18, true));
    for (let j = 0; j < QK / 2; j++) {
      const b = bytes[i * 18 + 2 + j]!;
      out[i * QK + j] = ((b & 15) - 8) * d;
      out[i * QK + QK / 2 + j] = ((b >>> 4) - 8) * d;
    }
  }
  return out;
}

export function dequantizeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  checkBlocks(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n / QK; i++) {
    const d = f16ToF32(view.getUint16(i * 34, true));
    for (let j = 0; j < QK; j++) out[i * QK + j] = view.getInt8(i * 34 + 2 + j) * d;
  }
  return out;
}

/** Bytes of n elements of a type (n a multiple of 32 for the block types). */
export function typeBytes(type: GgufTensorType, n: number): number {
  switch (type) {
    case 'F32': return n * 4;
    case 'F16':
    case 'BF16': return n * 2;
    case 'Q4_0': return (n / QK) * 18;
    case 'Q8_0': return (n / QK) * 34;
  }
}

/** Encodes f32 values as a tensor of `type` (little-endian bytes, as stored in GGUF). */
export function encodeTensor(type: GgufTensorType, x: ArrayLike<number>): Uint8Array {
  switch (type) {
    case 'F32': {
      const out = new Uint8Array(x.length * 4);
      const view = new DataView(out.buffer);
      for (let i = 0; i < x.length; i++) view.setFloat32(i * 4, x[i]!, true);
      return out;
    }
    case 'F16':
    case 'BF16': {
      const conv = type === 'F16' ? f32ToF16 : f32ToBf16;
      const out = new Uint8Array(x.length * 2);
      const view = new DataView(out.buffer);
      for (let i = 0; i < x.length; i++) view.setUint16(i * 2, conv(x[i]!), true);
      return out;
    }
    case 'Q4_0': return quantizeQ4_0(x);
    case 'Q8_0': return quantizeQ8_0(x);
  }
}

/** Decodes n elements of a tensor of `type` to f32. */
export function decodeTensor(type: GgufTensorType, bytes: Uint8Array, n: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'F32': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    case 'F16':
    case 'BF16': {
      const conv = type === 'F16' ? f16ToF32 : bf16ToF32;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = conv(view.getUint16(i * 2, true));
      return out;
    }
    case 'Q4_0': return dequantizeQ4_0(bytes, n);
    case 'Q8_0': return dequantizeQ8_0(bytes, n);
  }
}

function checkBlocks(n: number): void {
  if (n % QK !== 0) throw new RangeError(`${n} weights are not a whole number of ${QK}-weight blocks`);
}
