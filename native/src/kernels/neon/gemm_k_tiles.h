// The NEON GEMM tiles of the weight types that take Q8_K activations (Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K, IQ4_XS), shared by gemm_k.cpp (any ARMv8-A) and gemm_k_dotprod.cpp (armv8.2-a+dotprod).
//
// One tile serves every type. Per 256-weight super-block and weight row, a Format decodes
//  - the sub-block scales as int16 (16 sub-blocks of 16 weights or 8 of 32),
//  - the "mins" as int16 per sub-block, with the float factor dm they are scaled by,
//  - the weight codes as int8 vectors of 16 in element order, a chunk (64 or 128 weights) at a time,
// and the tile computes, per row and activation column,
//   y += d_x * (d * sum_s sc_s * sum_{i in s} q_i x_i  -  dm * sum_s min_s * bsum_s)
// where bsum_s (the sum of the activation codes of sub-block s) comes from Q8_K's bsums. The mins
// term is ggml's "- dmin * m" of Q2_K/Q4_K/Q5_K, and also carries the code offsets that the
// decoders leave out: Q6_K's codes stay 0..63 (min = 32 * sc, dm = d) and Q3_K's 0..7 (min =
// 4 * sc, dm = d), so the integer sums are ggml's exactly and a code needs no subtraction.
//
// A Dot primitive (one per file) does the integer part of one sub-block, scale included:
//   struct Dot {
//     template <int NSub> using Scales = ...;  // a row's NSub sub-block scales as sub() reads them
//     template <int NSub> static Scales<NSub> scales(const int16x8_t (&sc)[NSub / 8]);
//     // acc + sc[S] * sum of w[v] . x[v] over the sub-block's N vectors (N = 1 or 2);
//     // kMaxCode bounds |w| (the plain-NEON version keeps int16 partial sums within range).
//     template <int N, int S, int kMaxCode, class Sc>
//     static int32x4_t sub(int32x4_t acc, const int8x16_t* w, const int8_t* x, const Sc& sc);
//   };
// Only plain ARMv8-A intrinsics appear here; the anonymous namespace gives each file its own
// copy built with its own -march (see gemm_tiles.h).
#pragma once
#include <arm_neon.h>

#include <array>
#include <cstring>
#include <utility>

#include "kernels/neon/gemm_tiles.h"

namespace edgellm::neon_tiles {
namespace {

// f(std::integral_constant<int, I>{}) for I = 0..N-1: lane and chunk indices stay compile-time
// constants (the lane forms of mla/smlal need them) without relying on loop unrolling.
template <class F, int... I>
inline void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
inline void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// v >> N for N = 0..7 (vshrq_n_u8 takes 1..8 only).
template <int N>
inline uint8x16_t shr(uint8x16_t v) {
  if constexpr (N == 0) {
    return v;
  } else {
    return vshrq_n_u8(v, N);
  }
}

// What a format decodes per row and super-block (its f16 d and dm it points to: F::d, F::dm).
template <int NSub>
struct KRow {
  int16x8_t sc[NSub / 8];    // sub-block scales
  int16x8_t mins[NSub / 8];  // per sub-block, multiplied by bsum_s and dm
};

// ---- formats ---------------------------------------------------------------------------------

// Q4_K: 8 sub-blocks of 32; each 64 weights are 32 bytes, low nibbles then high nibbles.
struct Q4KFormat {
  using Block = block_q4_K;
  static constexpr int kSub = 32, kChunk = 64, kMaxCode = 15;
  static constexpr bool kHasMins = true;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.dmin; }
  // The 6-bit scales and mins of get_scale_min_k4, four at a time in 32-bit words: scales 0..3
  // and mins 0..3 are the low 6 bits of bytes 0..3 and 4..7; scales 4..7 and mins 4..7 take
  // their low 4 bits from the nibbles of bytes 8..11 and their high 2 from the top of 0..3 / 4..7.
  static void scales_mins(const uint8_t* s, int16x8_t& sc, int16x8_t& m) {
    uint32_t u[3];
    std::memcpy(u, s, 12);
    const uint32_t lo6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, lo2 = 0x03030303;
    const uint32_t sc_w[2] = {u[0] & lo6, (u[2] & lo4) | (((u[0] >> 6) & lo2) << 4)};
    const uint32_t m_w[2] = {u[1] & lo6, ((u[2] >> 4) & lo4) | (((u[1] >> 6) & lo2) << 4)};
    sc = vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vld1_u32(sc_w))));
    m = vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vld1_u32(m_w))));
  }
  static void row(const Block& b, KRow<8>& r) {
    scales_mins(b.scales, r.sc[0], r.mins[0]);
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[4]) {
    const uint8x16_t q0 = vld1q_u8(b.qs + 32 * T), q1 = vld1q_u8(b.qs + 32 * T + 16);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    w[0] = vreinterpretq_s8_u8(vandq_u8(q0, low4));
    w[1] = vreinterpretq_s8_u8(vandq_u8(q1, low4));
    w[2] = vreinterpretq_s8_u8(vshrq_n_u8(q0, 4));
    w[3] = vreinterpretq_s8_u8(vshrq_n_u8(q1, 4));
  }
};

// Q5_K: Q4_K plus a fifth bit: bits 2t and 2t+1 of qh[l] for the low / high nibbles of chunk t.
struct Q5KFormat {
  using Block = block_q5_K;
  static constexpr int kSub = 32, kChunk = 64, kMaxCode = 31;
  static constexpr bool kHasMins = true;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.dmin; }
  static void row(const Block& b, KRow<8>& r) {
    Q4KFormat::scales_mins(b.scales, r.sc[0], r.mins[0]);
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[4]) {
    const uint8x16_t q0 = vld1q_u8(b.qs + 32 * T), q1 = vld1q_u8(b.qs + 32 * T + 16);
    // The chunk's two bits at positions 0 and 1.
    const uint8x16_t h0 = shr<2 * T>(vld1q_u8(b.qh));
    const uint8x16_t h1 = shr<2 * T>(vld1q_u8(b.qh + 16));
    const uint8x16_t low5 = vdupq_n_u8(0x1F);
    // low: (h << 4) | (q & 0x0F), then cut to 5 bits; high: ((h << 3) & 0xF0) | (q >> 4), same.
    w[0] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(q0, h0, 4), low5));
    w[1] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(q1, h1, 4), low5));
    w[2] = vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(vshlq_n_u8(h0, 3), q0, 4), low5));
    w[3] = vreinterpretq_s8_u8(vandq_u8(vsriq_n_u8(vshlq_n_u8(h1, 3), q1, 4), low5));
  }
};

// Q6_K: 16 sub-blocks of 16 with int8 scales. Per 128 weights (half n): ql[64n..] and qh[32n..];
// weight 32q + l (l < 32) has low 4 bits from ql[l + 32 (q & 1)] (low nibble for q < 2, high
// for q >= 2) and high 2 bits from qh[l] >> 2q. Codes stay 0..63 (see the top). Chunk T is
// q = 0, 1 (T even) or q = 2, 3 (T odd) of half T / 2: 64 weights, so that the codes and the
// activations of a chunk fit in registers beside the scales.
struct Q6KFormat {
  using Block = block_q6_K;
  static constexpr int kSub = 16, kChunk = 64, kMaxCode = 63;
  static constexpr bool kHasMins = true;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.d; }
  static void row(const Block& b, KRow<16>& r) {
    const int8x16_t s = vld1q_s8(b.scales);
    r.sc[0] = vmovl_s8(vget_low_s8(s));
    r.sc[1] = vmovl_high_s8(s);
    r.mins[0] = vshlq_n_s16(r.sc[0], 5);
    r.mins[1] = vshlq_n_s16(r.sc[1], 5);
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[4]) {
    const uint8_t* ql = b.ql + 64 * (T / 2);
    const uint8_t* qh = b.qh + 32 * (T / 2);
    const uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 16), l2 = vld1q_u8(ql + 32),
                     l3 = vld1q_u8(ql + 48);
    const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
    if constexpr (T % 2 == 0) {
      const uint8x16_t m2 = vdupq_n_u8(0x03), m3f = vdupq_n_u8(0x3F);
      // q = 0: ((h & 3) << 4) | (l & 15)
      w[0] = vreinterpretq_s8_u8(vsliq_n_u8(l0, vandq_u8(h0, m2), 4));
      w[1] = vreinterpretq_s8_u8(vsliq_n_u8(l1, vandq_u8(h1, m2), 4));
      // q = 1: ((h >> 2) << 4 | (l & 15)) & 63
      w[2] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l2, vshrq_n_u8(h0, 2), 4), m3f));
      w[3] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(l3, vshrq_n_u8(h1, 2), 4), m3f));
    } else {
      const uint8x16_t m30 = vdupq_n_u8(0x30);
      // q = 2: (h & 0x30) | (l >> 4)
      w[0] = vreinterpretq_s8_u8(vsriq_n_u8(vandq_u8(h0, m30), l0, 4));
      w[1] = vreinterpretq_s8_u8(vsriq_n_u8(vandq_u8(h1, m30), l1, 4));
      // q = 3: ((h >> 2) & 0xF0) | (l >> 4): bits 6, 7 of h land at 4, 5; the top two are zero.
      w[2] = vreinterpretq_s8_u8(vsriq_n_u8(vshrq_n_u8(h0, 2), l2, 4));
      w[3] = vreinterpretq_s8_u8(vsriq_n_u8(vshrq_n_u8(h1, 2), l3, 4));
    }
  }
};

// Q2_K: 16 sub-blocks of 16, scales[s] = sc | m << 4. Per 128 weights (chunk T): qs[32T..32T+31];
// weight 32j + l is (qs[l] >> 2j) & 3.
struct Q2KFormat {
  using Block = block_q2_K;
  static constexpr int kSub = 16, kChunk = 128, kMaxCode = 3;
  static constexpr bool kHasMins = true;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.dmin; }
  static void row(const Block& b, KRow<16>& r) {
    const uint8x16_t s = vld1q_u8(b.scales);
    const uint8x16_t sc = vandq_u8(s, vdupq_n_u8(0x0F)), m = vshrq_n_u8(s, 4);
    r.sc[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(sc)));
    r.sc[1] = vreinterpretq_s16_u16(vmovl_high_u8(sc));
    r.mins[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m)));
    r.mins[1] = vreinterpretq_s16_u16(vmovl_high_u8(m));
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[8]) {
    const uint8x16_t q0 = vld1q_u8(b.qs + 32 * T), q1 = vld1q_u8(b.qs + 32 * T + 16);
    const uint8x16_t m3 = vdupq_n_u8(0x03);
    w[0] = vreinterpretq_s8_u8(vandq_u8(q0, m3));
    w[1] = vreinterpretq_s8_u8(vandq_u8(q1, m3));
    w[2] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(q0, 2), m3));
    w[3] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(q1, 2), m3));
    w[4] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(q0, 4), m3));
    w[5] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(q1, 4), m3));
    w[6] = vreinterpretq_s8_u8(vshrq_n_u8(q0, 6));
    w[7] = vreinterpretq_s8_u8(vshrq_n_u8(q1, 6));
  }
};

// Q3_K: Q2_K's 2-bit layout plus a third bit, hmask[l] bit 4T + j for weight 32j + l of half T;
// ggml's code is low2 - 4 when that bit is clear, i.e. (low2 | bit << 2) - 4: the decoder yields
// 0..7 and the -4 goes into the mins. Scales: 6 bits, stored +32, low 4 bits in the nibbles of
// bytes 0..7 (sub-blocks 0..7 low nibbles, 8..15 high), high 2 bits of sub-block s at bit 2 (s / 4)
// of byte 8 + s % 4.
struct Q3KFormat {
  using Block = block_q3_K;
  static constexpr int kSub = 16, kChunk = 128, kMaxCode = 7;
  static constexpr bool kHasMins = true;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.d; }
  static void row(const Block& b, KRow<16>& r) {
    const uint8x8_t lo8 = vld1_u8(b.scales);
    const uint8x16_t lo = vcombine_u8(vand_u8(lo8, vdup_n_u8(0x0F)), vshr_n_u8(lo8, 4));
    uint32_t hw;
    std::memcpy(&hw, b.scales + 8, 4);
    // Byte s of hi = byte 8 + s % 4 shifted right by 2 (s / 4).
    static const int8_t kShift[16] = {0, 0, 0, 0, -2, -2, -2, -2, -4, -4, -4, -4, -6, -6, -6, -6};
    const uint8x16_t hi = vandq_u8(vshlq_u8(vreinterpretq_u8_u32(vdupq_n_u32(hw)), vld1q_s8(kShift)),
                                   vdupq_n_u8(0x03));
    const int8x16_t s = vsubq_s8(vreinterpretq_s8_u8(vsliq_n_u8(lo, hi, 4)), vdupq_n_s8(32));
    r.sc[0] = vmovl_s8(vget_low_s8(s));
    r.sc[1] = vmovl_high_s8(s);
    r.mins[0] = vshlq_n_s16(r.sc[0], 2);
    r.mins[1] = vshlq_n_s16(r.sc[1], 2);
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[8]) {
    const uint8x16_t q0 = vld1q_u8(b.qs + 32 * T), q1 = vld1q_u8(b.qs + 32 * T + 16);
    const uint8x16_t h0 = vld1q_u8(b.hmask), h1 = vld1q_u8(b.hmask + 16);
    const uint8x16_t m7 = vdupq_n_u8(0x07);
    static_for<4>([&](auto J) {
      constexpr int j = decltype(J)::value;
      constexpr int hb = 4 * T + j;
      // (h >> hb) << 2 | (q >> 2j) & 3, cut to 3 bits.
      w[2 * j] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(shr<2 * j>(q0), shr<hb>(h0), 2), m7));
      w[2 * j + 1] = vreinterpretq_s8_u8(vandq_u8(vsliq_n_u8(shr<2 * j>(q1), shr<hb>(h1), 2), m7));
    });
  }
};

// IQ4_XS: 8 sub-blocks of 32, codes looked up in kValuesIq4nl; per sub-block 16 bytes, low
// nibbles are weights 0..15 and high nibbles 16..31. Scale of sub-block s: 4 bits from nibble
// s % 2 of scales_l[s / 2], 2 bits from scales_h >> 2s, stored +32. No mins.
struct Iq4XsFormat {
  using Block = block_iq4_xs;
  static constexpr int kSub = 32, kChunk = 64, kMaxCode = 127;
  static constexpr bool kHasMins = false;
  static const uint16_t* d(const Block& b) { return &b.d; }
  static const uint16_t* dm(const Block& b) { return &b.d; }
  static void row(const Block& b, KRow<8>& r) {
    uint32_t lw;
    std::memcpy(&lw, b.scales_l, 4);
    const uint8x8_t l = vreinterpret_u8_u32(vdup_n_u32(lw));
    const uint16x8_t l2 = vmovl_u8(vzip1_u8(l, l));  // l0 l0 l1 l1 l2 l2 l3 l3
    static const int16_t kLowShift[8] = {0, -4, 0, -4, 0, -4, 0, -4};
    static const int16_t kHighShift[8] = {0, -2, -4, -6, -8, -10, -12, -14};
    const uint16x8_t lo = vandq_u16(vshlq_u16(l2, vld1q_s16(kLowShift)), vdupq_n_u16(0x0F));
    const uint16x8_t hi = vandq_u16(vshlq_u16(vdupq_n_u16(b.scales_h), vld1q_s16(kHighShift)), vdupq_n_u16(0x03));
    r.sc[0] = vsubq_s16(vreinterpretq_s16_u16(vsliq_n_u16(lo, hi, 4)), vdupq_n_s16(32));
  }
  template <int T>
  static void codes(const Block& b, int8x16_t (&w)[4]) {
    const int8x16_t values = vld1q_s8(kValuesIq4nl);
    const uint8x16_t q0 = vld1q_u8(b.qs + 32 * T), q1 = vld1q_u8(b.qs + 32 * T + 16);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    w[0] = vqtbl1q_s8(values, vandq_u8(q0, low4));
    w[1] = vqtbl1q_s8(values, vshrq_n_u8(q0, 4));
    w[2] = vqtbl1q_s8(values, vandq_u8(q1, low4));
    w[3] = vqtbl1q_s8(values, vshrq_n_u8(q1, 4));
  }
};

// ---- the tile ----------------------------------------------------------------------------------

// The mins term of one row and column: sum_s min_s * bsum_s in int32 lanes.
template <int NSub>
inline int32x4_t mins_dot(const int16x8_t (&mins)[NSub / 8], const std::array<int16x8_t, NSub / 8>& bs) {
  int32x4_t m = vmull_s16(vget_low_s16(mins[0]), vget_low_s16(bs[0]));
  m = vmlal_high_s16(m, mins[0], bs[0]);
  if constexpr (NSub == 16) {
    m = vmlal_s16(m, vget_low_s16(mins[1]), vget_low_s16(bs[1]));
    m = vmlal_high_s16(m, mins[1], bs[1]);
  }
  return m;
}

// Q8_K's bsums in the sub-block grouping of a format: as stored for sub-blocks of 16, pairwise
// summed for sub-blocks of 32 (lane s = bsums[2s] + bsums[2s + 1]).
template <int NSub>
inline std::array<int16x8_t, NSub / 8> bsums(const block_q8_K& x) {
  const int16x8_t b0 = vld1q_s16(x.bsums), b1 = vld1q_s16(x.bsums + 8);
  if constexpr (NSub == 8) {
    return {vpaddq_s16(b0, b1)};
  } else {
    return {b0, b1};
  }
}

// R rows (rstep apart) x C columns of a Q8_K-activation GEMM, in the style of Q4Tile (gemm_tiles.h):
// per super-block each row's codes are decoded once per chunk and serve all C columns.
template <class F, class Dot>
struct KTile {
  static constexpr int kNSub = kQKK / F::kSub;
  static constexpr int kVecs = F::kChunk / 16;      // code vectors per chunk
  static constexpr int kPerSub = F::kSub / 16;      // code vectors per sub-block
  static constexpr int kSubsPerChunk = F::kChunk / F::kSub;

  // flatten: the static_for lambdas must be inlined (GCC outlines the large ones otherwise, and
  // the lane / shift immediates and the registers they hold go through a call).
  template <int R, int C>
  __attribute__((flatten)) static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    using Block = typename F::Block;
    const int64_t nb = a.k / kQKK;
    const Block* w[R];
    const block_q8_K* x[C];
    common::w_rows(a, r, rstep, w);
    common::x_cols(a, c, x);
    float32x4_t acc[C];  // lane i: row i
    for (int j = 0; j < C; ++j) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      if constexpr (R == 4 && C == 1) {
        EDGELLM_MCA_TILE("superblock-begin", R, C);
      }
      // Row by row: one row's scales, codes and sums are live at a time (the activation vectors
      // are reloaded from L1 for each row rather than held for all R).
      uint16x4_t dh = vdup_n_u16(0), mh = vdup_n_u16(0);  // the rows' f16 d and dm, lanes 0..R-1
      int32x4_t isum[C][R], msum[C][R];
      static_for<R>([&](auto I) {
        constexpr int i = decltype(I)::value;
        const Block& blk = w[i][b];
        KRow<kNSub> row;
        F::row(blk, row);
        const auto sc = Dot::template scales<kNSub>(row.sc);
        dh = vld1_lane_u16(F::d(blk), dh, i);
        if constexpr (F::kHasMins) {
          mh = vld1_lane_u16(F::dm(blk), mh, i);
          for (int j = 0; j < C; ++j) msum[j][i] = mins_dot<kNSub>(row.mins, bsums<kNSub>(x[j][b]));
        }
        for (int j = 0; j < C; ++j) isum[j][i] = vdupq_n_s32(0);
        static_for<kQKK / F::kChunk>([&](auto TC) {
          constexpr int T = decltype(TC)::value;
          int8x16_t wv[kVecs];
          F::template codes<T>(blk, wv);
          for (int j = 0; j < C; ++j) {
            const int8_t* xq = x[j][b].qs + T * F::kChunk;
            static_for<kSubsPerChunk>([&](auto SC) {
              constexpr int S = decltype(SC)::value;
              isum[j][i] = Dot::template sub<kPerSub, T * kSubsPerChunk + S, F::kMaxCode>(
                  isum[j][i], wv + S * kPerSub, xq + S * F::kSub, sc);
            });
          }
        });
      });
      const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(dh));
      const float32x4_t dm = vcvt_f32_f16(vreinterpret_f16_u16(mh));
      for (int j = 0; j < C; ++j) {
        float32x4_t t = vmulq_f32(dw, vcvtq_f32_s32(row_sums<R>(isum[j])));
        if constexpr (F::kHasMins) t = vfmsq_f32(t, dm, vcvtq_f32_s32(row_sums<R>(msum[j])));
        acc[j] = vfmaq_n_f32(acc[j], t, x[j][b].d);
      }
      if constexpr (R == 4 && C == 1) {
        EDGELLM_MCA_TILE("superblock-end", R, C);
      }
    }
    for (int j = 0; j < C; ++j) store_rows<R>(acc[j], common::y_at(a, c + j, r), rstep);
  }
};

}  // namespace
}  // namespace edgellm::neon_tiles
