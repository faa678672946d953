// NEON GEMV / small GEMM of the weight types with Q8_K activations (Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K, IQ4_XS) for any ARMv8-A (Cortex-A72, Pi 4), and the Q8_K activation quantizer. The tiles
// and the formats' decoders are in gemm_k_tiles.h (shared with gemm_k_dotprod.cpp, which has the
// sdot versions of these GEMMs); the tiling is common::drive's, as for Q4_0 (see gemm.cpp).
//
// No pre-register-allocation scheduling in this file: GCC's first scheduling pass interleaves
// the decode tile's 4 rows and spills the widening products to the stack; without it the Q6_K
// GEMV loop (4 rows x 256 weights) drops from 793 to 553 instructions, 92 to 74 cycles per 256
// weights on llvm-mca's cortex-a72 (scripts/arm-model.mjs). The sdot file keeps the pass (it
// helps there). GCC's pass (clang has no such pragma and schedules differently).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-schedule-insns")
#endif
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/neon/gemm_k_tiles.h"
#include "kernels/neon/neon.h"

namespace edgellm::neon {

namespace {

// The sub-block dot products with widening multiply-accumulates (see gemm_k_tiles.h): code *
// activation products are summed in int16 lanes as far as the codes' range allows, then widened
// into int32 while being multiplied by the sub-block scale (smlal by element).
struct MlalKDot {
  template <int NSub>
  struct Scales {
    int16x8_t v[NSub / 8];
  };
  template <int NSub>
  static Scales<NSub> scales(const int16x8_t (&sc)[NSub / 8]) {
    Scales<NSub> s;
    for (int i = 0; i < NSub / 8; ++i) s.v[i] = sc[i];
    return s;
  }
  // Products of one int8 lane pair: |code| <= kMaxCode, |x| <= 128.
  template <int kMaxCode, int kProducts>
  static constexpr bool fits_int16 = kMaxCode * 128 * kProducts <= 32767;

  // acc + sc * (the int16 partial sums p), widening.
  template <int S, class Sc>
  static int32x4_t scale_widen(int32x4_t acc, int16x8_t p, const Sc& sc) {
    acc = vmlal_laneq_s16(acc, vget_low_s16(p), sc.v[S / 8], S % 8);
    return vmlal_high_laneq_s16(acc, p, sc.v[S / 8], S % 8);
  }
  // Two products per int16 lane: w[0..15] . x[0..15].
  static int16x8_t pairs(int8x16_t w, int8x16_t x) {
    return vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x);
  }

  template <int N, int S, int kMaxCode, class Sc>
  static int32x4_t sub(int32x4_t acc, const int8x16_t* w, const int8_t* x, const Sc& sc) {
    static_assert(fits_int16<kMaxCode, 2>, "two products per int16 lane must fit");
    const int8x16_t x0 = vld1q_s8(x);
    int16x8_t p = pairs(w[0], x0);
    if constexpr (N == 2) {
      const int8x16_t x1 = vld1q_s8(x + 16);
      if constexpr (fits_int16<kMaxCode, 4>) {
        // Q4_K, Q5_K: four products per lane (|.| <= 31 * 128 * 4 = 15872).
        p = vmlal_s8(p, vget_low_s8(w[1]), vget_low_s8(x1));
        p = vmlal_high_s8(p, w[1], x1);
      } else {
        // IQ4_XS: codes up to 127, so each 16 widens on its own.
        acc = scale_widen<S>(acc, pairs(w[1], x1), sc);
      }
    }
    return scale_widen<S>(acc, p, sc);
  }
};

template <class F>
using KTile = neon_tiles::KTile<F, MlalKDot>;
constexpr int kKGemmRows = 4;

}  // namespace

// ---- activations -> Q8_K ---------------------------------------------------------------------
// Bit-exact with quantize_row_q8_K_ref: the scale is -127 / (the signed value of the first
// element of largest magnitude), codes are x * iscale rounded half to even (fcvtns; ggml's
// nearest_int) and capped at 127, bsums are the sums of each 16 codes, d = 1 / iscale. An
// all-zero block (amax == 0) is all zeros. maxnm ignores NaN like the reference's `>`.
void quantize_row_q8_k(const float* x, block_q8_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQKK;
    float32x4_t amax4 = vdupq_n_f32(0.0f);
    for (int j = 0; j < kQKK; j += 4) amax4 = vmaxnmq_f32(amax4, vabsq_f32(vld1q_f32(xb + j)));
    const float amax = vmaxnmvq_f32(amax4);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof(block_q8_K));
      continue;
    }
    int first = 0;
    while (std::fabs(xb[first]) != amax) ++first;
    const float iscale = -127.0f / xb[first];
    const int32x4_t cap = vdupq_n_s32(127);
    for (int g = 0; g < kQKK / 16; ++g) {
      int16x8_t q16[2];
      for (int h = 0; h < 2; ++h) {
        const float* p = xb + 16 * g + 8 * h;
        const int32x4_t q0 = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p), iscale)), cap);
        const int32x4_t q1 = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p + 4), iscale)), cap);
        q16[h] = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
      }
      const int8x16_t q = vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1]));
      vst1q_s8(y[i].qs + 16 * g, q);
      y[i].bsums[g] = (int16_t)vaddlvq_s8(q);
    }
    y[i].d = 1.0f / iscale;
  }
}

void gemm_q2_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Q2KFormat>, kKGemmRows>(a, r0, r1);
}
void gemm_q3_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Q3KFormat>, kKGemmRows>(a, r0, r1);
}
void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Q4KFormat>, kKGemmRows>(a, r0, r1);
}
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Q5KFormat>, kKGemmRows>(a, r0, r1);
}
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Q6KFormat>, kKGemmRows>(a, r0, r1);
}
void gemm_iq4_xs(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive<KTile<neon_tiles::Iq4XsFormat>, kKGemmRows>(a, r0, r1);
}

}  // namespace edgellm::neon
