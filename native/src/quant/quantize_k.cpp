// Reference quantizers of the K-quants (Q2_K .. Q6_K), byte-identical with ggml's
// quantize_row_q{2,3,4,5,6}_K_ref, which is what llama.cpp's quantizer writes without an
// importance matrix. Each super-block of 256 weights is quantized in two passes:
//   1. per sub-block, a search for the scale (and minimum) that minimises a weighted error;
//   2. the sub-block scales themselves are quantized to 4/6/8 bits against the super-block's
//      f16 d (and dmin), and the weights are re-quantized with the scales as stored, so the
//      codes fit what a dequantizer will reconstruct.
// Every float expression keeps ggml's operand order (the build has -ffp-contract=off): a
// different order changes a rounding somewhere and a code with it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/rounding.h"

namespace edgellm {

namespace {

// Codes 0..nmax with an offset `min` <= 0: x ~ scale*L + min. Starts from the min/max fit and
// tries nstep+1 other scales, (nmax + rmin + rdelta*is)/(max - min), each with the weighted
// least-squares scale and minimum for its codes; keeps the one of least weighted error (absolute
// error when use_mad, squared otherwise). Returns the scale, sets *neg_min = -min (>= 0).
// (ggml's make_qkx2_quants.)
float fit_scale_min(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* neg_min,
                    uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *neg_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = (uint8_t)std::max(0, std::min(nmax, l));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *neg_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = (uint8_t)l;
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// Signed codes -nmax..nmax-1 (stored +nmax) weighted by x^2: the value of largest magnitude maps
// to -nmax, then 18 nearby scales -(nmax + 0.1*is)/max are tried and the one maximising
// sumlx^2/suml2 kept. Returns the least-squares scale of the chosen codes; all-zero input gives
// codes 0 and scale 0. (ggml's make_qx_quants with rmse_type 1 and no weights.)
float fit_symmetric_scale(int n, int nmax, const float* x, int8_t* L) {
  float amax;
  const float max = signed_absmax(x, n, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = (int8_t)(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = (int8_t)(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's sub-block fit: signed codes -nmax..nmax-1 weighted by x^2, starting from the largest
// magnitude at -nmax, then up to 5 sweeps that move single codes when that raises
// sumlx^2/suml2. Codes are returned +nmax; all-zero input gives codes 0 (not +nmax) and scale 0.
// (ggml's make_q3_quants with do_rmse.)
float fit_q3_scale(int n, int nmax, const float* x, int8_t* L) {
  float amax;
  const float max = signed_absmax(x, n, &amax);
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = (int8_t)l;
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = (int8_t)new_l;
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// 2-bit codes of 256 weights, 4 to a byte: for each 128-weight half, byte l holds weights
// l, l+32, l+64, l+96 at bits 0, 2, 4, 6 (Q2_K's and Q3_K's low bits).
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQKK; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

// Q4_K / Q5_K: 8 sub-blocks of 32 fitted with an offset, weights av|x| + |x_i| (av = RMS of the
// sub-block); scales and minima to 6 bits each against d = max_scale/63, dmin = max_min/63;
// then codes 0..nmax re-derived from the stored scales. `L` gets the 256 codes.
void quantize_super_block_k(const float* x, int nmax, float rmin, float rdelta, int nstep, uint16_t* d_out,
                            uint16_t* dmin_out, uint8_t* packed_scales, uint8_t* L) {
  float scales[kQKK / 32], mins[kQKK / 32];
  float weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;  // scales are positive once the minimum is taken out
  for (int j = 0; j < kQKK / 32; ++j) {
    const float* xb = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xb[l] * xb[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xb[l]);
    scales[j] = fit_scale_min(32, nmax, xb, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kQKK / 32; ++j) {
    // ggml stores the rounded value in a uint8_t before capping it at 63.
    uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
    uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      packed_scales[j] = ls;
      packed_scales[j + 4] = lm;
    } else {
      packed_scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
      packed_scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
      packed_scales[j - 0] |= (uint8_t)((lm >> 4) << 6);
    }
  }
  *d_out = float_to_half(max_scale / 63.f);
  *dmin_out = float_to_half(max_min / 63.f);
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, packed_scales, &sc, &m);
    const float d = half_to_float(*d_out) * sc;
    if (d == 0.0f) continue;  // codes stay those of the fit
    const float dm = half_to_float(*dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = (uint8_t)std::max(0, std::min(nmax, l));
    }
  }
}

}  // namespace

// 16 sub-blocks of 16, codes 0..3 with an offset, fitted by absolute error weighted by |x|;
// 4-bit scales and minima against d = max_scale/15, dmin = max_min/15.
void quantize_row_q2_K_ref(const float* x, block_q2_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  const float q4scale = 15.f;
  uint8_t L[kQKK], Laux[16];
  float weights[16], mins[kQKK / 16], scales[kQKK / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < kQKK / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < kQKK / 16; ++j) y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
      y[i].d = float_to_half(max_scale / q4scale);
    } else {
      for (int j = 0; j < kQKK / 16; ++j) y[i].scales[j] = 0;
      y[i].d = float_to_half(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < kQKK / 16; ++j) y[i].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
      y[i].dmin = float_to_half(max_min / q4scale);
    } else {
      y[i].dmin = float_to_half(0.f);
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = half_to_float(y[i].d) * (y[i].scales[j] & 0xF);
      if (d == 0.0f) continue;
      const float dm = half_to_float(y[i].dmin) * (y[i].scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int((x[16 * j + ii] + dm) / d);
        L[16 * j + ii] = (uint8_t)std::max(0, std::min(3, l));
      }
    }
    pack_2bit(L, y[i].qs);
  }
}

// 16 sub-blocks of 16, signed codes -4..3; 6-bit signed sub-block scales against
// d = max_scale/-32 (the scale of largest magnitude maps to -32), packed low nibbles in bytes
// 0..7 and the 2 high bits in bytes 8..11; the third code bit goes to hmask.
void quantize_row_q3_K_ref(const float* x, block_q3_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  int8_t L[kQKK];
  float scales[kQKK / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < kQKK / 16; ++j) {
      scales[j] = fit_q3_scale(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    if (max_scale != 0.0f) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < kQKK / 16; ++j) {
        int8_t l = (int8_t)nearest_int(iscale * scales[j]);
        l = (int8_t)(std::max(-32, std::min(31, (int)l)) + 32);
        if (j < 8) y[i].scales[j] = l & 0xF;
        else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
        l = (int8_t)(l >> 4);
        y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
      }
      y[i].d = float_to_half(1 / iscale);
    } else {
      y[i].d = float_to_half(0.f);
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      int sc = j < 8 ? (y[i].scales[j] & 0xF) : (y[i].scales[j - 8] >> 4);
      sc = (sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float d = half_to_float(y[i].d) * sc;
      if (d == 0.0f) continue;  // codes stay those of the fit
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int(x[16 * j + ii] / d);
        L[16 * j + ii] = (int8_t)(std::max(-4, std::min(3, l)) + 4);
      }
    }
    // Bit 2 of code j goes to hmask[j % 32], bit j / 32; the low two bits are packed as Q2_K's.
    std::memset(y[i].hmask, 0, sizeof(y[i].hmask));
    uint8_t low[kQKK];
    for (int j = 0; j < kQKK; ++j) {
      int q = L[j];
      if (q > 3) {
        y[i].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
        q -= 4;
      }
      low[j] = (uint8_t)q;
    }
    pack_2bit(low, y[i].qs);
  }
}

// 8 sub-blocks of 32, codes 0..15 with an offset (fit: 21 scales from (15 - 1)/(max - min) in
// steps of 0.1, squared error).
void quantize_row_q4_K_ref(const float* x, block_q4_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  uint8_t L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    quantize_super_block_k(x, 15, -1.f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
    // Per 64 weights: 32 bytes, weight l in the low nibble, weight l+32 in the high one.
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQKK; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
  }
}

// As Q4_K with codes 0..31 (fit: 16 scales from (31 - 0.5)/(max - min) in steps of 0.1); bit 4
// of the code of weight 64*p + l (+32) goes to qh[l] bit 2p (2p+1).
void quantize_row_q5_K_ref(const float* x, block_q5_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  uint8_t L[kQKK];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    quantize_super_block_k(x, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, kQKK / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int p = 0; p < kQKK; p += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[p + j], l2 = L[p + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = (uint8_t)(l1 | (l2 << 4));
      }
    }
  }
}

// 16 sub-blocks of 16, signed codes -32..31 (stored +32); int8 sub-block scales against
// d = max_scale/-128. A super-block whose scales are all ~0 is stored as zeros.
void quantize_row_q6_K_ref(const float* x, block_q6_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  int8_t L[kQKK];
  float scales[kQKK / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < kQKK / 16; ++ib) {
      const float scale = fit_symmetric_scale(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(block_q6_K));
      y[i].d = float_to_half(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = float_to_half(1 / iscale);
    for (int ib = 0; ib < kQKK / 16; ++ib) y[i].scales[ib] = (int8_t)std::min(127, nearest_int(iscale * scales[ib]));
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = half_to_float(y[i].d) * y[i].scales[j];
      if (d == 0.0f) continue;  // codes stay those of the fit
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int(x[16 * j + ii] / d);
        L[16 * j + ii] = (int8_t)(std::max(-32, std::min(31, l)) + 32);
      }
    }
    // Per 128 weights: ql holds the low nibbles of weights l and l+64 (bytes 0..31) and of
    // l+32 and l+96 (bytes 32..63); qh[l] their 2 high bits at bits 0, 2, 4, 6.
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t c0 = (uint8_t)L[j + l], c1 = (uint8_t)L[j + l + 32], c2 = (uint8_t)L[j + l + 64],
                      c3 = (uint8_t)L[j + l + 96];
        ql[l] = (uint8_t)((c0 & 0xF) | ((c2 & 0xF) << 4));
        ql[l + 32] = (uint8_t)((c1 & 0xF) | ((c3 & 0xF) << 4));
        qh[l] = (uint8_t)((c0 >> 4) | ((c1 >> 4) << 2) | ((c2 >> 4) << 4) | ((c3 >> 4) << 6));
      }
    }
  }
}

}  // namespace edgellm
