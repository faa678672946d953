/**
 * Tensor element encodings, bit-exact with ggml's reference code (and native/src/quant):
 * f32 <-> f16 / bf16 with round-to-nearest-even, the Q4_0 / Q8_0 quantizers, and the
 * dequantizers of every weight type edgellm runs. Quantizing arithmetic is done in f32 with
 * Math.fround, as the C reference does it; dequantizing is exact (float64, see dequantizeExact).
 *
 * Block layouts (ggml-common.h's, byte for byte; f16 scales are little-endian IEEE half):
 *   Q4_0:   d, 16 bytes; byte j holds weight j (low nibble) and weight j+16 (high nibble), stored +8:
 *           w = d * (q - 8). 32 weights, 18 bytes.
 *   Q4_1:   d, m, nibbles as Q4_0: w = d * q + m. 20 bytes.
 *   Q5_0:   d, qh (u32), nibbles as Q4_0; bit j of qh is bit 4 of weight j: w = d * (q - 16). 22 bytes.
 *   Q5_1:   d, m, qh, nibbles: w = d * q + m. 24 bytes.
 *   Q8_0:   d, 32 int8: w = d * q. 34 bytes.
 *   IQ4_NL: d, nibbles as Q4_0: w = d * IQ4_VALUES[q]. 18 bytes.
 * 256-weight super-blocks (K-quants, IQ4_XS):
 *   Q2_K:   scales[16] (sc | m << 4), qs[64], d, dmin: sub-block s of 16 weights,
 *           w = d * sc_s * q - dmin * m_s, q 2 bits. 84 bytes.
 *   Q3_K:   hmask[32], qs[64], scales[12] (16 6-bit values stored +32), d:
 *           w = d * (sc_s - 32) * (q - (hmask bit ? 0 : 4)). 110 bytes.
 *   Q4_K:   d, dmin, scales[12] (8 6-bit scales and mins), qs[128]: sub-block s of 32,
 *           w = d * sc_s * q - dmin * m_s. 144 bytes.
 *   Q5_K:   d, dmin, scales[12], qh[32], qs[128]: as Q4_K with a fifth bit. 176 bytes.
 *   Q6_K:   ql[128], qh[64], scales[16] (int8), d: w = d * sc_s * (q - 32), q 6 bits. 210 bytes.
 *   IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]: sub-block s of 32,
 *           w = d * (ls_s - 32) * IQ4_VALUES[q], ls 6 bits. 136 bytes.
 * Where the bits of each q sit is spelled out in each dequantizer.
 */
import type { GgufTensorType } from './gguf.js';

/** Weights per block of the 32-weight formats (Q4_0 .. Q8_0, IQ4_NL). */
export const QK = 32;
/** Weights per super-block of the K-quants and IQ4_XS. */
export const QK_K = 256;

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

/** Weights per block and bytes per block of each type (F32/F16/BF16: one element). */
export const TYPE_LAYOUT: Readonly<Record<GgufTensorType, { blockElems: number; blockBytes: number }>> = {
  F32: { blockElems: 1, blockBytes: 4 },
  F16: { blockElems: 1, blockBytes: 2 },
  BF16: { blockElems: 1, blockBytes: 2 },
  Q4_0: { blockElems: QK, blockBytes: 18 },
  Q4_1: { blockElems: QK, blockBytes: 20 },
  Q5_0: { blockElems: QK, blockBytes: 22 },
  Q5_1: { blockElems: QK, blockBytes: 24 },
  Q8_0: { blockElems: QK, blockBytes: 34 },
  IQ4_NL: { blockElems: QK, blockBytes: 18 },
  Q2_K: { blockElems: QK_K, blockBytes: 84 },
  Q3_K: { blockElems: QK_K, blockBytes: 110 },
  Q4_K: { blockElems: QK_K, blockBytes: 144 },
  Q5_K: { blockElems: QK_K, blockBytes: 176 },
  Q6_K: { blockElems: QK_K, blockBytes: 210 },
  IQ4_XS: { blockElems: QK_K, blockBytes: 136 },
};

/** Weights per block of `type` (1 for the float types): a row's length must be a multiple. */
export function blockElems(type: GgufTensorType): number {
  return TYPE_LAYOUT[type].blockElems;
}

/** Bytes of n elements of a type (n a whole number of the type's blocks). */
export function typeBytes(type: GgufTensorType, n: number): number {
  const { blockElems: be, blockBytes } = TYPE_LAYOUT[type];
  return (n / be) * blockBytes;
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
    default:
      // The other quantizers exist natively only (edgellm quantize uses them).
      throw new RangeError(`no TypeScript encoder for ${type}: write F32/F16 and quantize with edgellm quantize`);
  }
}

/**
 * Decodes n elements of a tensor of `type` to f32: ggml's values for F32/F16/BF16/Q4_0/Q8_0 (exact
 * in f32); the other formats' exact value (dequantizeExact) rounded to f32 once.
 */
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
    default: return Float32Array.from(dequantizeExact(type, bytes, n));
  }
}

function checkBlocks(n: number): void {
  if (n % QK !== 0) throw new RangeError(`${n} weights are not a whole number of ${QK}-weight blocks`);
}

// ---- Exact dequantization of every weight type ----------------------------------------------------

/** The IQ4_NL / IQ4_XS code book (ggml's kvalues_iq4nl): a non-uniform 4-bit grid. */
export const IQ4_VALUES: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/**
 * The weights a tensor of `type` holds, as real numbers: each block's formula (see the top of this
 * file) evaluated in float64, where every product of an f16 scale, a 6-bit sub-scale and a code is
 * exact (11 + 6 + 8 significant bits), so the only rounding is the final d*sc*q - dmin*m of the
 * formats with a minimum (float64, 53 bits). ggml's own dequantizers round each step to f32; the
 * quantized GEMMs compute with these real values (integer dot products scaled once), so this is what
 * a float64 reference forward multiplies by. NaN/Inf scales give NaN/Inf weights.
 */
export function dequantizeExact(type: GgufTensorType, bytes: Uint8Array, n: number): Float64Array {
  const { blockElems: be, blockBytes: bb } = TYPE_LAYOUT[type];
  if (n % be !== 0) throw new RangeError(`${n} weights are not a whole number of ${be}-weight ${type} blocks`);
  const nb = n / be;
  if (bytes.length < nb * bb) throw new RangeError(`${n} ${type} weights need ${nb * bb} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = (at: number) => f16ToF32(view.getUint16(at, true));
  const out = new Float64Array(n);
  switch (type) {
    case 'F32':
    case 'F16':
    case 'BF16':
    case 'Q4_0':
    case 'Q8_0':
      out.set(decodeTensor(type, bytes, n));  // exact in f32 already
      return out;
    case 'Q4_1':
    case 'Q5_0':
    case 'Q5_1':
    case 'IQ4_NL':
      for (let i = 0; i < nb; i++) legacyBlock(type, bytes, view, i * bb, out, i * QK);
      return out;
    case 'Q2_K':
      for (let i = 0; i < nb; i++) {
        const b = i * bb, y = i * QK_K;
        const d = h(b + 80), dmin = h(b + 82);
        // Two halves of 128 weights, each from 32 bytes of qs: weight 32*j + l of the half is bits
        // 2j..2j+1 of qs[l] (l < 32); sub-block s = 8*half + 2j + (l >= 16) has scales[s].
        for (let half = 0; half < 2; half++) {
          for (let j = 0; j < 4; j++) {
            for (let l = 0; l < 32; l++) {
              const sc = bytes[b + half * 8 + 2 * j + (l >> 4)]!;
              const q = (bytes[b + 16 + half * 32 + l]! >> (2 * j)) & 3;
              out[y + half * 128 + j * 32 + l] = d * (sc & 15) * q - dmin * (sc >> 4);
            }
          }
        }
      }
      return out;
    case 'Q3_K':
      for (let i = 0; i < nb; i++) {
        const b = i * bb, y = i * QK_K;
        const d = h(b + 108);
        const sc = q3kScales(bytes, b + 96);
        // Low 2 bits as Q2_K (qs at byte 32); the third bit of weight 32*j + l of half `half` is
        // bit 4*half + j of hmask[l], and a clear bit subtracts 4.
        for (let half = 0; half < 2; half++) {
          for (let j = 0; j < 4; j++) {
            for (let l = 0; l < 32; l++) {
              const s = half * 8 + 2 * j + (l >> 4);
              const lo = (bytes[b + 32 + half * 32 + l]! >> (2 * j)) & 3;
              const hi = (bytes[b + l]! >> (4 * half + j)) & 1;
              out[y + half * 128 + j * 32 + l] = d * (sc[s]! - 32) * (lo - (hi ? 0 : 4));
            }
          }
        }
      }
      return out;
    case 'Q4_K':
    case 'Q5_K': {
      const five = type === 'Q5_K';
      const qsAt = five ? 48 : 16;
      for (let i = 0; i < nb; i++) {
        const b = i * bb, y = i * QK_K;
        const d = h(b), dmin = h(b + 2);
        // Four chunks of 64 weights from 32 bytes of qs: low nibbles are sub-block 2c, high
        // nibbles sub-block 2c+1. Q5_K: bit 2c (low) / 2c+1 (high) of qh[l] adds 16.
        for (let c = 0; c < 4; c++) {
          for (let part = 0; part < 2; part++) {
            const s = 2 * c + part;
            const [sc, m] = scaleMinK4(bytes, b + 4, s);
            for (let l = 0; l < 32; l++) {
              const byte = bytes[b + qsAt + c * 32 + l]!;
              let q = part ? byte >> 4 : byte & 15;
              if (five) q += ((bytes[b + 16 + l]! >> s) & 1) << 4;
              out[y + c * 64 + part * 32 + l] = d * sc * q - dmin * m;
            }
          }
        }
      }
      return out;
    }
    case 'Q6_K':
      for (let i = 0; i < nb; i++) {
        const b = i * bb, y = i * QK_K;
        const d = h(b + 208);
        // Two halves of 128 weights (ql 64 bytes, qh 32 bytes, 8 scales each). Weight 32*k + l
        // (k = 0..3, l < 32) takes its low 4 bits from ql[l + 32*(k & 1)] (low nibble for k < 2,
        // high for k >= 2), its top 2 bits from bits 2k..2k+1 of qh[l]; scale 2k + l/16.
        for (let half = 0; half < 2; half++) {
          const ql = b + half * 64, qh = b + 128 + half * 32, scs = b + 192 + half * 8;
          for (let k = 0; k < 4; k++) {
            for (let l = 0; l < 32; l++) {
              const lowByte = bytes[ql + l + 32 * (k & 1)]!;
              const low = k < 2 ? lowByte & 15 : lowByte >> 4;
              const q = low | (((bytes[qh + l]! >> (2 * k)) & 3) << 4);
              const sc = view.getInt8(scs + 2 * k + (l >> 4));
              out[y + half * 128 + k * 32 + l] = d * sc * (q - 32);
            }
          }
        }
      }
      return out;
    case 'IQ4_XS':
      for (let i = 0; i < nb; i++) {
        const b = i * bb, y = i * QK_K;
        const d = h(b);
        const scalesH = view.getUint16(b + 2, true);
        // Sub-block s of 32: 6-bit scale = nibble s%2 of scales_l[s/2] | bits 2s..2s+1 of scales_h << 4;
        // its 16 bytes of qs hold weight j (low nibble) and j+16 (high nibble), as Q4_0.
        for (let s = 0; s < 8; s++) {
          const ls = ((bytes[b + 4 + (s >> 1)]! >> (4 * (s & 1))) & 15) | (((scalesH >> (2 * s)) & 3) << 4);
          const dl = d * (ls - 32);
          for (let j = 0; j < 16; j++) {
            const byte = bytes[b + 8 + s * 16 + j]!;
            out[y + s * 32 + j] = dl * IQ4_VALUES[byte & 15]!;
            out[y + s * 32 + j + 16] = dl * IQ4_VALUES[byte >> 4]!;
          }
        }
      }
      return out;
  }
}

/** One 32-weight block of Q4_1, Q5_0, Q5_1 or IQ4_NL at byte `b`, into out[y..y+32). */
function legacyBlock(type: 'Q4_1' | 'Q5_0' | 'Q5_1' | 'IQ4_NL', bytes: Uint8Array, view: DataView, b: number, out: Float64Array, y: number): void {
  const d = f16ToF32(view.getUint16(b, true));
  const hasMin = type === 'Q4_1' || type === 'Q5_1';
  const m = hasMin ? f16ToF32(view.getUint16(b + 2, true)) : 0;
  const five = type === 'Q5_0' || type === 'Q5_1';
  const qh = five ? view.getUint32(b + (hasMin ? 4 : 2), true) : 0;
  const qs = b + (hasMin ? 4 : 2) + (five ? 4 : 0);
  for (let j = 0; j < 16; j++) {
    let q0 = bytes[qs + j]! & 15;
    let q1 = bytes[qs + j]! >> 4;
    if (type === 'IQ4_NL') {
      out[y + j] = d * IQ4_VALUES[q0]!;
      out[y + j + 16] = d * IQ4_VALUES[q1]!;
      continue;
    }
    if (five) {
      q0 |= ((qh >>> j) & 1) << 4;
      q1 |= ((qh >>> (j + 16)) & 1) << 4;
    }
    // Q4_1 / Q5_1 store the minimum; Q5_0 is centred on 16.
    out[y + j] = hasMin ? d * q0 + m : d * (q0 - 16);
    out[y + j + 16] = hasMin ? d * q1 + m : d * (q1 - 16);
  }
}

/**
 * Q4_K / Q5_K: the 6-bit scale and min of sub-block s (0..7) from the 12 packed bytes at `at`:
 * s < 4: low 6 bits of bytes s and s+4; s >= 4: a nibble of byte s+4 below the top 2 bits of
 * byte s-4 (scale) or byte s (min).
 */
export function scaleMinK4(bytes: Uint8Array, at: number, s: number): [number, number] {
  const q = (k: number) => bytes[at + k]!;
  if (s < 4) return [q(s) & 63, q(s + 4) & 63];
  return [(q(s + 4) & 15) | ((q(s - 4) >> 6) << 4), (q(s + 4) >> 4) | ((q(s) >> 6) << 4)];
}

/**
 * Q3_K: the 16 6-bit scales (stored +32) from the 12 packed bytes at `at`: the low 4 bits of
 * scale s are the low (s < 8) or high (s >= 8) nibble of byte s % 8; its top 2 bits are bits
 * 2*(s/4).. of byte 8 + s % 4.
 */
export function q3kScales(bytes: Uint8Array, at: number): number[] {
  return Array.from({ length: 16 }, (_, s) => {
    const low = s < 8 ? bytes[at + s]! & 15 : bytes[at + s - 8]! >> 4;
    const high = (bytes[at + 8 + (s % 4)]! >> (2 * (s >> 2))) & 3;
    return low | (high << 4);
  });
}
