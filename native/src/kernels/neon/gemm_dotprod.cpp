// The quantized GEMV / small GEMM with sdot (ARMv8.2 dotprod: Cortex-A76, Pi 5). This file is
// compiled with -march=armv8.2-a+dotprod and only called when the CPU reports HWCAP_ASIMDDP.
// Same tiles and tiling as gemm.cpp (gemm_tiles.h); only the block dot product differs.
#include <arm_neon.h>

#include "kernels/neon/gemm_tiles.h"
#include "kernels/neon/neon.h"

namespace edgellm::neon_dotprod {

namespace {

// The block dot products with sdot (see gemm_tiles.h for the interface). sdot accumulates into
// int32 lanes, so nibble codes and wider ones take the same path; the offset of unsigned codes
// (Q4_0's 8) is two sdots of x with -kOffset per x block, shared by the R rows, which gives
// sum (n - kOffset) x without unpacking to signed values.
struct SdotDot {
  using Q4Acc = int32x4_t;
  // The start is two sdots per column; subtracting the offset from the codes is two per row:
  // no gain at 4 x 4, a loss for fewer columns, so the offset always stays in the start.
  static constexpr int kOffsetInCodesFromColumns = 1 << 30;
  template <int kOffset>
  static int32x4_t q4_start(int8x16_t xl, int8x16_t xh) {
    const int8x16_t minus_offset = vdupq_n_s8(-kOffset);
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), xl, minus_offset), xh, minus_offset);
  }
  static int32x4_t q4_dot(int32x4_t start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    return vdotq_s32(vdotq_s32(start, lo, xl), hi, xh);
  }
  static int32x4_t q4_dot(int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    return q4_dot(vdupq_n_s32(0), lo, hi, xl, xh);
  }
  template <int kOffset>
  static int32x4_t q8_start(int8x16_t xl, int8x16_t xh) {
    return q4_start<kOffset>(xl, xh);
  }
  static int32x4_t q8_dot(int32x4_t start, int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    return q4_dot(start, wl, wh, xl, xh);
  }
  static int32x4_t q8_dot(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    return q4_dot(vdupq_n_s32(0), wl, wh, xl, xh);
  }
};

using neon_tiles::kGemmRows;
using neon_tiles::Iq4NlCodes;
using neon_tiles::Q4_0Codes;
using neon_tiles::Q4_1Codes;
using neon_tiles::Q5_0Codes;
using neon_tiles::Q5_1Codes;
using neon_tiles::Q8_0Codes;
template <class Codes>
using Tile = neon_tiles::BlockTile<SdotDot, Codes>;

}  // namespace

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q4_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_q4_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q4_1Codes>, kGemmRows>(a, r0, r1); }
void gemm_q5_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q5_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_q5_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q5_1Codes>, kGemmRows>(a, r0, r1); }
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q8_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_iq4_nl(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Iq4NlCodes>, kGemmRows>(a, r0, r1); }

}  // namespace edgellm::neon_dotprod
