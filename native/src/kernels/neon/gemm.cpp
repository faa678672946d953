// NEON GEMV / small GEMM for any ARMv8-A (Cortex-A72 and up), the Q8_0 and Q8_1 activation
// quantizers and the f16 row conversions. The sdot versions of the quantized GEMMs are in gemm_dotprod.cpp.
//
// Every GEMM works on a register tile of R rows x C columns and walks the k dimension once per
// tile: the R weight rows (a few KiB) come from DRAM on the first column tile and from L1/L2 for
// the others, and the quantized x columns (<= 64 x k bytes) stay in L2. ncols == 1 (decode) uses
// 4 rows per tile so one x block load and its per-block prep serve four weight rows; the 4 rows
// are a quarter of the range apart so that each is its own sequential stream (see common::drive
// in common/gemm_tiling.h). The quantized tiles are in gemm_tiles.h, shared with gemm_dotprod.cpp.
#include <arm_neon.h>

#include "kernels/neon/gemm_tiles.h"
#include "kernels/neon/neon.h"
#include "quant/fp16.h"
#include "quant/repack.h"

namespace edgellm::neon {

namespace {

using neon_tiles::kGemmRows;
using neon_tiles::Iq4NlCodes;
using neon_tiles::Q4_0Codes;
using neon_tiles::Q4_1Codes;
using neon_tiles::Q5_0Codes;
using neon_tiles::Q5_1Codes;
using neon_tiles::Q8_0Codes;

// The block dot products with widening multiply-accumulates (see gemm_tiles.h for the interface).
struct MlalDot {
  // Nibble codes n (0..15) times x with widening multiply-accumulates into int16 lanes, four
  // products per lane (|.| <= 4 * 15 * 127 = 7620), started from -kOffset * (pairwise sums of
  // x) (|.| <= 4 * 8 * 127 for Q4_0's 8), so each lane ends as sum (n - kOffset) x. The x-side
  // start value is shared by the R rows.
  using Q4Acc = int16x8_t;
  // The tile subtracts the offset from the codes (Q4_0: 4 SIMD instructions per row, 3 of them
  // shifts) instead of building each column's start (pairwise add, accumulate, multiply by
  // -kOffset, one copy per row), on the SIMD pipes the smull/smlal already load. It pays from
  // one column (llvm-mca cortex-a72, cycles per block: GEMV 6.92 -> 6.80, 4x4 GEMM 5.23 -> 4.76).
  static constexpr int kOffsetInCodesFromColumns = 1;
  template <int kOffset>
  static int16x8_t q4_start(int8x16_t xl, int8x16_t xh) {
    return vmulq_n_s16(vpadalq_s8(vpaddlq_s8(xl), xh), -kOffset);
  }
  static int16x8_t q4_dot(int16x8_t start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    int16x8_t p = vmlal_s8(start, vget_low_s8(lo), vget_low_s8(xl));
    p = vmlal_high_s8(p, lo, xl);
    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(xh));
    return vmlal_high_s8(p, hi, xh);
  }
  static int16x8_t q4_dot(int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    int16x8_t p = vmull_s8(vget_low_s8(lo), vget_low_s8(xl));
    p = vmlal_high_s8(p, lo, xl);
    p = vmlal_s8(p, vget_low_s8(hi), vget_low_s8(xh));
    return vmlal_high_s8(p, hi, xh);
  }
  // Any codes: two products per int16 lane (|.| <= 2 * 128 * 127 < 32768), then pairwise-widened
  // to int32 onto the start value (-kOffset * sums of x, already int32).
  template <int kOffset>
  static int32x4_t q8_start(int8x16_t xl, int8x16_t xh) {
    return vmulq_n_s32(vpaddlq_s16(vpadalq_s8(vpaddlq_s8(xl), xh)), -kOffset);
  }
  static int32x4_t q8_dot(int32x4_t start, int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(wl), vget_low_s8(xl)), wl, xl);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(wh), vget_low_s8(xh)), wh, xh);
    return vpadalq_s16(vpadalq_s16(start, p0), p1);
  }
  static int32x4_t q8_dot(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh) {
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(wl), vget_low_s8(xl)), wl, xl);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(wh), vget_low_s8(xh)), wh, xh);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
  }
};

template <class Codes>
using Tile = neon_tiles::BlockTile<MlalDot, Codes>;

// ---- float weights (common::FloatTile) ----------------------------------------------------
struct Vec4 {
  using V = float32x4_t;
  static constexpr int kLanes = 4;
  static float32x4_t zero() { return vdupq_n_f32(0.0f); }
  static float32x4_t load(const float* p) { return vld1q_f32(p); }
  static float32x4_t fma(float32x4_t acc, float32x4_t w, float32x4_t x) { return vfmaq_f32(acc, w, x); }
  static float hsum(float32x4_t v) { return vaddvq_f32(v); }
};
struct LoadF32 {
  using T = float;
  static float32x4_t load(const T* p) { return vld1q_f32(p); }
  static float load1(const T* p) { return *p; }
};
struct LoadF16 {
  using T = uint16_t;
  static float32x4_t load(const T* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float load1(const T* p) { return half_to_float(*p); }
};
struct LoadBF16 {
  using T = uint16_t;
  static float32x4_t load(const T* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static float load1(const T* p) { return bf16_to_float(*p); }
};
template <class L>
using FloatTile = common::FloatTile<Vec4, L>;

}  // namespace

// ---- activations -> Q8_0 / Q8_1 -------------------------------------------------------------
// One block of 32 floats -> its codes qs and scale d (returned as f32), bit-exact with
// quantize_row_q8_0_ref / quantize_row_q8_1_ref: maxnm ignores NaN like fmax, d and id are the
// same scalar expressions, x * id is a plain multiply, and fcvtas rounds half away from zero.
// *sum (when not null) gets the sum of the 32 codes (|.| <= 32 * 127, exact in int16 lanes).
static float quantize_block_q8(const float* xb, int8_t* qs, int32_t* sum) {
  float32x4_t v[8];
  float32x4_t amax = vdupq_n_f32(0.0f);
  for (int j = 0; j < 8; ++j) {
    v[j] = vld1q_f32(xb + 4 * j);
    amax = vmaxnmq_f32(vabsq_f32(v[j]), amax);
  }
  const float d = vmaxnmvq_f32(amax) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int16x8_t q16[4];
  for (int j = 0; j < 4; ++j) {
    const int32x4_t q0 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j], id));
    const int32x4_t q1 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j + 1], id));
    q16[j] = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
  }
  vst1q_s8(qs, vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1])));
  vst1q_s8(qs + 16, vcombine_s8(vqmovn_s16(q16[2]), vqmovn_s16(q16[3])));
  if (sum) *sum = vaddlvq_s16(vaddq_s16(vaddq_s16(q16[0], q16[1]), vaddq_s16(q16[2], q16[3])));
  return d;
}

void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) y[i].d = float_to_half(quantize_block_q8(x + i * kQK, y[i].qs, nullptr));
}

// s = d * sum(qs) from the f32 d (not its f16 rounding), as the reference computes it.
void quantize_row_q8_1(const float* x, block_q8_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    int32_t sum;
    const float d = quantize_block_q8(x + i * kQK, y[i].qs, &sum);
    y[i].d = float_to_half(d);
    y[i].s = float_to_half((float)sum * d);
  }
}

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q4_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_q4_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q4_1Codes>, kGemmRows>(a, r0, r1); }
void gemm_q5_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q5_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_q5_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q5_1Codes>, kGemmRows>(a, r0, r1); }
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Q8_0Codes>, kGemmRows>(a, r0, r1); }
void gemm_iq4_nl(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Tile<Iq4NlCodes>, kGemmRows>(a, r0, r1); }
void gemm_f16(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadF16>, kGemmRows>(a, r0, r1); }
void gemm_bf16(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadBF16>, kGemmRows>(a, r0, r1); }
void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadF32>, kGemmRows>(a, r0, r1); }

// ---- f16 rows ------------------------------------------------------------------------------
// fcvtn rounds to nearest even (FPCR default) like float_to_half; only NaN differs (fcvtn keeps
// payload bits, the scalar conversion returns the canonical quiet NaN 0x7E00 with the sign).
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  const uint16x8_t abs_mask = vdupq_n_u16(0x7FFF);
  const uint16x8_t inf = vdupq_n_u16(0x7C00);
  const uint16x8_t qnan = vdupq_n_u16(0x7E00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t f = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
    uint16x8_t h = vreinterpretq_u16_f16(f);
    const uint16x8_t is_nan = vcgtq_u16(vandq_u16(h, abs_mask), inf);
    h = vbslq_u16(is_nan, vorrq_u16(vbicq_u16(h, abs_mask), qnan), h);
    vst1q_u16(y + i, h);
  }
  for (; i < n; ++i) y[i] = float_to_half(x[i]);
}

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
    vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
    vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
  }
  for (; i < n; ++i) y[i] = half_to_float(x[i]);
}

void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q4_0_x4_via_rows(gemm_q4_0, a, r0, r1); }
void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q4_k_x4_via_rows(gemm_q4_k, a, r0, r1); }
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q6_k_x4_via_rows(gemm_q6_k, a, r0, r1); }

}  // namespace edgellm::neon
