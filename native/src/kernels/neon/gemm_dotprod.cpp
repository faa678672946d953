// The quantized GEMV / small GEMM with sdot (ARMv8.2 dotprod: Cortex-A76, Pi 5). This file is
// compiled with -march=armv8.2-a+dotprod and only called when the CPU reports HWCAP_ASIMDDP.
// Same tiling as gemm.cpp: 4 rows per decode tile, 4 rows x 4 columns per GEMM tile.
#include <arm_neon.h>

#include "kernels/neon/neon.h"

namespace edgellm::neon_dotprod {

namespace {

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

// Stores lanes 0..R-1 of v to y[0], y[step], ...
template <int R>
inline void store_rows(float32x4_t v, float* y, int64_t step) {
  float lanes[4];
  vst1q_f32(lanes, v);
  for (int i = 0; i < R; ++i) y[i * step] = lanes[i];
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

// Runs Tile::run<R, C>(a, r, c, rstep) (rows r + i * rstep, i < R; columns c..c+C-1) over rows
// [r0, r1) and all columns: decode (ncols == 1) takes 4 rows a quarter of the range apart, a
// GEMM takes 4 adjacent rows x 4 columns; the edges use smaller tiles.
template <class Tile, int R>
inline void run_columns(const GemmArgs& a, int64_t r) {
  int64_t c = 0;
  for (; c + 4 <= a.ncols; c += 4) Tile::template run<R, 4>(a, r, c);
  switch (a.ncols - c) {
    case 1: Tile::template run<R, 1>(a, r, c); break;
    case 2: Tile::template run<R, 2>(a, r, c); break;
    case 3: Tile::template run<R, 3>(a, r, c); break;
    default: break;
  }
}

template <class Tile>
void drive(const GemmArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  if (a.ncols == 1) {
    // Rows i, i + q, i + 2q, i + 3q of the range together: each of the 4 streams then runs
    // through contiguous memory from row to row (4 adjacent rows would interleave 4 streams
    // in the same few pages, which stream prefetchers track poorly).
    const int64_t q = (r1 - r0) / 4;
    for (int64_t i = 0; i < q; ++i) Tile::template run<4, 1>(a, r0 + i, 0, q);
    for (r = r0 + 4 * q; r < r1; ++r) Tile::template run<1, 1>(a, r, 0);
    return;
  }
  for (; r + 4 <= r1; r += 4) run_columns<Tile, 4>(a, r);
  for (; r < r1; ++r) run_columns<Tile, 1>(a, r);
}

const block_q8_0* x_col_q8(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const block_q8_0*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}
// ---- Q4_0 x Q8_0 ---------------------------------------------------------------------------
// sdot of the nibbles n (0..15) with x, accumulated onto -8 * sum(x) (two sdots with -8 per x
// block, shared by the R rows), gives sum (n - 8) x without unpacking to signed values.
struct Q4Tile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQK;
    const block_q4_0* w[R];
    const block_q8_0* x[C];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const block_q4_0*>(a.w + (r + i * rstep) * a.w_row_bytes);
    for (int j = 0; j < C; ++j) x[j] = x_col_q8(a, c + j);
    float32x4_t acc[C];  // lane i: row i
    for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    const int8x16_t minus8 = vdupq_n_s8(-8);
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
        const int32x4_t start = vdotq_s32(vdotq_s32(vdupq_n_s32(0), xl, minus8), xh, minus8);
        const float32x4_t s = mul_lane(dw, dx, j);
        int32x4_t isum[R];
        for (int i = 0; i < R; ++i) isum[i] = vdotq_s32(vdotq_s32(start, lo[i], xl), hi[i], xh);
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(isum)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], a.y + (c + j) * a.y_col_stride + r, rstep);
  }
};

// ---- Q8_0 x Q8_0 ---------------------------------------------------------------------------
struct Q8Tile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQK;
    const block_q8_0* w[R];
    const block_q8_0* x[C];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const block_q8_0*>(a.w + (r + i * rstep) * a.w_row_bytes);
    for (int j = 0; j < C; ++j) x[j] = x_col_q8(a, c + j);
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
        for (int i = 0; i < R; ++i) isum[i] = vdotq_s32(vdotq_s32(vdupq_n_s32(0), wl[i], xl), wh[i], xh);
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(isum)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], a.y + (c + j) * a.y_col_stride + r, rstep);
  }
};

}  // namespace

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q4Tile>(a, r0, r1); }
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q8Tile>(a, r0, r1); }

}  // namespace edgellm::neon_dotprod
