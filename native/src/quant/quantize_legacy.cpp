// Reference quantizers of the 32-weight formats with a minimum or a fifth bit: Q4_1, Q5_0, Q5_1.
// Byte-identical with ggml's quantize_row_q4_1_ref / q5_0_ref / q5_1_ref (what llama.cpp's
// quantizer writes without an importance matrix): same float operations in the same order.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "quant/fp16.h"
#include "quant/rounding.h"
#include "quant/quant.h"

namespace edgellm {

namespace {

// The smallest and largest of a block's 32 values.
void block_min_max(const float* x, float* min, float* max) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *min = lo;
  *max = hi;
}

// Bit 4 of each 5-bit code, weight j at bit j, stored little-endian as ggml's uint32 qh.
void store_high_bits(uint32_t qh, uint8_t out[4]) {
  for (int b = 0; b < 4; ++b) out[b] = (uint8_t)(qh >> (8 * b));
}

}  // namespace

// w = d*q + m with m the block's minimum and d = (max - min) / 15; q = (x - m)/d rounded half up
// (the +0.5 then truncation), capped at 15.
void quantize_row_q4_1_ref(const float* x, block_q4_1* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / 15;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    y[i].m = float_to_half(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQK / 2 + j] - min) * id;
      const uint8_t q0 = (uint8_t)std::min(15, (int)(int8_t)(x0 + 0.5f));
      const uint8_t q1 = (uint8_t)std::min(15, (int)(int8_t)(x1 + 0.5f));
      y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

// As Q4_0 with 5 bits: the signed value of largest magnitude maps to code 0 (d = it / -16),
// q = x/d + 16.5 truncated, capped at 31.
void quantize_row_q5_0_ref(const float* x, block_q5_0* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax;
    const float max = signed_absmax(x, kQK, &amax);
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[kQK / 2 + j] * id;
      const uint8_t q0 = (uint8_t)std::min(31, (int)(int8_t)(x0 + 16.5f));
      const uint8_t q1 = (uint8_t)std::min(31, (int)(int8_t)(x1 + 16.5f));
      y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
      qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    store_high_bits(qh, y[i].qh);
  }
}

// As Q4_1 with 5 bits: d = (max - min) / 31, q = (x - m)/d + 0.5 truncated (no cap: the
// largest value lands on 31 at most).
void quantize_row_q5_1_ref(const float* x, block_q5_1* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min, max;
    block_min_max(x, &min, &max);
    const float d = (max - min) / 31;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    y[i].m = float_to_half(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQK / 2 + j] - min) * id;
      const uint8_t q0 = (uint8_t)(x0 + 0.5f);
      const uint8_t q1 = (uint8_t)(x1 + 0.5f);
      y[i].qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
      qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    store_high_bits(qh, y[i].qh);
  }
}

}  // namespace edgellm
