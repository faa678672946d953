// Reference quantizers of the non-linear 4-bit formats IQ4_NL and IQ4_XS (codes index the
// kValuesIq4nl code book). Byte-identical with what llama.cpp's quantizer writes without an
// importance matrix: ggml's quantize_iq4_nl / quantize_iq4_xs (ggml_quantize_chunk) with no
// weights, i.e. quantize_row_iq4_nl_impl with 7 tries each side. For IQ4_XS that is also
// ggml's quantize_row_iq4_xs_ref; ggml's quantize_row_iq4_nl_ref (its type-traits from_float_ref)
// differs: it skips the scale search, and llama.cpp does not use it to write models.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/rounding.h"

namespace edgellm {

namespace {

// Scale search tries on each side of the code book's end value (ggml's ntry for model files).
constexpr int kIq4Tries = 7;

// The scale of one 32-weight block, weighted by x^2: starts from the value of largest magnitude
// on the code book's first entry (-127), then tries (v0 + t)/max for t = -7..7 and keeps the
// least-squares scale of the codes that maximises sumqx^2/sumq2. 0 for an all-zero block.
float fit_iq4_block_scale(const float* xb) {
  float weight[32];
  for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
  float amax;
  const float max = signed_absmax(xb, 32, &amax);
  if (amax < kGroupMaxEps) return 0;
  const int8_t* values = kValuesIq4nl;
  float d = -max / values[0];
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float q = values[nearest_code_index(16, values, id * xb[j])];
    const float w = weight[j];
    sumqx += w * q * xb[j];
    sumq2 += w * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int t = -kIq4Tries; t <= kIq4Tries; ++t) {
    id = (t + values[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = values[nearest_code_index(16, values, id * xb[j])];
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// Codes of `count` weights for the scale d (0 maps every weight through 0, as ggml does).
void iq4_codes(const float* x, int count, float d, uint8_t* L) {
  const float id = d != 0.0f ? 1 / d : 0.f;
  for (int j = 0; j < count; ++j) L[j] = (uint8_t)nearest_code_index(16, kValuesIq4nl, id * x[j]);
}

// Per 32 weights, 16 bytes: weight j in the low nibble, weight j+16 in the high one.
void pack_iq4(const uint8_t* L, int count, uint8_t* qs) {
  for (int i = 0; i < count / 32; ++i)
    for (int j = 0; j < 16; ++j) qs[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

}  // namespace

void quantize_row_iq4_nl_ref(const float* x, block_iq4_nl* y, int64_t n) {
  const int64_t nb = n / kQK;
  uint8_t L[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = fit_iq4_block_scale(x);
    y[i].d = float_to_half(d);
    iq4_codes(x, kQK, d, L);
    pack_iq4(L, kQK, y[i].qs);
  }
}

// 8 blocks of 32 fitted as IQ4_NL's, then their scales quantized to 6 bits against
// d = max_scale/-32 (the block scale of largest magnitude lands on -32), stored +32: low nibble
// in scales_l (two per byte), high 2 bits in scales_h (bits 2*ib). Codes are re-derived from
// the quantized block scale (d * l with the unrounded d, as ggml).
void quantize_row_iq4_xs_ref(const float* x, block_iq4_xs* y, int64_t n) {
  const int64_t nb = n / kQKK;
  float scales[kQKK / 32];
  uint8_t L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < kQKK / 32; ++ib) {
      scales[ib] = fit_iq4_block_scale(x + 32 * ib);
      const float abs_d = std::fabs(scales[ib]);
      if (abs_d > amax_scale) {
        amax_scale = abs_d;
        max_scale = scales[ib];
      }
    }
    const float d = -max_scale / 32;
    y[i].d = float_to_half(d);
    y[i].scales_h = 0;
    const float id = d != 0.0f ? 1 / d : 0.f;
    for (int ib = 0; ib < kQKK / 32; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = std::max(-32, std::min(31, l));
      iq4_codes(x + 32 * ib, 32, d * l, L + 32 * ib);
      l += 32;
      const uint8_t l_low = (uint8_t)(l & 0xF), l_high = (uint8_t)(l >> 4);
      if (ib % 2 == 0) y[i].scales_l[ib / 2] = l_low;
      else y[i].scales_l[ib / 2] |= (uint8_t)(l_low << 4);
      y[i].scales_h |= (uint16_t)(l_high << (2 * (ib % 8)));
    }
    pack_iq4(L, kQKK, y[i].qs);
  }
}

}  // namespace edgellm
