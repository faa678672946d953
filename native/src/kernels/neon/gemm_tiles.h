// The quantized NEON GEMM tiles shared by gemm.cpp (any ARMv8-A) and gemm_dotprod.cpp
// (armv8.2-a+dotprod): one tile for every 32-weight block format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// IQ4_NL). A format (Codes below) turns one weight block into 32 int8 codes; a Dot primitive,
// which each file defines, takes the integer dot product of those codes with one activation block:
//
//   struct Dot {
//     // Codes 0..15 (nibbles): partial sums of one row's block, int16x8_t or int32x4_t.
//     using Q4Acc = ...;
//     // -kOffset * (sums of x), from one x block's halves; shared by the rows of a tile.
//     template <int kOffset> static Q4Acc q4_start(int8x16_t xl, int8x16_t xh);
//     // [start +] sum c * x for the codes lo (weights 0..15) and hi (16..31) of one block.
//     static Q4Acc q4_dot(Q4Acc start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh);
//     static Q4Acc q4_dot(int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh);
//     // The same for any codes |c| <= 128, always in int32 lanes.
//     template <int kOffset> static int32x4_t q8_start(int8x16_t xl, int8x16_t xh);
//     static int32x4_t q8_dot(int32x4_t start, int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh);
//     static int32x4_t q8_dot(int8x16_t wl, int8x16_t wh, int8x16_t xl, int8x16_t xh);
//   };
//
// Only plain ARMv8-A intrinsics appear here; sdot stays in gemm_dotprod.cpp. Everything is in
// an anonymous namespace so that each file instantiates its own copy with its own -march (no
// ODR clash, and nothing built for dotprod can be linked into a caller built for armv8-a).
#pragma once
#include <arm_neon.h>

#include <cstddef>
#include <type_traits>

#include "kernels/common/gemm_tiling.h"
#include "kernels/neon/neon.h"

// scripts/arm-model.mjs compiles the NEON files with -DEDGELLM_MCA_MARKERS to find each tile's
// hot loop in the assembly: asm comments "// edgellm-mca <what> r<R> c<C>" (R rows x C columns,
// the template arguments as immediates) at the start and end of one iteration. Comments only;
// no build defines it.
#if defined(EDGELLM_MCA_MARKERS)
#define EDGELLM_MCA_TILE(what, R, C) asm volatile("// edgellm-mca " what " r%c0 c%c1" ::"i"(R), "i"(C))
#else
#define EDGELLM_MCA_TILE(what, R, C)
#endif

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

// The same from int16 lanes (nibble codes): every partial sum of one row's block fits int16
// (|sum (n - 8) x| <= 32 * 8 * 127 = 32512 for Q4_0; Q4_1's sums of 16 products n x are at most
// 16 * 15 * 127 = 30480), so the pairwise adds stay 16-bit until the last, widening one.
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

// acc + v * s[lane]; lane is a constant once the tile loops are unrolled.
inline float32x4_t fma_lane(float32x4_t acc, float32x4_t v, float32x4_t s, int lane) {
  switch (lane) {
    case 0: return vfmaq_laneq_f32(acc, v, s, 0);
    case 1: return vfmaq_laneq_f32(acc, v, s, 1);
    case 2: return vfmaq_laneq_f32(acc, v, s, 2);
    default: return vfmaq_laneq_f32(acc, v, s, 3);
  }
}

// One f16 field (the scale d, Q4_1/Q5_1's minimum m, Q8_1's s) of block b of up to 4 rows (or
// columns) as floats in lanes 0..N-1. The halves are gathered in a general register (loads,
// shifted orrs, one fmov): lane inserts from memory would each take a slot on the SIMD pipes,
// which the block's multiplies keep busy (llvm-mca: 7.09 -> 6.80 cycles per block for the
// Cortex-A72 Q4_0 GEMV, 4.90 -> 4.27 for the Neoverse-N1 sdot one).
template <int N, class Block>
inline float32x4_t f16_lanes(const Block* const* rows, int64_t b, const uint16_t Block::*field) {
  static_assert(N >= 1 && N <= 4, "tiles have 1 to 4 rows and columns");
  uint64_t h = rows[0][b].*field;
  if constexpr (N > 1) h |= uint64_t{rows[1][b].*field} << 16;
  if constexpr (N > 2) h |= uint64_t{rows[2][b].*field} << 32;
  if constexpr (N > 3) h |= uint64_t{rows[3][b].*field} << 48;
  return vcvt_f32_f16(vreinterpret_f16_u64(vcreate_u64(h)));
}

// The scales d and minimums m of block b of 4 rows (Q4_1 / Q5_1: d, m are the block's first 4
// bytes) as floats in lanes 0..3: one 8-byte load per row and three zips, instead of a lane load
// per row and field.
template <class Block>
inline void scales_and_mins(const Block* const (&rows)[4], int64_t b, float32x4_t& d, float32x4_t& m) {
  static_assert(offsetof(Block, d) == 0 && offsetof(Block, m) == 2 && sizeof(Block) >= 8, "d, m lead the block");
  uint16x4_t h[4];  // d, m, ...
  for (int i = 0; i < 4; ++i) h[i] = vld1_u16(reinterpret_cast<const uint16_t*>(&rows[i][b]));
  const uint32x2_t dm01 = vreinterpret_u32_u16(vzip1_u16(h[0], h[1]));  // d0 d1 m0 m1
  const uint32x2_t dm23 = vreinterpret_u32_u16(vzip1_u16(h[2], h[3]));  // d2 d3 m2 m3
  d = vcvt_f32_f16(vreinterpret_f16_u32(vzip1_u32(dm01, dm23)));
  m = vcvt_f32_f16(vreinterpret_f16_u32(vzip2_u32(dm01, dm23)));
}

// Ends a scheduling region after columns j - 1 and j of a tile: GCC's instruction scheduler does
// not move code across a volatile asm, so a 4-column tile is scheduled as two halves of 2 columns.
// Left alone, it interleaves all R x C = 16 accumulator chains of a 4 x 4 tile, which next to the
// 8 weight-code and 8 activation registers needs more than the 32 vector registers: the column
// accumulators went to the stack and back every block (issue #18). No instruction is emitted.
inline void schedule_in_halves(float32x4_t& acc0, float32x4_t& acc1) { asm volatile("" : "+w"(acc0), "+w"(acc1)); }

// ---- weight block formats ------------------------------------------------------------------
// A format says how one weight block becomes 32 int8 codes c (lo: weights 0..15, hi: 16..31)
// and what they mean:
//   struct Codes {
//     using Block = ...;   // the weight block
//     using XBlock = ...;  // the activation block: block_q8_0, or block_q8_1 when kMin
//     static constexpr bool kNibbles;  // codes 0..15: Dot's q4_ primitives apply
//     static constexpr int kOffset;    // w = d * (c - kOffset) (+ m when kMin)
//     static constexpr bool kMin;      // w = d * (c - kOffset) + m; the block adds m * s_x,
//                                      // s_x = d_x * sum(x codes) from the Q8_1 block
//     static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi);
//   };

// Nibbles as Q4_0 orders them: weight j in the low nibble of qs[j], weight 16 + j in the high.
inline void nibbles(const uint8_t* qs, uint8x16_t& lo, uint8x16_t& hi) {
  const uint8x16_t q = vld1q_u8(qs);
  lo = vandq_u8(q, vdupq_n_u8(0x0F));
  hi = vshrq_n_u8(q, 4);
}

// Q5_0 / Q5_1 codes (nibble | fifth bit << 4) - 16, i.e. the nibble with bits 4..7 all set
// (-16 + nibble as int8) where the fifth bit is clear. Bit j of qh (uint32 LE, kQh bytes into
// the block) is weight j's. The block's first 16 bytes (d, m, qh: every Q5 block is longer) go
// into one vector, inverted; tbl spreads each qh byte over the 8 lanes of its weights, cmtst
// against that lane's bit gives 0xFF where the fifth bit is clear, and sli writes those 4 bits
// over bits 4..7 of the nibble lanes (which also drops the high nibbles from lo).
template <int kQh>
inline void q5_codes(const void* block, const uint8_t* qs, int8x16_t& lo, int8x16_t& hi) {
  static constexpr uint8_t kLaneBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  static constexpr uint8_t kLoBytes[16] = {kQh,     kQh,     kQh,     kQh,     kQh,     kQh,     kQh,     kQh,
                                           kQh + 1, kQh + 1, kQh + 1, kQh + 1, kQh + 1, kQh + 1, kQh + 1, kQh + 1};
  static constexpr uint8_t kHiBytes[16] = {kQh + 2, kQh + 2, kQh + 2, kQh + 2, kQh + 2, kQh + 2, kQh + 2, kQh + 2,
                                           kQh + 3, kQh + 3, kQh + 3, kQh + 3, kQh + 3, kQh + 3, kQh + 3, kQh + 3};
  const uint8x16_t clear = vmvnq_u8(vld1q_u8(static_cast<const uint8_t*>(block)));
  const uint8x16_t bit = vld1q_u8(kLaneBit);
  const uint8x16_t clear_lo = vtstq_u8(vqtbl1q_u8(clear, vld1q_u8(kLoBytes)), bit);
  const uint8x16_t clear_hi = vtstq_u8(vqtbl1q_u8(clear, vld1q_u8(kHiBytes)), bit);
  const uint8x16_t q = vld1q_u8(qs);
  lo = vreinterpretq_s8_u8(vsliq_n_u8(q, clear_lo, 4));
  hi = vreinterpretq_s8_u8(vsliq_n_u8(vshrq_n_u8(q, 4), clear_hi, 4));
}

// The 32 nibble codes of a Q4_0 / Q4_1 block as signed bytes (0..15; the offset is kOffset).
inline void nibble_codes(const uint8_t* qs, int8x16_t& lo, int8x16_t& hi) {
  uint8x16_t l, h;
  nibbles(qs, l, h);
  lo = vreinterpretq_s8_u8(l);
  hi = vreinterpretq_s8_u8(h);
}

struct Q4_0Codes {
  using Block = block_q4_0;
  using XBlock = block_q8_0;
  static constexpr bool kNibbles = true;
  static constexpr int kOffset = 8;
  static constexpr bool kMin = false;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) { nibble_codes(b.qs, lo, hi); }
  // The codes minus kOffset (-8..7): with both nibbles' top bit flipped, a nibble read as a
  // signed 4-bit value is n - 8, and the arithmetic right shifts sign-extend it. One eor and
  // three shifts: the shifts run on the second SIMD pipe of an A72, the first carries smull.
  static void unpack_centered(const Block& b, int8x16_t& lo, int8x16_t& hi) {
    const int8x16_t q = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(b.qs), vdupq_n_u8(0x88)));
    lo = vshrq_n_s8(vshlq_n_s8(q, 4), 4);
    hi = vshrq_n_s8(q, 4);
  }
};

struct Q4_1Codes {
  using Block = block_q4_1;
  using XBlock = block_q8_1;
  static constexpr bool kNibbles = true;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) { nibble_codes(b.qs, lo, hi); }
};

// Q5_0: q5_codes are already q - 16.
struct Q5_0Codes {
  using Block = block_q5_0;
  using XBlock = block_q8_0;
  static constexpr bool kNibbles = false;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = false;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) { q5_codes<offsetof(Block, qh)>(&b, b.qs, lo, hi); }
};

// Q5_1: w = d * q + m with q = (q5_codes + 16), the +16 folded into the shared x-side start.
struct Q5_1Codes {
  using Block = block_q5_1;
  using XBlock = block_q8_1;
  static constexpr bool kNibbles = false;
  static constexpr int kOffset = -16;
  static constexpr bool kMin = true;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) { q5_codes<offsetof(Block, qh)>(&b, b.qs, lo, hi); }
  // The codes minus kOffset: q = 0..31.
  static void unpack_centered(const Block& b, int8x16_t& lo, int8x16_t& hi) {
    unpack(b, lo, hi);
    lo = vsubq_s8(lo, vdupq_n_s8(kOffset));
    hi = vsubq_s8(hi, vdupq_n_s8(kOffset));
  }
};

struct Q8_0Codes {
  using Block = block_q8_0;
  using XBlock = block_q8_0;
  static constexpr bool kNibbles = false;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = false;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) {
    lo = vld1q_s8(b.qs);
    hi = vld1q_s8(b.qs + 16);
  }
};

// IQ4_NL: the nibbles index the non-linear code book (tbl over its 16 int8 values).
struct Iq4NlCodes {
  using Block = block_iq4_nl;
  using XBlock = block_q8_0;
  static constexpr bool kNibbles = false;
  static constexpr int kOffset = 0;
  static constexpr bool kMin = false;
  static void unpack(const Block& b, int8x16_t& lo, int8x16_t& hi) {
    const int8x16_t book = vld1q_s8(kValuesIq4nl);
    uint8x16_t l, h;
    nibbles(b.qs, l, h);
    lo = vqtbl1q_s8(book, l);
    hi = vqtbl1q_s8(book, h);
  }
};

// ---- the tile ------------------------------------------------------------------------------
// Per block: the R weight rows are unpacked to codes once and serve all C columns; for each
// column the x-side start value (the offset times the sums of x) is shared by the R rows.
template <class Dot, class Codes>
struct BlockTile {
  // Nibble codes may use Dot's narrower accumulator; every other format sums in int32 lanes.
  using Acc = std::conditional_t<Codes::kNibbles, typename Dot::Q4Acc, int32x4_t>;

  static Acc start(int8x16_t xl, int8x16_t xh) {
    if constexpr (Codes::kNibbles) {
      return Dot::template q4_start<Codes::kOffset>(xl, xh);
    } else {
      return Dot::template q8_start<Codes::kOffset>(xl, xh);
    }
  }

  // kStart: the codes still carry the offset, which start (from the same x block) takes off.
  template <bool kStart>
  static Acc dot(Acc start, int8x16_t lo, int8x16_t hi, int8x16_t xl, int8x16_t xh) {
    if constexpr (Codes::kNibbles) {
      if constexpr (!kStart) return Dot::q4_dot(lo, hi, xl, xh);
      else return Dot::q4_dot(start, lo, hi, xl, xh);
    } else {
      if constexpr (!kStart) return Dot::q8_dot(lo, hi, xl, xh);
      else return Dot::q8_dot(start, lo, hi, xl, xh);
    }
  }

  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    using W = typename Codes::Block;
    using X = typename Codes::XBlock;
    // The offset goes either into the codes (one subtract per row half-block, the R rows' codes
    // then serve every column as signed values) or into each column's start value (shared by the
    // R rows): Dot says from how many columns the first is cheaper. The codes minus kOffset stay
    // in int8 (Q4_0: -8..7, Q5_1: 0..31) and in the Dot's bounds (|c| <= 8 for nibble sums).
    constexpr bool kOffsetInCodes = Codes::kOffset != 0 && C >= Dot::kOffsetInCodesFromColumns;
    constexpr bool kStart = Codes::kOffset != 0 && !kOffsetInCodes;
    const int64_t nb = a.k / kQK;
    const W* w[R];
    const X* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    float32x4_t acc[C];  // lane i: row i
    for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      EDGELLM_MCA_TILE("block-begin", R, C);
      int8x16_t lo[R], hi[R];
      for (int i = 0; i < R; ++i) {
        if constexpr (kOffsetInCodes) Codes::unpack_centered(w[i][b], lo[i], hi[i]);
        else Codes::unpack(w[i][b], lo[i], hi[i]);
      }
      float32x4_t dw;
      [[maybe_unused]] float32x4_t mw, sx;
      if constexpr (Codes::kMin && R == 4) {
        scales_and_mins(w, b, dw, mw);
      } else {
        dw = f16_lanes<R>(w, b, &W::d);
        if constexpr (Codes::kMin) mw = f16_lanes<R>(w, b, &W::m);
      }
      const float32x4_t dx = f16_lanes<C>(x, b, &X::d);
      if constexpr (Codes::kMin) sx = f16_lanes<C>(x, b, &X::s);
      for (int j = 0; j < C; ++j) {
        const int8x16_t xl = vld1q_s8(x[j][b].qs);
        const int8x16_t xh = vld1q_s8(x[j][b].qs + 16);
        Acc s0{};
        if constexpr (kStart) s0 = start(xl, xh);
        Acc p[R];
        for (int i = 0; i < R; ++i) p[i] = dot<kStart>(s0, lo[i], hi[i], xl, xh);
        acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(row_sums<R>(p)), mul_lane(dw, dx, j));
        if (j % 2 == 1 && j + 1 < C) schedule_in_halves(acc[j - 1], acc[j]);
        if constexpr (Codes::kMin) acc[j] = fma_lane(acc[j], mw, sx, j);
      }
      EDGELLM_MCA_TILE("block-end", R, C);
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], y_at(a, c + j, r), rstep);
  }
};

// The NEON tiling: decode 4 rows a quarter of the range apart, GEMM 4 adjacent rows x 4 columns.
// Callers run common::drive<Tile, kGemmRows>.
constexpr int kGemmRows = 4;

}  // namespace
}  // namespace edgellm::neon_tiles
