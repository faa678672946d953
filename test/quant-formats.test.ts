// The weight formats' exact dequantizers (src/engine/quant.ts): blocks packed here from their
// fields (codes, sub-block scales and minimums) by the layout of ggml-common.h decode to the
// formula's values; a few hand-computed weights pin the bit positions; and random blocks agree
// with ggml's own dequantizers (node-llama-cpp's libggml-base through the oracle tool).
import t from 'tap';
import type { GgufTensorType } from '../src/engine/gguf.js';
import {
  IQ4_VALUES, TYPE_LAYOUT, blockElems, decodeTensor, dequantizeExact, f16ToF32, f32ToF16, typeBytes,
} from '../src/engine/quant.js';
import { rng } from './fixtures/random-model.js';
import { ggmlDequantize, requireOracle } from './fixtures/oracle.js';

const NEW_TYPES: GgufTensorType[] = ['Q4_1', 'Q5_0', 'Q5_1', 'IQ4_NL', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'IQ4_XS'];

/** A uniform integer in [0, n) from a seeded stream. */
function ints(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return (((x ^ (x >>> 14)) >>> 0) % n);
  };
}

/** An f16 scale's bits and its value. */
function half(v: number): [number, number] {
  const h = f32ToF16(v);
  return [h, f16ToF32(h)];
}

/** A block's bytes and the weights it stands for. */
interface Packed {
  bytes: Uint8Array;
  want: number[];
}

/** Packs one block of `type` with random fields, from ggml-common.h's field order and bit layout. */
function packBlock(type: GgufTensorType, r: (n: number) => number): Packed {
  const { blockBytes } = TYPE_LAYOUT[type];
  const b = new Uint8Array(blockBytes);
  const v = new DataView(b.buffer);
  const want: number[] = [];
  const [dh, d] = half(0.01 + r(1000) / 3000);
  const [mh, m] = half(-(r(1000) / 5000));
  switch (type) {
    case 'Q4_1': case 'Q5_0': case 'Q5_1': case 'IQ4_NL': {
      const hasMin = type === 'Q4_1' || type === 'Q5_1';
      const bits = type === 'Q5_0' || type === 'Q5_1' ? 5 : 4;
      v.setUint16(0, dh, true);
      if (hasMin) v.setUint16(2, mh, true);
      const q = Array.from({ length: 32 }, () => r(1 << bits));
      const qsAt = (hasMin ? 4 : 2) + (bits === 5 ? 4 : 0);
      let qh = 0;
      q.forEach((c, j) => {
        b[qsAt + (j % 16)]! |= (c & 15) << (j < 16 ? 0 : 4);
        if (c & 16) qh |= 1 << j;  // bit j of qh is bit 4 of weight j, for all 32 weights
      });
      if (bits === 5) v.setUint32(hasMin ? 4 : 2, qh >>> 0, true);
      for (const c of q) want.push(type === 'IQ4_NL' ? d * IQ4_VALUES[c]! : hasMin ? d * c + m : d * (c - 16));
      break;
    }
    case 'Q2_K': case 'Q3_K': {
      // 16 sub-blocks of 16; weight i = 128*half + 32*j + l sits at bits 2j of qs[32*half + l].
      const q3 = type === 'Q3_K';
      const sc = Array.from({ length: 16 }, () => r(q3 ? 64 : 16));
      const mn = Array.from({ length: 16 }, () => r(16));
      const q = Array.from({ length: 256 }, () => r(q3 ? 8 : 4));
      const qsAt = q3 ? 32 : 16;
      q.forEach((c, i) => {
        const half = i >> 7, j = (i >> 5) & 3, l = i & 31;
        b[qsAt + 32 * half + l]! |= (c & 3) << (2 * j);
        if (q3 && c & 4) b[l]! |= 1 << (4 * half + j);  // hmask: the third bit, set = no -4
      });
      if (q3) {
        sc.forEach((s, k) => {
          b[96 + (k % 8)]! |= (s & 15) << (k < 8 ? 0 : 4);
          b[96 + 8 + (k % 4)]! |= (s >> 4) << (2 * (k >> 2));
        });
        v.setUint16(108, dh, true);
        q.forEach((c, i) => want.push(d * (sc[i >> 4]! - 32) * ((c & 3) - (c & 4 ? 0 : 4))));
      } else {
        sc.forEach((s, k) => (b[k] = s | (mn[k]! << 4)));
        const [dmh, dmin] = half(0.005 + r(100) / 4000);
        v.setUint16(80, dh, true);
        v.setUint16(82, dmh, true);
        q.forEach((c, i) => want.push(d * sc[i >> 4]! * c - dmin * mn[i >> 4]!));
      }
      break;
    }
    case 'Q4_K': case 'Q5_K': {
      const q5 = type === 'Q5_K';
      const sc = Array.from({ length: 8 }, () => r(64));
      const mn = Array.from({ length: 8 }, () => r(64));
      const [dmh, dmin] = half(0.002 + r(100) / 8000);
      v.setUint16(0, dh, true);
      v.setUint16(2, dmh, true);
      for (let s = 0; s < 8; s++) {
        // s < 4: bytes s and s+4 hold scale and min; s >= 4: low nibbles in byte s+4, top bits on bytes s-4 and s.
        if (s < 4) {
          b[4 + s]! |= sc[s]!;
          b[4 + s + 4]! |= mn[s]!;
        } else {
          b[4 + s + 4]! |= (sc[s]! & 15) | ((mn[s]! & 15) << 4);
          b[4 + s - 4]! |= (sc[s]! >> 4) << 6;
          b[4 + s]! |= (mn[s]! >> 4) << 6;
        }
      }
      const q = Array.from({ length: 256 }, () => r(q5 ? 32 : 16));
      const qsAt = q5 ? 48 : 16;
      q.forEach((c, i) => {
        const chunk = i >> 6, hi = (i >> 5) & 1, l = i & 31;
        b[qsAt + 32 * chunk + l]! |= (c & 15) << (hi ? 4 : 0);
        if (q5 && c & 16) b[16 + l]! |= 1 << (2 * chunk + hi);
      });
      q.forEach((c, i) => want.push(d * sc[i >> 5]! * c - dmin * mn[i >> 5]!));
      break;
    }
    case 'Q6_K': {
      const sc = Array.from({ length: 16 }, () => r(256) - 128);
      const q = Array.from({ length: 256 }, () => r(64));
      q.forEach((c, i) => {
        const half = i >> 7, k = (i >> 5) & 3, l = i & 31;
        b[64 * half + l + 32 * (k & 1)]! |= (c & 15) << (k < 2 ? 0 : 4);
        b[128 + 32 * half + l]! |= (c >> 4) << (2 * k);
      });
      sc.forEach((s, k) => v.setInt8(192 + k, s));
      v.setUint16(208, dh, true);
      q.forEach((c, i) => want.push(d * sc[i >> 4]! * (c - 32)));
      break;
    }
    case 'IQ4_XS': {
      const ls = Array.from({ length: 8 }, () => r(64));
      v.setUint16(0, dh, true);
      let sh = 0;
      ls.forEach((s, k) => {
        b[4 + (k >> 1)]! |= (s & 15) << (4 * (k & 1));
        sh |= (s >> 4) << (2 * k);
      });
      v.setUint16(2, sh, true);
      const q = Array.from({ length: 256 }, () => r(16));
      q.forEach((c, i) => {
        const s = i >> 5, j = i & 31;
        b[8 + 16 * s + (j & 15)]! |= c << (j < 16 ? 0 : 4);
      });
      q.forEach((c, i) => want.push(d * (ls[i >> 5]! - 32) * IQ4_VALUES[c]!));
      break;
    }
    default:
      throw new Error(`no packer for ${type}`);
  }
  return { bytes: b, want };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

t.test('block sizes and bytes are ggml\'s', async (t) => {
  const want: Record<string, [number, number]> = {
    Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24], IQ4_NL: [32, 18],
    Q2_K: [256, 84], Q3_K: [256, 110], Q4_K: [256, 144], Q5_K: [256, 176], Q6_K: [256, 210], IQ4_XS: [256, 136],
  };
  for (const type of NEW_TYPES) {
    t.same([blockElems(type), typeBytes(type, blockElems(type))], want[type], type);
  }
  t.equal(typeBytes('Q4_K', 256 * 3), 3 * 144);
});

t.test('blocks packed from their fields decode to d*sc*q - dmin*m exactly, several blocks in a row', async (t) => {
  for (const type of NEW_TYPES) {
    const r = ints(11 + type.length);
    const blocks = Array.from({ length: 3 }, () => packBlock(type, r));
    const bytes = concat(blocks.map((p) => p.bytes));
    const n = 3 * blockElems(type);
    const got = dequantizeExact(type, bytes, n);
    const want = blocks.flatMap((p) => p.want);
    let wrong = 0;
    for (let i = 0; i < n; i++) if (got[i] !== want[i]) wrong++;
    t.equal(wrong, 0, `${type}: every weight of 3 blocks`);
    t.same(decodeTensor(type, bytes, n), Float32Array.from(want), `${type}: decodeTensor is the exact value in f32`);
  }
});

t.test('hand-computed weights pin the bit positions', async (t) => {
  // Q5_0: d = 2, qs[3] = 0xA5 (weight 3 low nibble 5, weight 19 high nibble 10), qh bit 19 set:
  // w3 = 2 * (5 - 16) = -22, w19 = 2 * ((10 | 16) - 16) = 20.
  const q50 = new Uint8Array(22);
  new DataView(q50.buffer).setUint16(0, 0x4000, true);
  new DataView(q50.buffer).setUint32(2, 1 << 19, true);
  q50[6 + 3] = 0xa5;
  const w50 = dequantizeExact('Q5_0', q50, 32);
  t.same([w50[3], w50[19], w50[0]], [-22, 20, -32]);

  // Q4_K: d = 1, dmin = 0.5; sub-block 0: scale 3, min 2 (bytes 4 and 8); sub-block 5: scale
  // 0x25 = 37 (low nibble 5 in byte 13, top bits 0b10 on byte 5), min 0x13 = 19 (nibble 3 in
  // byte 13, top bits 0b01 on byte 9). qs[0] = 0x07: w0 = 3*7 - 0.5*2 = 20. Weight 160 is
  // chunk 2's high nibbles (sub-block 5) from qs[64]: 0x90 -> q 9: w160 = 37*9 - 0.5*19 = 323.5.
  const q4k = new Uint8Array(144);
  const v = new DataView(q4k.buffer);
  v.setUint16(0, 0x3c00, true);
  v.setUint16(2, 0x3800, true);
  q4k[4] = 3;
  q4k[8] = 2;
  q4k[4 + 9] = 0x35;
  q4k[4 + 1] = 0b10 << 6;
  q4k[4 + 5] = 0b01 << 6;
  q4k[16] = 0x07;
  q4k[16 + 64] = 0x90;
  const w4k = dequantizeExact('Q4_K', q4k, 256);
  t.same([w4k[0], w4k[160]], [20, 323.5]);

  // Q6_K: d = 1; weight 200 is half 1, k = 2, l = 8: low nibble = high nibble of ql[64 + 8],
  // top bits = bits 4..5 of qh[128 + 32 + 8]; scale index 8 + 4 + 0 = 12.
  const q6k = new Uint8Array(210);
  new DataView(q6k.buffer).setUint16(208, 0x3c00, true);
  q6k[64 + 8] = 0xb0;            // low 4 bits 11
  q6k[128 + 32 + 8] = 0b10 << 4;   // top 2 bits 2: q = 11 + 32 = 43
  new DataView(q6k.buffer).setInt8(192 + 12, -3);
  t.equal(dequantizeExact('Q6_K', q6k, 256)[200], -3 * (43 - 32));

  // IQ4_XS: d = 0.5, sub-block 3: scale 0b01_0111 = 23 (nibble 7 high half of scales_l[1], bits
  // 6..7 of scales_h = 01); weight 3*32 + 17 = high nibble of qs[3*16 + 1] = 15 -> 113.
  const xs = new Uint8Array(136);
  new DataView(xs.buffer).setUint16(0, 0x3800, true);
  new DataView(xs.buffer).setUint16(2, 0b01 << 6, true);
  xs[4 + 1] = 0x70;
  xs[8 + 48 + 1] = 0xf0;
  t.equal(dequantizeExact('IQ4_XS', xs, 256)[3 * 32 + 17], 0.5 * (23 - 32) * 113);
});

t.test('a row that is not whole blocks, or too few bytes, is a RangeError', async (t) => {
  t.throws(() => dequantizeExact('Q4_K', new Uint8Array(144), 128), RangeError);
  t.throws(() => dequantizeExact('Q4_1', new Uint8Array(19), 32), RangeError);
});

t.test('random blocks agree with ggml\'s dequantizers (libggml-base to_float)', async (t) => {
  if (!requireOracle(t, 'ggml dequantizer comparison')) return;
  const normal = rng(5);
  for (const type of NEW_TYPES) {
    const r = ints(99 + type.length);
    const nBlocks = 64;
    const n = nBlocks * blockElems(type);
    // Random bytes everywhere, then every f16 field set to a finite scale of either sign.
    const bytes = Uint8Array.from({ length: nBlocks * TYPE_LAYOUT[type].blockBytes }, () => r(256));
    const v = new DataView(bytes.buffer);
    const bb = TYPE_LAYOUT[type].blockBytes;
    const halves: Record<string, number[]> = {
      Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], IQ4_NL: [0], Q2_K: [80, 82], Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208], IQ4_XS: [0],
    };
    for (let i = 0; i < nBlocks; i++) for (const at of halves[type]!) v.setUint16(i * bb + at, f32ToF16(normal() * 0.05), true);
    const exact = dequantizeExact(type, bytes, n);
    const ggml = ggmlDequantize(type, bytes, n);
    // ggml rounds d*sc and dmin*m to f32, then the result: a few f32 ulps of the terms' size.
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const tol = 2 ** -22 * (Math.abs(exact[i]!) + 1e-3) + 1e-9;
      worst = Math.max(worst, Math.abs(ggml[i]! - exact[i]!) / tol);
    }
    t.ok(worst <= 1, `${type}: ${n} weights within f32 rounding of ggml's (worst ${worst.toFixed(3)} of the tolerance)`);
  }
});
