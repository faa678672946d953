// The quantized GEMV / small GEMM with sdot (ARMv8.2 dotprod: Cortex-A76, Pi 5). This file is
// compiled with -march=armv8.2-a+dotprod and only called when the CPU reports HWCAP_ASIMDDP.
// Same tiles and tiling as gemm.cpp (gemm_tiles.h); only the block dot product differs.
#include <arm_neon.h>

#include "kernels/neon/gemm_tiles.h"
#include "kernels/neon/neon.h"

namespace edgellm::neon_dotprod {

namespace {

// The block dot products with sdot (see gemm_tiles.h for the interface).
struct SdotDot {
  // sdot of the nibbles n (0..15) with x, accumulated onto -8 * sum(x) (two sdots with -8 per
  // x block, shared by the R rows), gives sum (n - 8) x without unpacking to signed values.
  using Q4Acc = int32x4_t;
  static int32x4_t q4_start(int8x16_t xl, int8x16_t xh) {
    const int8x16_t minus8 = vdupq_n_s8(-8);
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), xl, minus8), xh, minus8);
  }
  static int32x4_t q4_dot(int32x4_t start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    return vdotq_s32(vdotq_s32(start, lo, xl), hi, xh);
  }
  static int32x4_t q8_dot(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), wl, xl), wh, xh);
  }
};

using neon_tiles::kGemmRows;
using Q4Tile = neon_tiles::Q4Tile<SdotDot>;
using Q8Tile = neon_tiles::Q8Tile<SdotDot>;

}  // namespace

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Q4Tile, kGemmRows>(a, r0, r1); }
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Q8Tile, kGemmRows>(a, r0, r1); }

}  // namespace edgellm::neon_dotprod
