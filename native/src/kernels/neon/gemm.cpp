// NEON GEMV / small GEMM for any ARMv8-A (Cortex-A72 and up), the Q8_0 activation quantizer and
// the f16 row conversions. The sdot versions of the quantized GEMMs are in gemm_dotprod.cpp.
//
// Every GEMM works on a register tile of R rows x C columns and walks the k dimension once per
// tile: the R weight rows (a few KiB) come from DRAM on the first column tile and from L1/L2 for
// the others, and the quantized x columns (<= 64 x k bytes) stay in L2. ncols == 1 (decode) uses
// 4 rows per tile so one x block load and its per-block prep serve four weight rows; the 4 rows
// are a quarter of the range apart so that each is its own sequential stream (see drive).
#include <arm_neon.h>

#include "kernels/neon/neon.h"
#include "quant/fp16.h"

namespace edgellm::neon {

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
const float* x_col_f32(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const float*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}

// ---- Q4_0 x Q8_0 ---------------------------------------------------------------------------
// Nibbles n (0..15) times x with widening multiply-accumulates into int16 lanes, started from
// -8 * (pairwise sums of x), so each lane ends as sum (n - 8) x over 4 products (|.| <= 4064).
// The x-side start value is shared by the R rows.
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
        const int16x8_t start = vmulq_n_s16(vpadalq_s8(vpaddlq_s8(xl), xh), -8);
        const float32x4_t s = mul_lane(dw, dx, j);
        int16x8_t p[R];
        for (int i = 0; i < R; ++i) {
          p[i] = vmlal_s8(start, vget_low_s8(lo[i]), vget_low_s8(xl));
          p[i] = vmlal_high_s8(p[i], lo[i], xl);
          p[i] = vmlal_s8(p[i], vget_low_s8(hi[i]), vget_low_s8(xh));
          p[i] = vmlal_high_s8(p[i], hi[i], xh);
        }
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(p)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], a.y + (c + j) * a.y_col_stride + r, rstep);
  }
};

// ---- Q8_0 x Q8_0 ---------------------------------------------------------------------------
// Two products per int16 lane (|.| <= 2 * 128 * 127 < 32768), then pairwise-widened to int32.
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
        for (int i = 0; i < R; ++i) {
          const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(wl[i]), vget_low_s8(xl)), wl[i], xl);
          const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(wh[i]), vget_low_s8(xh)), wh[i], xh);
          isum[i] = vpadalq_s16(vpaddlq_s16(p0), p1);
        }
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(isum)), s);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], a.y + (c + j) * a.y_col_stride + r, rstep);
  }
};

// ---- float weights -------------------------------------------------------------------------
struct LoadF32 {
  using T = float;
  static float32x4_t load4(const T* p) { return vld1q_f32(p); }
  static float load1(const T* p) { return *p; }
};
struct LoadF16 {
  using T = uint16_t;
  static float32x4_t load4(const T* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
  static float load1(const T* p) { return half_to_float(*p); }
};
struct LoadBF16 {
  using T = uint16_t;
  static float32x4_t load4(const T* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  static float load1(const T* p) { return bf16_to_float(*p); }
};

template <class L>
struct FloatTile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    using T = typename L::T;
    const T* w[R];
    const float* x[C];
    for (int i = 0; i < R; ++i) w[i] = reinterpret_cast<const T*>(a.w + (r + i * rstep) * a.w_row_bytes);
    for (int j = 0; j < C; ++j) x[j] = x_col_f32(a, c + j);
    float32x4_t acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = vdupq_n_f32(0.0f);
    int64_t e = 0;
    for (; e + 4 <= a.k; e += 4) {
      float32x4_t wv[R];
      for (int i = 0; i < R; ++i) wv[i] = L::load4(w[i] + e);
      for (int j = 0; j < C; ++j) {
        const float32x4_t xv = vld1q_f32(x[j] + e);
        for (int i = 0; i < R; ++i) acc[i][j] = vfmaq_f32(acc[i][j], wv[i], xv);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) {
        float sum = vaddvq_f32(acc[i][j]);
        for (int64_t t = e; t < a.k; ++t) sum += L::load1(w[i] + t) * x[j][t];
        a.y[(c + j) * a.y_col_stride + r + i * rstep] = sum;
      }
  }
};

}  // namespace

// ---- activations -> Q8_0 -------------------------------------------------------------------
// Bit-exact with quantize_row_q8_0_ref: maxnm ignores NaN like fmax, d and id are the same
// scalar expressions, x * id is a plain multiply, and fcvtas rounds half away from zero.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQK;
    float32x4_t v[8];
    float32x4_t amax = vdupq_n_f32(0.0f);
    for (int j = 0; j < 8; ++j) {
      v[j] = vld1q_f32(xb + 4 * j);
      amax = vmaxnmq_f32(vabsq_f32(v[j]), amax);
    }
    const float d = vmaxnmvq_f32(amax) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    int16x8_t q16[4];
    for (int j = 0; j < 4; ++j) {
      const int32x4_t q0 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j], id));
      const int32x4_t q1 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * j + 1], id));
      q16[j] = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
    }
    vst1q_s8(y[i].qs, vcombine_s8(vqmovn_s16(q16[0]), vqmovn_s16(q16[1])));
    vst1q_s8(y[i].qs + 16, vcombine_s8(vqmovn_s16(q16[2]), vqmovn_s16(q16[3])));
  }
}

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q4Tile>(a, r0, r1); }
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { drive<Q8Tile>(a, r0, r1); }
void gemm_f16(const GemmArgs& a, int64_t r0, int64_t r1) { drive<FloatTile<LoadF16>>(a, r0, r1); }
void gemm_bf16(const GemmArgs& a, int64_t r0, int64_t r1) { drive<FloatTile<LoadBF16>>(a, r0, r1); }
void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) { drive<FloatTile<LoadF32>>(a, r0, r1); }

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

}  // namespace edgellm::neon
