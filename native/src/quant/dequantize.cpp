// Reference dequantizers of the formats beyond Q4_0 / Q8_0, computing the same f32 values as
// ggml's dequantize_row_* (same products in the same order: (d * scale) * code - dmin * min).
// A non-finite f16 scale gives non-finite weights; nothing here depends on the values.
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/unpack.h"

namespace edgellm {

namespace {

// Legacy blocks with a minimum: w = code * d + m.
template <class Block, void (*Unpack)(const Block&, int8_t*)>
void dequantize_with_min(const Block* x, float* y, int64_t n) {
  int8_t code[kQK];
  for (int64_t i = 0; i < n / kQK; ++i) {
    Unpack(x[i], code);
    const float d = half_to_float(x[i].d), m = half_to_float(x[i].m);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = (float)code[j] * d + m;
  }
}

// Legacy blocks without one: w = code * d.
template <class Block, void (*Unpack)(const Block&, int8_t*)>
void dequantize_scaled(const Block* x, float* y, int64_t n) {
  int8_t code[kQK];
  for (int64_t i = 0; i < n / kQK; ++i) {
    Unpack(x[i], code);
    const float d = half_to_float(x[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = (float)code[j] * d;
  }
}

template <class Block, void (*Unpack)(const Block&, SuperBlockCodes*)>
void dequantize_super(const Block* x, float* y, int64_t n) {
  SuperBlockCodes u;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    Unpack(x[i], &u);
    float* out = y + i * kQKK;
    for (int j = 0; j < kQKK; ++j) {
      const int s = j / u.sub_len;
      const float dl = u.d * (float)u.scale[s];
      out[j] = u.has_min ? dl * (float)u.code[j] - u.dmin * (float)u.min[s] : dl * (float)u.code[j];
    }
  }
}

}  // namespace

void dequantize_row_q4_1(const block_q4_1* x, float* y, int64_t n) { dequantize_with_min<block_q4_1, unpack_q4_1>(x, y, n); }
void dequantize_row_q5_0(const block_q5_0* x, float* y, int64_t n) { dequantize_scaled<block_q5_0, unpack_q5_0>(x, y, n); }
void dequantize_row_q5_1(const block_q5_1* x, float* y, int64_t n) { dequantize_with_min<block_q5_1, unpack_q5_1>(x, y, n); }
void dequantize_row_iq4_nl(const block_iq4_nl* x, float* y, int64_t n) {
  dequantize_scaled<block_iq4_nl, unpack_iq4_nl>(x, y, n);
}

void dequantize_row_q8_1(const block_q8_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = half_to_float(x[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = (float)x[i].qs[j] * d;
  }
}

void dequantize_row_q8_K(const block_q8_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i)
    for (int j = 0; j < kQKK; ++j) y[i * kQKK + j] = x[i].d * (float)x[i].qs[j];
}

void dequantize_row_q2_K(const block_q2_K* x, float* y, int64_t n) { dequantize_super<block_q2_K, unpack_q2_K>(x, y, n); }
void dequantize_row_q3_K(const block_q3_K* x, float* y, int64_t n) { dequantize_super<block_q3_K, unpack_q3_K>(x, y, n); }
void dequantize_row_q4_K(const block_q4_K* x, float* y, int64_t n) { dequantize_super<block_q4_K, unpack_q4_K>(x, y, n); }
void dequantize_row_q5_K(const block_q5_K* x, float* y, int64_t n) { dequantize_super<block_q5_K, unpack_q5_K>(x, y, n); }
void dequantize_row_q6_K(const block_q6_K* x, float* y, int64_t n) { dequantize_super<block_q6_K, unpack_q6_K>(x, y, n); }
void dequantize_row_iq4_xs(const block_iq4_xs* x, float* y, int64_t n) {
  dequantize_super<block_iq4_xs, unpack_iq4_xs>(x, y, n);
}

}  // namespace edgellm
