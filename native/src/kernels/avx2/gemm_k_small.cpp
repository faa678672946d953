// AVX2 GEMV / small GEMM for the 256-weight super-block formats Q2_K, Q3_K and IQ4_XS (x Q8_K).
//
// One tile (SuperTile) serves the three: a super-block is 8 steps of 32 weights, each step two
// groups of 16 weights, one per 128-bit lane, with one sub-block scale per group. A format says
// where step t's two groups start (Format::group_offset: the x bytes to load), how their codes
// come out of the block (Format::codes), and supplies the sub-block scales as int16 so that one
// pshufb gives step t's pair of scales (Format::step_scales). Each step adds
// madd(maddubs(codes, x), scales) to an int32 sum per row and column; once per super-block the
// sum gets its corrections (Q2_K's mins, Q3_K's -4 offset, both from Q8_K's bsums) and its float
// scale d_w * d_x. The tiling is common::drive's, as for Q4_0 (decode 4 rows a quarter of the
// range apart), with row blocks for more than 4 columns (common::drive_row_blocks).
//
// Integer ranges: codes are 0..3 (Q2_K), 0..7 (Q3_K, stored unsigned with the -4 moved into the
// bsums correction) or the IQ4 book (-127..113, multiplied through the sign trick; neither the
// book nor Q8_K's codes hold -128, so either side's |.| fits a byte); a maddubs pair is at most
// 2 * 127 * 127 < 2^15, times a scale <= 32 and summed over 8 steps it stays far inside int32.
#include <immintrin.h>

#include <cstddef>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/gemm_common.h"
#include "kernels/common/gemm_tiling.h"
#include "quant/fp16.h"

namespace edgellm::avx2 {

namespace {

using common::w_rows;
using common::x_cols;

constexpr int kGemmRows = 2;  // as gemm.cpp's tiling
constexpr int kSteps = kQKK / 32;

// Sub-block scales of 16-weight sub-blocks (16 bytes, sub-block order) as int16 with the even
// sub-blocks in the low 128-bit lane and the odd ones in the high lane, so step t's pair
// (sub-blocks 2t, 2t+1, one per lane of the step's codes) is int16 element t of each lane.
inline __m256i even_odd_scales(__m128i bytes_signed) {
  const __m128i even_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(bytes_signed, even_odd));
}

// Step t's scales: int16 element t of each 128-bit lane of src, in all 8 int16 of that lane.
inline __m256i lane_scales(__m256i src, int t) {
  return _mm256_shuffle_epi8(src, _mm256_set1_epi16((short)(0x0100 + 0x0202 * t)));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- the formats ---------------------------------------------------------------------------
// Format::group_offset(t, lane) -> the first weight of step t's 16-weight group in that lane;
// Row prepare(block) -> what a row needs for all 8 steps; step_scales(row, t) -> the groups'
// scales as int16, 8 per lane; codes(block, row, t) -> step t's 32 codes, lane by lane;
// finish(...) folds one super-block's int32 sums into the float accumulator. kSigned: the codes
// are signed (the sign trick).

// Q2_K: weight 32t + l is bits 2(t%4) of qs[32(t/4) + l]; scales[j] = sc | m << 4 for sub-block j;
// y += d_x * (d * sum_j sc_j isum_j - dmin * sum_j m_j bsum_j).
struct Q2KFormat {
  using Block = block_q2_K;
  static constexpr bool kSigned = false;
  static constexpr int group_offset(int t, int lane) { return 32 * t + 16 * lane; }
  struct Row {
    __m256i scales;
    __m256i mins;  // int16 in sub-block order, for the bsums
  };
  static __m256i step_scales(const Row& row, int t) { return lane_scales(row.scales, t); }
  static Row prepare(const Block& b) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales));
    const __m128i low4 = _mm_set1_epi8(0x0F);
    return {even_odd_scales(_mm_and_si128(packed, low4)),
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low4))};
  }
  static __m256i codes(const Block& b, const Row&, int t) {
    const __m256i q = load256(b.qs + 32 * (t / 4));
    return _mm256_and_si256(_mm256_srli_epi16(q, 2 * (t % 4)), _mm256_set1_epi8(3));
  }
  static __m256 finish(const Block& b, const Row& row, const block_q8_K& x, __m256i isum, __m256 acc) {
    const __m256i msum = _mm256_madd_epi16(row.mins, load256(x.bsums));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(_cvtsh_ss(b.d) * x.d), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(_cvtsh_ss(b.dmin) * x.d), acc);
  }
};

// Q3_K: the low 2 bits as Q2_K, the third from bit t of hmask[l]; w = d * (sc - 32) * (q - 4) with
// q = low | third << 2 (0..7). The codes stay 0..7 and sum_j (sc_j - 32) * 4 * bsum_j comes off
// at the end.
struct Q3KFormat {
  using Block = block_q3_K;
  static constexpr bool kSigned = false;
  static constexpr int group_offset(int t, int lane) { return 32 * t + 16 * lane; }
  struct Row {
    __m256i scales;
    __m256i sc;     // sc - 32 as int16 in sub-block order, for the bsums
    __m256i hmask;
  };
  static __m256i step_scales(const Row& row, int t) { return lane_scales(row.scales, t); }
  // The 16 6-bit scales: low 4 bits of j < 8 in the low nibbles of bytes 0-7, of j >= 8 in their
  // high nibbles; the top 2 bits of j in bits 2(j/4) of byte 8 + j%4. Decoded in one register:
  // 16 bytes loaded from 2 before scales (the end of qs), so the load stays inside the block.
  static Row prepare(const Block& b) {
    static_assert(offsetof(block_q3_K, scales) >= 2 && offsetof(block_q3_K, scales) + 14 <= sizeof(block_q3_K),
                  "the 16-byte load around scales stays inside the block");
    const __m128i v = _mm_srli_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.scales - 2)), 2);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(v, low4), _mm_and_si128(_mm_srli_epi16(v, 4), low4));
    // Bytes 8-11 in each 32-bit lane g, shifted right by 2g, then bits 0-1 of each byte to 4-5.
    const __m128i top = _mm_shuffle_epi8(v, _mm_setr_epi8(8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11));
    const __m128i high = _mm_and_si128(_mm_slli_epi32(_mm_srlv_epi32(top, _mm_setr_epi32(0, 2, 4, 6)), 4), _mm_set1_epi8(0x30));
    const __m128i sc = _mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32));
    return {even_odd_scales(sc), _mm256_cvtepi8_epi16(sc), load256(b.hmask)};
  }
  static __m256i codes(const Block& b, const Row& row, int t) {
    const __m256i low = _mm256_and_si256(_mm256_srli_epi16(load256(b.qs + 32 * (t / 4)), 2 * (t % 4)), _mm256_set1_epi8(3));
    // Bit t of each hmask byte moved to bit 2 (16-bit shifts: the mask keeps bit 2 of each byte,
    // which comes from the same byte for t <= 7).
    const __m256i third = t >= 2 ? _mm256_srli_epi16(row.hmask, t - 2) : _mm256_slli_epi16(row.hmask, 2 - t);
    return _mm256_or_si256(low, _mm256_and_si256(third, _mm256_set1_epi8(4)));
  }
  static __m256 finish(const Block& b, const Row& row, const block_q8_K& x, __m256i isum, __m256 acc) {
    const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(row.sc, load256(x.bsums)), 2);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum, offset)),
                           _mm256_set1_ps(_cvtsh_ss(b.d) * x.d), acc);
  }
};

// IQ4_XS: 8 sub-blocks of 32, codes from the IQ4 book by nibble as IQ4_NL (weight j of
// sub-block u: low nibble of qs[16u + j] for j < 16, high nibble of qs[16u + j - 16]), scale
// ls - 32 with ls = nibble u%2 of scales_l[u/2] | bits 2u..2u+1 of scales_h << 4.
// Steps 2p and 2p+1 share one 32-byte load of sub-blocks 2p and 2p+1: step 2p takes the low
// nibbles (weights 0-15 of each sub-block, one sub-block per lane), step 2p+1 the high ones; the
// x groups follow, and both steps take scales [ls_2p x 8 | ls_2p+1 x 8].
struct Iq4XsFormat {
  using Block = block_iq4_xs;
  static constexpr bool kSigned = true;
  static constexpr int group_offset(int t, int lane) { return 64 * (t / 2) + 32 * lane + 16 * (t % 2); }
  struct Row {
    __m256i scales;
  };
  // ls - 32 of the even sub-blocks in bytes 0-3, of the odd ones in bytes 4-7, worked out in
  // 32-bit integer registers (the vector ports are this kernel's bottleneck), as int16 in both
  // lanes; step t takes element t/2 in the low lane and 4 + t/2 in the high one.
  static Row prepare(const Block& b) {
    uint32_t sl;
    __builtin_memcpy(&sl, b.scales_l, 4);
    // The 4 nibbles of scales_h in bytes 0-3: bits 2u, 2u+1 of ls_u's top in byte u/2, at 2(u%2).
    const uint32_t h = b.scales_h;
    const uint32_t h2 = (h & 0x00FF) | ((h & 0xFF00) << 8);
    const uint32_t top = (h2 & 0x000F000F) | ((h2 & 0x00F000F0) << 4);
    const uint32_t even = (sl & 0x0F0F0F0F) | ((top & 0x03030303) << 4);
    const uint32_t odd = ((sl >> 4) & 0x0F0F0F0F) | (((top >> 2) & 0x03030303) << 4);
    const __m128i ls = _mm_sub_epi8(_mm_cvtsi64_si128((long long)(even | (uint64_t)odd << 32)), _mm_set1_epi8(32));
    return {_mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(ls))};
  }
  static __m256i step_scales(const Row& row, int t) {
    const short p = (short)(t / 2);
    return _mm256_shuffle_epi8(row.scales, _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * p)),
                                                             _mm_set1_epi16((short)(0x0100 + 0x0202 * (4 + p)))));
  }
  static __m256i codes(const Block& b, const Row&, int t) {
    const __m256i book = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kValuesIq4nl)));
    const __m256i q = load256(b.qs + 32 * (t / 2));
    const __m256i n = _mm256_and_si256(t % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(book, n);
  }
  static __m256 finish(const Block& b, const Row&, const block_q8_K& x, __m256i isum, __m256 acc) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(_cvtsh_ss(b.d) * x.d), acc);
  }
};

// ---- the tile ------------------------------------------------------------------------------
template <class F>
struct SuperTile {
  using Block = typename F::Block;

  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQKK;
    const Block* w[R];
    const block_q8_K* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      typename F::Row row[R];
      for (int i = 0; i < R; ++i) {
        // A super-block spans 2 or 3 cache lines: prefetch 2 per block keeps ahead of the stream.
        prefetch_ahead(&w[i][b]);
        prefetch_ahead(reinterpret_cast<const uint8_t*>(&w[i][b]) + 64);
        row[i] = F::prepare(w[i][b]);
      }
      __m256i isum[R][C];
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < C; ++j) isum[i][j] = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int t = 0; t < kSteps; ++t) {
        // Signed codes multiply as maddubs(|a|, b with a's sign): a is the weight when the tile
        // has more columns than rows, else the activation (its |x| then serves all R rows).
        constexpr bool kAbsX = C <= R;
        // A GEMM keeps each row's codes and scales in registers across its columns; decode
        // (C == 1) makes them where they are used, which keeps the 4 sums in registers.
        constexpr int kHeld = C > 1 ? R : 1;
        __m256i v[kHeld], v_abs[kHeld], sc[kHeld];
        auto unpack = [&](int i, int slot) {
          v[slot] = F::codes(w[i][b], row[i], t);
          if constexpr (F::kSigned && !kAbsX) v_abs[slot] = _mm256_abs_epi8(v[slot]);
          sc[slot] = F::step_scales(row[i], t);
        };
        if constexpr (C > 1)
          for (int i = 0; i < R; ++i) unpack(i, i);
        for (int j = 0; j < C; ++j) {
          const int8_t* xs = x[j][b].qs;
          const __m256i xq = F::group_offset(t, 1) == F::group_offset(t, 0) + 16
                                 ? load256(xs + F::group_offset(t, 0))
                                 : _mm256_inserti128_si256(
                                       _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xs + F::group_offset(t, 0)))),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(xs + F::group_offset(t, 1))), 1);
          __m256i x_abs = xq;
          if constexpr (F::kSigned && kAbsX) x_abs = _mm256_abs_epi8(xq);
          for (int i = 0; i < R; ++i) {
            const int slot = C > 1 ? i : 0;
            if constexpr (C == 1) unpack(i, 0);
            __m256i p;
            if constexpr (!F::kSigned) p = _mm256_maddubs_epi16(v[slot], xq);
            else if constexpr (kAbsX) p = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(v[slot], xq));
            else p = _mm256_maddubs_epi16(v_abs[slot], _mm256_sign_epi8(xq, v[slot]));
            isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(p, sc[slot]));
          }
        }
      }
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < C; ++j) acc[i][j] = F::finish(w[i][b], row[i], x[j][b], isum[i][j], acc[i][j]);
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]);
  }
};

}  // namespace

void gemm_q2_k(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive_row_blocks<SuperTile<Q2KFormat>, kGemmRows>(a, r0, r1); }
void gemm_q3_k(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive_row_blocks<SuperTile<Q3KFormat>, kGemmRows>(a, r0, r1); }
void gemm_iq4_xs(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive_row_blocks<SuperTile<Iq4XsFormat>, kGemmRows>(a, r0, r1);
}

}  // namespace edgellm::avx2
