// The quantized NEON GEMM tiles shared by gemm.cpp (any ARMv8-A) and gemm_dotprod.cpp
// (armv8.2-a+dotprod). The two differ only in the integer dot product of one 32-element block,
// so the tiles are templates over a Dot primitive that each file defines:
//
//   struct Dot {
//     using Q4Acc = ...;  // int16x8_t or int32x4_t: one row's partial sums of a Q4_0 block
//     // -8 * (sums of x), from one x block's halves; shared by the rows of a tile.
//     static Q4Acc q4_start(int8x16_t xl, int8x16_t xh);
//     // start + sum n * x for the low / high nibbles n (0..15) of one weight block.
//     static Q4Acc q4_dot(Q4Acc start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh);
//     // Partial sums of w * x for one Q8_0 weight block (halves wl, wh).
//     static int32x4_t q8_dot(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh);
//   };
//
// Only plain ARMv8-A intrinsics appear here; sdot stays in gemm_dotprod.cpp. Everything is in
// an anonymous namespace so that each file instantiates its own copy with its own -march (no
// ODR clash, and nothing built for dotprod can be linked into a caller built for armv8-a).
#pragma once
#include <arm_neon.h>

#include "kernels/common/gemm_tiling.h"
#include "kernels/neon/neon.h"

namespace edgellm::neon_tiles {
namespace {

using common::w_rows;
using common::x_cols;
using common::y_at;

// v * s[lane]; lane is a constant once the tile loops are unrolled.
inline float32x4_t mul_lane(float32x4_t v, float32x4_t s, int lane) {
  switch (lane) {
    case 0: return vmulq_laneq_f32(v, s, 0);
    case 1: return vmulq_laneq_f32(v, s, 1);
    case 2: return vmulq_laneq_f32(v, s, 2);
    default: return vmulq_laneq_f32(v, s, 3);
  }
}

// Lane i = the sum of the 4 lanes of v[i] for i < R, 0 above: a tile's R row sums of one block
// in one vector, so a single convert and FMA (with the row scales in the same lanes) covers them.
template <int R>
inline int32x4_t row_sums(const int32x4_t (&v)[R]) {
  const int32x4_t z = vdupq_n_s32(0);
  if constexpr (R == 4) {
    return vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]));
  } else if constexpr (R == 3) {
    return vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], z));
  } else if constexpr (R == 2) {
    return vpaddq_s32(vpaddq_s32(v[0], v[1]), z);
  } else {
    return vpaddq_s32(vpaddq_s32(v[0], z), z);
  }
}

// The same from int16 lanes: every partial sum of one row's block fits int16 (|sum (n - 8) x|
// <= 32 * 8 * 127 = 32512), so the pairwise adds stay 16-bit until the last, widening one.
template <int R>
inline int32x4_t row_sums(const int16x8_t (&p)[R]) {
  const int16x8_t z = vdupq_n_s16(0);
  if constexpr (R == 4) {
    return vpaddlq_s16(vpaddq_s16(vpaddq_s16(p[0], p[1]), vpaddq_s16(p[2], p[3])));
  } else if constexpr (R == 3) {
    return vpaddlq_s16(vpaddq_s16(vpaddq_s16(p[0], p[1]), vpaddq_s16(p[2], z)));
  } else if constexpr (R == 2) {
    return vpaddlq_s16(vpaddq_s16(vpaddq_s16(p[0], p[1]), z));
  } else {
    return vpaddlq_s16(vpaddq_s16(vpaddq_s16(p[0], z), z));
  }
}

// Stores lanes 0..R-1 of v to y[0], y[step], ...
template <int R>
inline void store_rows(float32x4_t v, float* y, int64_t step) {
  float lanes[4];
  vst1q_f32(lanes, v);
  for (int i = 0; i < R; ++i) y[i * step] = lanes[i];
}

// The f16 scales of block b of up to 4 rows (or columns) as floats in lanes 0..N-1.
template <int N, class Block>
inline float32x4_t scales(const Block* const* rows, int64_t b) {
  static_assert(N >= 1 && N <= 4, "tiles have 1 to 4 rows and columns");
  uint16x4_t h = vld1_dup_u16(&rows[0][b].d);
  if constexpr (N > 1) h = vld1_lane_u16(&rows[1][b].d, h, 1);
  if constexpr (N > 2) h = vld1_lane_u16(&rows[2][b].d, h, 2);
  if constexpr (N > 3) h = vld1_lane_u16(&rows[3][b].d, h, 3);
  return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

// ---- Q4_0 x Q8_0 ---------------------------------------------------------------------------
// Per block: the R weight rows' nibbles are unpacked once and serve all C columns; for each
// column the x-side start value (Dot::q4_start) is shared by the R rows.
template <class Dot>
struct Q4Tile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQK;
    const block_q4_0* w[R];
    const block_q8_0* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    float32x4_t acc[C];  // lane i: row i
    for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
      int8x16_t lo[R], hi[R];
      for (int i = 0; i < R; ++i) {
        const uint8x16_t q = vld1q_u8(w[i][b].qs);
        lo[i] = vreinterpretq_s8_u8(vandq_u8(q, low4));
        hi[i] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
      }
      const float32x4_t dw = scales<R>(w, b);
      const float32x4_t dx = scales<C>(x, b);
      for (int j = 0; j < C; ++j) {
        const int8x16_t xl = vld1q_s8(x[j][b].qs);
        const int8x16_t xh = vld1q_s8(x[j][b].qs + 16);
        const typename Dot::Q4Acc start = Dot::q4_start(xl, xh);
        const float32x4_t s = mul_lane(dw, dx, j);
        typename Dot::Q4Acc p[R];
        for (int i = 0; i < R; ++i) p[i] = Dot::q4_dot(start, lo[i], hi[i], xl, xh);
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(p)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], y_at(a, c + j, r), rstep);
  }
};

// ---- Q8_0 x Q8_0 ---------------------------------------------------------------------------
template <class Dot>
struct Q8Tile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQK;
    const block_q8_0* w[R];
    const block_q8_0* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    float32x4_t acc[C];  // lane i: row i
    for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      int8x16_t wl[R], wh[R];
      for (int i = 0; i < R; ++i) {
        wl[i] = vld1q_s8(w[i][b].qs);
        wh[i] = vld1q_s8(w[i][b].qs + 16);
      }
      const float32x4_t dw = scales<R>(w, b);
      const float32x4_t dx = scales<C>(x, b);
      for (int j = 0; j < C; ++j) {
        const int8x16_t xl = vld1q_s8(x[j][b].qs);
        const int8x16_t xh = vld1q_s8(x[j][b].qs + 16);
        const float32x4_t s = mul_lane(dw, dx, j);
        int32x4_t isum[R];
        for (int i = 0; i < R; ++i) isum[i] = Dot::q8_dot(wl[i], wh[i], xl, xh);
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(isum)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], y_at(a, c + j, r), rstep);
  }
};

// The NEON tiling: decode 4 rows a quarter of the range apart, GEMM 4 adjacent rows x 4 columns.
// Callers run common::drive<Tile, kGemmRows>.
constexpr int kGemmRows = 4;

}  // namespace
}  // namespace edgellm::neon_tiles
