// Random VALID weight rows of every type, made directly from random bytes (every bit pattern of
// the codes and sub-block scales is a valid block) with finite f16 scales of sane magnitude, so
// GEMM tests cover codes a quantizer may never emit (Q8_0's -128, Q6_K scale -128, every
// 6-bit scale and min) and do not depend on the weight quantizers. Plus the activation side:
// f32 -> the activation format a weight type's GEMM takes, with the reference quantizers.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/blocks.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "test.h"

namespace edgellm::test {

// Byte offsets of a block's f16 scale fields: d (the codes' scale) first, then the minimum's
// scale (m of Q4_1 / Q5_1, dmin of Q2_K / Q4_K / Q5_K) when the format has one.
struct ScaleFields {
  int count;
  size_t offset[2];
};

inline ScaleFields scale_fields(DType t) {
  switch (t) {
    case DType::Q4_0: return {1, {offsetof(block_q4_0, d)}};
    case DType::Q4_1: return {2, {offsetof(block_q4_1, d), offsetof(block_q4_1, m)}};
    case DType::Q5_0: return {1, {offsetof(block_q5_0, d)}};
    case DType::Q5_1: return {2, {offsetof(block_q5_1, d), offsetof(block_q5_1, m)}};
    case DType::Q8_0: return {1, {offsetof(block_q8_0, d)}};
    case DType::IQ4_NL: return {1, {offsetof(block_iq4_nl, d)}};
    case DType::Q2_K: return {2, {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)}};
    case DType::Q3_K: return {1, {offsetof(block_q3_K, d)}};
    case DType::Q4_K: return {2, {offsetof(block_q4_K, d), offsetof(block_q4_K, dmin)}};
    case DType::Q5_K: return {2, {offsetof(block_q5_K, d), offsetof(block_q5_K, dmin)}};
    case DType::Q6_K: return {1, {offsetof(block_q6_K, d)}};
    case DType::IQ4_XS: return {1, {offsetof(block_iq4_xs, d)}};
    default: return {0, {}};
  }
}

inline bool is_block_type(DType t) { return dtype_block_elems(t) > 1; }

inline void put_half(uint8_t* p, uint16_t h) { std::memcpy(p, &h, sizeof h); }

// A random finite half of magnitude in [2^lo_exp, 2^hi_exp), either sign.
inline uint16_t random_half(std::mt19937& rng, int lo_exp = -8, int hi_exp = -6) {
  std::uniform_int_distribution<int> e(lo_exp, hi_exp - 1), mant(0, 1023), sign(0, 1);
  const float v = std::ldexp(1.0f + (float)mant(rng) / 1024.0f, e(rng));
  return float_to_half(sign(rng) ? -v : v);
}

// One row of k elements of type t: random bytes with random scales for block types, normal
// values for F32 / F16 / BF16. k must be a multiple of t's block.
inline void random_row(DType t, uint8_t* row, int64_t k, std::mt19937& rng = test::rng()) {
  if (!is_block_type(t)) {
    std::vector<float> x((size_t)k);
    std::normal_distribution<float> nd(0.0f, 0.5f);
    for (float& v : x) v = nd(rng);
    quantize_row(t, x.data(), row, k);  // F32 copy / F16 / BF16 conversion
    return;
  }
  const size_t bytes = dtype_row_bytes(t, k), block = dtype_block_bytes(t);
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t i = 0; i < bytes; ++i) row[i] = (uint8_t)byte(rng);
  const ScaleFields f = scale_fields(t);
  for (size_t b = 0; b < bytes / block; ++b)
    for (int i = 0; i < f.count; ++i) put_half(row + b * block + f.offset[i], random_half(rng));
}

// The minimum part of each weight (m, or -dmin * min), as f32: the row dequantized with every
// block's d set to zero. All zeros for formats without a minimum and for float types. Together
// with w - offset it bounds the rounding of a GEMM that applies the two scales separately.
inline void offset_part(DType t, const uint8_t* row, int64_t k, float* out) {
  const ScaleFields f = scale_fields(t);
  if (f.count < 2) {
    for (int64_t i = 0; i < k; ++i) out[i] = 0.0f;
    return;
  }
  std::vector<uint8_t> copy(row, row + dtype_row_bytes(t, k));
  const size_t block = dtype_block_bytes(t);
  for (size_t b = 0; b < copy.size() / block; ++b) put_half(copy.data() + b * block + f.offset[0], 0);
  dequantize_row(t, copy.data(), out, k);
}

// f32 activations -> the format `act` (F32, Q8_0, Q8_1 or Q8_K) with the reference quantizers.
inline void quantize_activation(DType act, const float* x, uint8_t* out, int64_t k) {
  switch (act) {
    case DType::F32: std::memcpy(out, x, (size_t)k * sizeof(float)); return;
    case DType::Q8_0: quantize_row_q8_0_ref(x, reinterpret_cast<block_q8_0*>(out), k); return;
    case DType::Q8_1: quantize_row_q8_1_ref(x, reinterpret_cast<block_q8_1*>(out), k); return;
    case DType::Q8_K: quantize_row_q8_K_ref(x, reinterpret_cast<block_q8_K*>(out), k); return;
    default: throw std::invalid_argument(std::string("no activation format ") + dtype_name(act));
  }
}

inline size_t activation_row_bytes(DType act, int64_t k) {
  return act == DType::F32 ? (size_t)k * sizeof(float) : dtype_row_bytes(act, k);
}

}  // namespace edgellm::test
