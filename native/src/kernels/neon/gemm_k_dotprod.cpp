// The Q8_K-activation GEMMs (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) with sdot (ARMv8.2 dotprod:
// Cortex-A76, Pi 5). Compiled with -march=armv8.2-a+dotprod, called only when the CPU reports
// HWCAP_ASIMDDP. Same tiles, decoders and tiling as gemm_k.cpp (gemm_k_tiles.h); only the
// sub-block dot product differs.
#include <arm_neon.h>

#include "kernels/neon/gemm_k_tiles.h"
#include "kernels/neon/neon.h"

namespace edgellm::neon_dotprod {

namespace {

// sdot gives 4 int32 lanes per 16 code x activation products; the sub-block's sum is scaled
// with one mla by element (the scales widened to int32 once per row and super-block).
struct SdotKDot {
  template <int NSub>
  struct Scales {
    int32x4_t v[NSub / 4];
  };
  template <int NSub>
  static Scales<NSub> scales(const int16x8_t (&sc)[NSub / 8]) {
    Scales<NSub> s;
    for (int i = 0; i < NSub / 8; ++i) {
      s.v[2 * i] = vmovl_s16(vget_low_s16(sc[i]));
      s.v[2 * i + 1] = vmovl_high_s16(sc[i]);
    }
    return s;
  }
  template <int N, int S, int kMaxCode, class Sc>
  static int32x4_t sub(int32x4_t acc, const int8x16_t* w, const int8_t* x, const Sc& sc) {
    int32x4_t d = vdotq_s32(vdupq_n_s32(0), w[0], vld1q_s8(x));
    if constexpr (N == 2) d = vdotq_s32(d, w[1], vld1q_s8(x + 16));
    return vmlaq_laneq_s32(acc, d, sc.v[S / 4], S % 4);
  }
};

template <class F>
using KTile = neon_tiles::KTile<F, SdotKDot>;
constexpr int kKGemmRows = 4;

}  // namespace

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

}  // namespace edgellm::neon_dotprod
