// The Q4_0, Q4_K and Q6_K GEMV / GEMM over weights repacked at load to Q4_0_X4 / Q4_K_X4 / Q6_K_X4
// (quant/repack.h), with sdot by activation lane (ARMv8.2 dotprod: Cortex-A76, Pi 5). Compiled
// with -march=armv8.2-a+dotprod.
//
// Q4_0_X4:
// One 4-row group's block is 4 vectors of 4 rows x 4 weights; a shift and an and turn each into
// two vectors of signed codes x 16 (no offset term), and 8 sdots by lane of the column's two
// activation vectors give the 4 rows' block sums in the 4 lanes of one int32 vector: no
// horizontal adds, no per-row scale gathering (the 4 scales are one 8-byte load). Per block and
// column that leaves 8 sdots, a fixed-point convert (which also divides by the 16), the
// scale product and one FMA. The unpacked codes serve all the tile's columns, and a group's
// weights (nb x 72 bytes, 9 KiB at k = 4096) stay in L1 for the next column tile.
// The activation scales are converted to f32 once per call (they serve every group).
#include <arm_neon.h>

#include <algorithm>
#include <vector>

#include "kernels/common/gemm_tiling.h"
#include "kernels/neon/gemm_tiles.h"
#include "kernels/neon/neon.h"
#include "quant/repack.h"

namespace edgellm::neon_dotprod {

namespace {

// d of every activation block of the call as f32, [column][block]; reused between calls.
const float* activation_scales(const GemmArgs& a) {
  thread_local std::vector<float> scales;
  const int64_t nb = a.k / kQK;
  scales.resize((size_t)(a.ncols * nb));
  for (int64_t c = 0; c < a.ncols; ++c) {
    const block_q8_0* x = common::x_col<block_q8_0>(a, c);
    float* s = scales.data() + c * nb;
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
      uint16x4_t h = vld1_dup_u16(&x[b].d);
      h = vld1_lane_u16(&x[b + 1].d, h, 1);
      h = vld1_lane_u16(&x[b + 2].d, h, 2);
      h = vld1_lane_u16(&x[b + 3].d, h, 3);
      vst1q_f32(s + b, vcvt_f32_f16(vreinterpret_f16_u16(h)));
    }
    for (; b < nb; ++b) s[b] = vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_dup_u16(&x[b].d))), 0);
  }
  return scales.data();
}

// A zero int32x4 loaded from memory: sdot overwrites its accumulator, so each column's chain
// needs a fresh zero per block, and a register copy (mov / movi) of one costs a SIMD-pipe slot
// of the 12 the column spends per block; a load takes a load-pipe slot instead (two of those per
// cycle on a Cortex-A76 / Neoverse N1, here mostly idle). asm volatile: the compiler would
// otherwise share one load between the chains and copy it again.
alignas(16) constexpr int32_t kZeros[4] = {0, 0, 0, 0};
inline int32x4_t zero_from_memory() {
  int32x4_t z;
  asm volatile("ldr %q0, %1" : "=w"(z) : "m"(*reinterpret_cast<const int32x4_t*>(kZeros)));
  return z;
}

// acc[j] (lane i: row i of the group) = the group's 4 rows . column j, for C columns. Column j's
// activation blocks start x_col_bytes * j after x0 and its scales nb * j floats after dx0: two
// running pointers instead of 2C (C = 8 ran out of general registers and spilled).
template <int C>
inline void group_tile(const block_q4_0x4* w, int64_t nb, const uint8_t* x0, size_t x_col_bytes, const float* dx0,
                       float32x4_t (&acc)[C]) {
  for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
  const int8x16_t high = vdupq_n_s8((int8_t)0xF0);
  for (int64_t b = 0; b < nb; ++b) {
    EDGELLM_MCA_TILE("x4block-begin", 4, C);
    const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w[b].d)));
    int8x16_t lo[4], hi[4];  // lo[v]: weights 4v..4v+3 of the 4 rows, hi[v]: 16 + 4v..
    for (int v = 0; v < 4; ++v) {
      const int8x16_t q = vld1q_s8(reinterpret_cast<const int8_t*>(w[b].qs) + 16 * v);
      lo[v] = vshlq_n_s8(q, 4);
      hi[v] = vandq_s8(q, high);
    }
    const uint8_t* xb = x0 + b * sizeof(block_q8_0);
    const float* db = dx0 + b;
#pragma GCC unroll 16
    for (int j = 0; j < C; ++j, xb += x_col_bytes, db += nb) {
      const block_q8_0& x = *reinterpret_cast<const block_q8_0*>(xb);
      const int8x16_t xl = vld1q_s8(x.qs);
      const int8x16_t xh = vld1q_s8(x.qs + 16);
      int32x4_t s = vdotq_laneq_s32(zero_from_memory(), lo[0], xl, 0);
      s = vdotq_laneq_s32(s, lo[1], xl, 1);
      s = vdotq_laneq_s32(s, lo[2], xl, 2);
      s = vdotq_laneq_s32(s, lo[3], xl, 3);
      s = vdotq_laneq_s32(s, hi[0], xh, 0);
      s = vdotq_laneq_s32(s, hi[1], xh, 1);
      s = vdotq_laneq_s32(s, hi[2], xh, 2);
      s = vdotq_laneq_s32(s, hi[3], xh, 3);
      // s is 16x the integer block sum (|.| <= 16 * 32512 < 2^24): the convert is exact.
      acc[j] = vfmaq_f32(acc[j], vcvtq_n_f32_s32(s, 4), vmulq_n_f32(dw, *db));
    }
    EDGELLM_MCA_TILE("x4block-end", 4, C);
  }
}

// Group g (rows 4g..4g+3) x columns c..c+C-1, stored to y rows 4g.. of a (y_col_stride >= 4).
template <int C>
void run_group(const GemmArgs& a, int64_t g, int64_t c, const float* dx_all, float* y, int64_t y_stride) {
  const int64_t nb = a.k / kQK;
  float32x4_t acc[C];
  group_tile<C>(reinterpret_cast<const block_q4_0x4*>(a.w + g * 4 * a.w_row_bytes), nb,
                static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes, a.x_col_bytes, dx_all + c * nb, acc);
  for (int j = 0; j < C; ++j) vst1q_f32(y + (c + j) * y_stride, acc[j]);
}

// Every column of group g into y (column j's 4 rows at y + j * y_stride): tiles of 16 columns
// (prompt), then one of 8, then one tile of the 1..7 left (decode, small batches).
void run_columns(const GemmArgs& a, int64_t g, const float* dx, float* y, int64_t y_stride) {
  int64_t c = 0;
  for (; c + 16 <= a.ncols; c += 16) run_group<16>(a, g, c, dx, y, y_stride);
  for (; c + 8 <= a.ncols; c += 8) run_group<8>(a, g, c, dx, y, y_stride);
  switch (a.ncols - c) {
    case 1: run_group<1>(a, g, c, dx, y, y_stride); break;
    case 2: run_group<2>(a, g, c, dx, y, y_stride); break;
    case 3: run_group<3>(a, g, c, dx, y, y_stride); break;
    case 4: run_group<4>(a, g, c, dx, y, y_stride); break;
    case 5: run_group<5>(a, g, c, dx, y, y_stride); break;
    case 6: run_group<6>(a, g, c, dx, y, y_stride); break;
    case 7: run_group<7>(a, g, c, dx, y, y_stride); break;
    default: break;
  }
}

// Rows [r0, r1) of group g only: the whole group into a scratch tile, then the wanted rows.
void run_partial_group(const GemmArgs& a, int64_t g, int64_t r0, int64_t r1, const float* dx) {
  float tile[kMaxGemmCols * 4];
  run_columns(a, g, dx, tile, 4);
  for (int64_t c = 0; c < a.ncols; ++c)
    for (int64_t r = r0; r < r1; ++r) *common::y_at(a, c, r) = tile[c * 4 + (r - g * 4)];
}

// tbl indices that widen one sub-block's scales to int32 lanes: for sub-block j of a half,
// lane i takes byte 4i + j of the half's scale bytes (sm & 0x3F), and index 255 zeros the rest.
alignas(16) constexpr uint8_t kScaleLanes[4][16] = {
    {0, 255, 255, 255, 4, 255, 255, 255, 8, 255, 255, 255, 12, 255, 255, 255},
    {1, 255, 255, 255, 5, 255, 255, 255, 9, 255, 255, 255, 13, 255, 255, 255},
    {2, 255, 255, 255, 6, 255, 255, 255, 10, 255, 255, 255, 14, 255, 255, 255},
    {3, 255, 255, 255, 7, 255, 255, 255, 11, 255, 255, 255, 15, 255, 255, 255},
};

// Q4_K_X4 (quant/repack.h), per super-block of a 4-row group and column, all in lanes = rows:
//  - per sub-block s, 8 sdots by lane of the 16 nibble vectors' codes (0..15: an and or a shift
//    each, shared by the tile's columns) with the column's 32 activations, then one multiply by
//    the 4 rows' scales of s (a tbl widens them from the 4-byte-per-row order of sm);
//  - the mins term sum_s m_s * bsum_s as 4 sdots: the mins are int8 vectors of 4 rows x 4
//    sub-blocks (2 shifts and inserts from sm), and Q8_K's bsums, pairwise summed to the 8
//    sub-blocks of 32 (|.| <= 32 * 127 = 4064), split into a low byte (int8) and a high part
//    (|.| <= 16): bsum = 256 hi + lo, so sum m * bsum = 256 * sum m * hi + sum m * lo;
//  - d * isum - dmin * msum in f32 with the 4 rows' d and dmin (one load), times the column's d.
// |isum| <= 8 * 63 * 32 * 15 * 127 < 2^25 and |msum| < 2^21: int32 is exact. The converts are
// the fixed-point form (1 fraction bit), a single micro-op where the plain scvtf takes two; the
// halving they bring is undone once at the end (exact).
struct Q4KX4 {
  using Group = block_q4_Kx4;

  template <int C>
  __attribute__((flatten)) static void tile(const GemmArgs& a, const Group* w, int64_t c, float32x4_t (&acc)[C]) {
    const int64_t nb = a.k / kQKK;
    const uint8_t* x0 = static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes;
    const size_t x_col_bytes = a.x_col_bytes;
    const uint8x16_t lanes[4] = {vld1q_u8(kScaleLanes[0]), vld1q_u8(kScaleLanes[1]), vld1q_u8(kScaleLanes[2]),
                                 vld1q_u8(kScaleLanes[3])};
    const uint8x16_t low4 = vdupq_n_u8(0x0F), low6 = vdupq_n_u8(0x3F);
    float32x4_t half_sum[C];
    for (int j = 0; j < C; ++j) half_sum[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      EDGELLM_MCA_TILE("kx4block-begin", 4, C);
      const Group& g = w[b];
      const uint8x16_t s0 = vld1q_u8(g.sm), s1 = vld1q_u8(g.sm + 16), n = vld1q_u8(g.sm + 32);
      const uint8x16_t sc[2] = {vandq_u8(s0, low6), vandq_u8(s1, low6)};
      // Mins of sub-blocks 0..3: low nibble of n, bits 4, 5 from the top of s0; 4..7: high nibble, top of s1.
      const int8x16_t mins0 = vreinterpretq_s8_u8(vsliq_n_u8(n, vshrq_n_u8(s0, 6), 4));
      const int8x16_t mins1 = vreinterpretq_s8_u8(vsriq_n_u8(vshrq_n_u8(s1, 2), n, 4));
      const uint8_t* xb = x0 + b * sizeof(block_q8_K);
      int32x4_t isum[C], msum[C];
#pragma GCC unroll 4
      for (int j = 0; j < C; ++j) {
        const block_q8_K& x = *reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes);
        const int16x8_t bs = vpaddq_s16(vld1q_s16(x.bsums), vld1q_s16(x.bsums + 8));
        // Bytes 0..7: the sums' low bytes; 8..15: (sum + 128) >> 8, the rest.
        const int8x16_t bb = vrshrn_high_n_s16(vmovn_s16(bs), bs, 8);
        int32x4_t m = vdotq_laneq_s32(zero_from_memory(), mins0, bb, 2);
        m = vdotq_laneq_s32(m, mins1, bb, 3);
        m = vdotq_laneq_s32(vshlq_n_s32(m, 8), mins0, bb, 0);
        msum[j] = vdotq_laneq_s32(m, mins1, bb, 1);
      }
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) {
        int8x16_t lo[4], hi[4];  // lo[v]: weights 4v..4v+3 of the sub-block's 4 rows, hi[v]: 16 + 4v..
        for (int v = 0; v < 4; ++v) {
          const uint8x16_t q = vld1q_u8(g.qs + 64 * s + 16 * v);
          lo[v] = vreinterpretq_s8_u8(vandq_u8(q, low4));
          hi[v] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        }
        const int32x4_t scale = vreinterpretq_s32_u8(vqtbl1q_u8(sc[s / 4], lanes[s % 4]));
#pragma GCC unroll 4
        for (int j = 0; j < C; ++j) {
          const int8_t* xq = reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes)->qs + 32 * s;
          const int8x16_t xl = vld1q_s8(xq), xh = vld1q_s8(xq + 16);
          int32x4_t d = vdotq_laneq_s32(zero_from_memory(), lo[0], xl, 0);
          d = vdotq_laneq_s32(d, lo[1], xl, 1);
          d = vdotq_laneq_s32(d, lo[2], xl, 2);
          d = vdotq_laneq_s32(d, lo[3], xl, 3);
          d = vdotq_laneq_s32(d, hi[0], xh, 0);
          d = vdotq_laneq_s32(d, hi[1], xh, 1);
          d = vdotq_laneq_s32(d, hi[2], xh, 2);
          d = vdotq_laneq_s32(d, hi[3], xh, 3);
          isum[j] = s == 0 ? vmulq_s32(d, scale) : vmlaq_s32(isum[j], d, scale);
        }
      }
      // d[0..3] then dmin[0..3]: one 16-byte load.
      const float16x8_t dd = vreinterpretq_f16_u16(vld1q_u16(reinterpret_cast<const uint16_t*>(&g)));
      const float32x4_t dw = vcvt_f32_f16(vget_low_f16(dd)), dmw = vcvt_high_f32_f16(dd);
#pragma GCC unroll 4
      for (int j = 0; j < C; ++j) {
        float32x4_t t = vmulq_f32(dw, vcvtq_n_f32_s32(isum[j], 1));
        t = vfmsq_f32(t, dmw, vcvtq_n_f32_s32(msum[j], 1));
        half_sum[j] = vfmaq_n_f32(half_sum[j], t, reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes)->d);
      }
      EDGELLM_MCA_TILE("kx4block-end", 4, C);
    }
    for (int j = 0; j < C; ++j) acc[j] = vaddq_f32(half_sum[j], half_sum[j]);
  }
};


// Selects byte j of each row's 4 bytes by sdot with lane j: 1 there, 0 elsewhere; an sdot of
// int8 values with it sign-extends them into int32 lanes.
alignas(16) constexpr int8_t kPickByte[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};

// Q6_K_X4 (quant/repack.h), per super-block of a 4-row group and column, lanes = rows:
//  - per sub-block s of 16 weights, the 4 code vectors from 2 ql vectors and 1 qh vector (an and
//    or a shift and one insert each, shared by the columns), 4 sdots by lane with the column's 16
//    activations, then one multiply by the 4 rows' scales of s (sign-extended by an sdot with
//    kPickByte);
//  - the codes stay 0..63: the -32 is the term -32 * sum_s sc_s * bsum_s, 8 sdots per column of
//    the scale vectors with Q8_K's bsums split into low bytes and high parts (|bsum| <= 2032), as
//    Q4_K_X4's mins;
//  - d * isum in f32, times the column's d.
// |isum| <= 16 * 128 * 32 * 127 * 16 (< 2^28) and the partial sums stay below 2^29: int32 is exact.
struct Q6KX4 {
  using Group = block_q6_Kx4;

  template <int C>
  __attribute__((flatten)) static void tile(const GemmArgs& a, const Group* w, int64_t c, float32x4_t (&acc)[C]) {
    const int64_t nb = a.k / kQKK;
    const uint8_t* x0 = static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes;
    const size_t x_col_bytes = a.x_col_bytes;
    const int8x16_t pick = vld1q_s8(kPickByte);
    const uint8x16_t m03 = vdupq_n_u8(0x03), m30 = vdupq_n_u8(0x30);
    float32x4_t half_sum[C];
    for (int j = 0; j < C; ++j) half_sum[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      EDGELLM_MCA_TILE("q6x4block-begin", 4, C);
      const Group& g = w[b];
      const int8x16_t sc[4] = {vld1q_s8(g.sc), vld1q_s8(g.sc + 16), vld1q_s8(g.sc + 32), vld1q_s8(g.sc + 48)};
      const uint8_t* xb = x0 + b * sizeof(block_q8_K);
      int32x4_t isum[C];
#pragma GCC unroll 4
      for (int j = 0; j < C; ++j) {
        const block_q8_K& x = *reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes);
        const int16x8_t b0 = vld1q_s16(x.bsums), b1 = vld1q_s16(x.bsums + 8);
        const int8x16_t lo = vmovn_high_s16(vmovn_s16(b0), b1);  // the sums' low bytes
        const int8x16_t hi = vrshrn_high_n_s16(vrshrn_n_s16(b0, 8), b1, 8);  // (sum + 128) >> 8
        int32x4_t m = vdotq_laneq_s32(zero_from_memory(), sc[0], hi, 0);
        m = vdotq_laneq_s32(m, sc[1], hi, 1);
        m = vdotq_laneq_s32(m, sc[2], hi, 2);
        m = vdotq_laneq_s32(m, sc[3], hi, 3);
        m = vdotq_laneq_s32(vshlq_n_s32(m, 8), sc[0], lo, 0);
        m = vdotq_laneq_s32(m, sc[1], lo, 1);
        m = vdotq_laneq_s32(m, sc[2], lo, 2);
        m = vdotq_laneq_s32(m, sc[3], lo, 3);
        isum[j] = vmulq_n_s32(m, -32);
      }
#pragma GCC unroll 16
      for (int s = 0; s < 16; ++s) {
        const uint8x16_t ql0 = vld1q_u8(g.ql + 32 * s), ql1 = vld1q_u8(g.ql + 32 * s + 16), qh = vld1q_u8(g.qh + 16 * s);
        const uint8x16_t t = vshrq_n_u8(qh, 2);
        const int8x16_t c0 = vreinterpretq_s8_u8(vsliq_n_u8(ql0, vandq_u8(qh, m03), 4));
        const int8x16_t c1 = vreinterpretq_s8_u8(vsriq_n_u8(vandq_u8(qh, m30), ql0, 4));
        const int8x16_t c2 = vreinterpretq_s8_u8(vsliq_n_u8(ql1, vandq_u8(t, m03), 4));
        const int8x16_t c3 = vreinterpretq_s8_u8(vsriq_n_u8(t, ql1, 4));
        int32x4_t scale;
        switch (s % 4) {
          case 0: scale = vdotq_laneq_s32(zero_from_memory(), sc[s / 4], pick, 0); break;
          case 1: scale = vdotq_laneq_s32(zero_from_memory(), sc[s / 4], pick, 1); break;
          case 2: scale = vdotq_laneq_s32(zero_from_memory(), sc[s / 4], pick, 2); break;
          default: scale = vdotq_laneq_s32(zero_from_memory(), sc[s / 4], pick, 3); break;
        }
#pragma GCC unroll 4
        for (int j = 0; j < C; ++j) {
          const int8x16_t xv = vld1q_s8(reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes)->qs + 16 * s);
          int32x4_t d = vdotq_laneq_s32(zero_from_memory(), c0, xv, 0);
          d = vdotq_laneq_s32(d, c1, xv, 1);
          d = vdotq_laneq_s32(d, c2, xv, 2);
          d = vdotq_laneq_s32(d, c3, xv, 3);
          isum[j] = vmlaq_s32(isum[j], d, scale);
        }
      }
      const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(g.d)));
#pragma GCC unroll 4
      for (int j = 0; j < C; ++j)
        half_sum[j] = vfmaq_n_f32(half_sum[j], vmulq_f32(dw, vcvtq_n_f32_s32(isum[j], 1)),
                                  reinterpret_cast<const block_q8_K*>(xb + j * x_col_bytes)->d);
      EDGELLM_MCA_TILE("q6x4block-end", 4, C);
    }
    for (int j = 0; j < C; ++j) acc[j] = vaddq_f32(half_sum[j], half_sum[j]);
  }
};

// Group g x columns c..c+C-1 of K's weights (Q4KX4, Q6KX4), stored to y rows 4g..
// (y_col_stride >= 4). Not inlined: one copy of each tile serves whole and partial groups.
template <class K, int C>
__attribute__((noinline)) void run_k_group(const GemmArgs& a, int64_t g, int64_t c, float* y, int64_t y_stride) {
  float32x4_t acc[C];
  K::template tile<C>(a, reinterpret_cast<const typename K::Group*>(a.w + g * 4 * a.w_row_bytes), c, acc);
  for (int j = 0; j < C; ++j) vst1q_f32(y + (c + j) * y_stride, acc[j]);
}

// Every column of group g: 4-column tiles (registers hold no wider one), then 1..3.
template <class K>
void run_k_columns(const GemmArgs& a, int64_t g, float* y, int64_t y_stride) {
  int64_t c = 0;
  for (; c + 4 <= a.ncols; c += 4) run_k_group<K, 4>(a, g, c, y, y_stride);
  switch (a.ncols - c) {
    case 1: run_k_group<K, 1>(a, g, c, y, y_stride); break;
    case 2: run_k_group<K, 2>(a, g, c, y, y_stride); break;
    case 3: run_k_group<K, 3>(a, g, c, y, y_stride); break;
    default: break;
  }
}

// Rows [r0, r1) of group g only, as run_partial_group does for Q4_0_X4.
template <class K>
void run_k_partial_group(const GemmArgs& a, int64_t g, int64_t r0, int64_t r1) {
  float tile[kMaxGemmCols * 4];
  run_k_columns<K>(a, g, tile, 4);
  for (int64_t c = 0; c < a.ncols; ++c)
    for (int64_t r = r0; r < r1; ++r) *common::y_at(a, c, r) = tile[c * 4 + (r - g * 4)];
}

// Rows [r0, r1) of a super-block layout (KernelTable::gemm_q4_0_x4's contract).
template <class K>
void gemm_k_groups(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (r0 >= r1 || a.ncols <= 0) return;
  const int64_t g0 = (r0 + 3) / 4, g1 = r1 / 4;  // the whole groups in [r0, r1): [g0, g1)
  if (g0 > g1) {
    run_k_partial_group<K>(a, r0 / 4, r0, r1);
    return;
  }
  if (r0 < g0 * 4) run_k_partial_group<K>(a, r0 / 4, r0, g0 * 4);
  for (int64_t g = g0; g < g1; ++g) run_k_columns<K>(a, g, common::y_at(a, 0, g * 4), a.y_col_stride);
  if (g1 * 4 < r1) run_k_partial_group<K>(a, g1, g1 * 4, r1);
}

}  // namespace

void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (r0 >= r1 || a.ncols <= 0) return;
  const float* dx = activation_scales(a);
  const int64_t g0 = (r0 + 3) / 4, g1 = r1 / 4;  // the whole groups in [r0, r1): [g0, g1)
  if (g0 > g1) {  // inside one group
    run_partial_group(a, r0 / 4, r0, r1, dx);
    return;
  }
  if (r0 < g0 * 4) run_partial_group(a, r0 / 4, r0, g0 * 4, dx);
  for (int64_t g = g0; g < g1; ++g) run_columns(a, g, dx, common::y_at(a, 0, g * 4), a.y_col_stride);
  if (g1 * 4 < r1) run_partial_group(a, g1, g1 * 4, r1, dx);
}


void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_k_groups<Q4KX4>(a, r0, r1); }
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_k_groups<Q6KX4>(a, r0, r1); }

}  // namespace edgellm::neon_dotprod
