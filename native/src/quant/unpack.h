// The integer content of one weight block: its codes in weight order and its sub-block scales,
// decoded from ggml's bit layouts (quant/blocks.h). The reference dequantizers
// (quant/dequantize.cpp) and the reference GEMMs (kernels/reference/gemm_quant.cpp) both read
// blocks through these, so a layout is written down once.
//
// Legacy 32-weight blocks: w_j = d * code_j (+ m for Q4_1 / Q5_1).
// Super-blocks (256 weights): w_j = d * scale[s] * code_j - dmin * min[s], s = j / sub_len;
// formats without a minimum (Q3_K, Q6_K, IQ4_XS) have has_min == false.
// A code is the integer the GEMM multiplies with the activation code: the unsigned stored value
// for the formats with a minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), the offset value (q - 16 for
// Q5_0, q - 4·[high bit clear] for Q3_K, q - 32 for Q6_K) or the code-book value (IQ4_NL,
// IQ4_XS) otherwise.
#pragma once
#include <cstdint>
#include <cstring>

#include "quant/blocks.h"
#include "quant/fp16.h"

namespace edgellm {

// ---- 32-weight blocks ------------------------------------------------------------------------

// Nibble j is weight j (low) and weight j + 16 (high).
inline void unpack_nibbles(const uint8_t* qs, int8_t* code) {
  for (int j = 0; j < kQK / 2; ++j) {
    code[j] = (int8_t)(qs[j] & 0x0F);
    code[j + kQK / 2] = (int8_t)(qs[j] >> 4);
  }
}

// Q5_0 / Q5_1: bit j of the little-endian 32-bit qh is the fifth bit of weight j.
inline void unpack_5bit(const uint8_t* qs, const uint8_t* qh_bytes, int offset, int8_t* code) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  unpack_nibbles(qs, code);
  for (int j = 0; j < kQK; ++j) code[j] = (int8_t)((code[j] | (((qh >> j) & 1) << 4)) - offset);
}

inline void unpack_q4_1(const block_q4_1& b, int8_t* code) { unpack_nibbles(b.qs, code); }
inline void unpack_q5_0(const block_q5_0& b, int8_t* code) { unpack_5bit(b.qs, b.qh, 16, code); }
inline void unpack_q5_1(const block_q5_1& b, int8_t* code) { unpack_5bit(b.qs, b.qh, 0, code); }
inline void unpack_iq4_nl(const block_iq4_nl& b, int8_t* code) {
  unpack_nibbles(b.qs, code);
  for (int j = 0; j < kQK; ++j) code[j] = kValuesIq4nl[code[j]];
}

// ---- 256-weight super-blocks -----------------------------------------------------------------

struct SuperBlockCodes {
  int8_t code[kQKK];
  int16_t scale[16];  // per sub-block
  int16_t min[16];    // per sub-block; 0 when !has_min
  int sub_len;        // weights per sub-block: 16 or 32
  float d, dmin;      // dmin is 0 when !has_min
  bool has_min;
};

// Q2_K / Q3_K low bits: in each 128-weight half (32 bytes of qs), weight 32*s + l (s = 0..3,
// l = 0..31) is bits 2s..2s+1 of qs[half*32 + l].
inline int q2_bits(const uint8_t* qs, int j) {
  const int half = j / 128, s = (j % 128) / 32, l = j % 32;
  return (qs[half * 32 + l] >> (2 * s)) & 3;
}

inline void unpack_q2_K(const block_q2_K& b, SuperBlockCodes* u) {
  u->sub_len = 16;
  u->has_min = true;
  u->d = half_to_float(b.d);
  u->dmin = half_to_float(b.dmin);
  for (int s = 0; s < 16; ++s) {
    u->scale[s] = (int16_t)(b.scales[s] & 0x0F);
    u->min[s] = (int16_t)(b.scales[s] >> 4);
  }
  for (int j = 0; j < kQKK; ++j) u->code[j] = (int8_t)q2_bits(b.qs, j);
}

// Q3_K: 16 six-bit scales stored +32: the low 4 bits of scale s are nibble s / 8 of byte s % 8,
// its high 2 bits are bits 2*(s / 4) of byte 8 + s % 4. The third bit of weight j = 128*half +
// 32*s + l is bit 4*half + s of hmask[l]; when it is clear the code is 4 lower.
inline void unpack_q3_K(const block_q3_K& b, SuperBlockCodes* u) {
  u->sub_len = 16;
  u->has_min = false;
  u->d = half_to_float(b.d);
  u->dmin = 0.0f;
  for (int s = 0; s < 16; ++s) {
    const int lo = (b.scales[s % 8] >> (4 * (s / 8))) & 0x0F;
    const int hi = (b.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
    u->scale[s] = (int16_t)((lo | (hi << 4)) - 32);
    u->min[s] = 0;
  }
  for (int j = 0; j < kQKK; ++j) {
    const int half = j / 128, s = (j % 128) / 32, l = j % 32;
    const bool high = (b.hmask[l] >> (4 * half + s)) & 1;
    u->code[j] = (int8_t)(q2_bits(b.qs, j) - (high ? 0 : 4));
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins (get_scale_min_k4). In each
// 64-weight chunk c (32 bytes of qs), weight 64c + l is the low nibble of qs[32c + l] and weight
// 64c + 32 + l the high nibble; Q5_K's fifth bit of those is bit 2c / 2c + 1 of qh[l].
inline void unpack_k4_scales(const uint8_t* scales, SuperBlockCodes* u) {
  u->sub_len = 32;
  u->has_min = true;
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, m;
    get_scale_min_k4(s, scales, &sc, &m);
    u->scale[s] = sc;
    u->min[s] = m;
  }
}

inline void unpack_q4_K(const block_q4_K& b, SuperBlockCodes* u) {
  unpack_k4_scales(b.scales, u);
  u->d = half_to_float(b.d);
  u->dmin = half_to_float(b.dmin);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      u->code[64 * c + l] = (int8_t)(b.qs[32 * c + l] & 0x0F);
      u->code[64 * c + 32 + l] = (int8_t)(b.qs[32 * c + l] >> 4);
    }
}

inline void unpack_q5_K(const block_q5_K& b, SuperBlockCodes* u) {
  unpack_k4_scales(b.scales, u);
  u->d = half_to_float(b.d);
  u->dmin = half_to_float(b.dmin);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const int h0 = (b.qh[l] >> (2 * c)) & 1, h1 = (b.qh[l] >> (2 * c + 1)) & 1;
      u->code[64 * c + l] = (int8_t)((b.qs[32 * c + l] & 0x0F) | (h0 << 4));
      u->code[64 * c + 32 + l] = (int8_t)((b.qs[32 * c + l] >> 4) | (h1 << 4));
    }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales. In each 128-weight half (64 bytes of ql, 32 of
// qh), weight 128*half + 32*g + l (g = 0..3, l = 0..31) has its low 4 bits in ql[64*half + l +
// 32*(g % 2)] (low nibble for g < 2, high for g >= 2) and its high 2 bits at bits 2g of
// qh[32*half + l]; the code is that 6-bit value - 32.
inline void unpack_q6_K(const block_q6_K& b, SuperBlockCodes* u) {
  u->sub_len = 16;
  u->has_min = false;
  u->d = half_to_float(b.d);
  u->dmin = 0.0f;
  for (int s = 0; s < 16; ++s) {
    u->scale[s] = b.scales[s];
    u->min[s] = 0;
  }
  for (int half = 0; half < 2; ++half)
    for (int g = 0; g < 4; ++g)
      for (int l = 0; l < 32; ++l) {
        const uint8_t ql = b.ql[64 * half + l + 32 * (g % 2)];
        const int lo = g < 2 ? (ql & 0x0F) : (ql >> 4);
        const int hi = (b.qh[32 * half + l] >> (2 * g)) & 3;
        u->code[128 * half + 32 * g + l] = (int8_t)((lo | (hi << 4)) - 32);
      }
}

// IQ4_XS: 8 sub-blocks of 32, each laid out as an IQ4_NL block's nibbles; scale s is
// (nibble s % 2 of scales_l[s / 2]) | (bits 2s..2s+1 of scales_h) << 4, stored +32.
inline void unpack_iq4_xs(const block_iq4_xs& b, SuperBlockCodes* u) {
  u->sub_len = 32;
  u->has_min = false;
  u->d = half_to_float(b.d);
  u->dmin = 0.0f;
  for (int s = 0; s < 8; ++s) {
    const int lo = (b.scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
    const int hi = (b.scales_h >> (2 * s)) & 3;
    u->scale[s] = (int16_t)((lo | (hi << 4)) - 32);
    u->min[s] = 0;
    unpack_nibbles(b.qs + 16 * s, u->code + 32 * s);
    for (int l = 0; l < 32; ++l) u->code[32 * s + l] = kValuesIq4nl[u->code[32 * s + l]];
  }
}

}  // namespace edgellm
