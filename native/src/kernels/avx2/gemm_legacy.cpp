// AVX2 GEMV / small GEMM for the other 32-weight formats: Q4_1 and Q5_1 (x Q8_1), Q5_0 and IQ4_NL
// (x Q8_0), and the Q8_1 activation quantizer.
//
// One tile (LegacyTile) serves the four formats: a format only says how a block's 32 weight codes
// become 32 bytes in x order (Format::codes, Format::pair) and whether they are signed. The tiling
// is the Q4_0 one (common::drive: decode 4 rows a quarter of the range apart, GEMM 2 rows x 4
// columns, in row blocks for more than 4 columns: common::drive_row_blocks), and
// like Q4PairTile the tile takes blocks in pairs, one block per 128-bit lane, so the int32 sums
// are converted and scaled once per two blocks.
//
// Products: unsigned codes (Q4_1 0..15, Q5_1 0..31) go straight into maddubs (u8 x s8); signed
// codes (Q5_0 -16..15, IQ4_NL -127..113) through the sign trick (pair_products). Activation codes
// come from the Q8 quantizers and are never -128, and a pair of products is at most
// 2 * 127 * 127 < 2^15.
#include <immintrin.h>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/gemm_common.h"
#include "kernels/common/gemm_tiling.h"
#include "quant/fp16.h"

namespace edgellm::avx2 {

namespace {

using common::w_rows;
using common::x_cols;

constexpr int kGemmRows = 2;  // as gemm.cpp's tiling

// One block: the 16 bytes of qs broadcast to both 128-bit lanes; shifting the upper lane right by
// 4 and masking gives the 32 nibbles in x order (weight j low nibble of qs[j], j+16 high nibble).
inline __m256i nibbles(const uint8_t* qs) {
  const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  return _mm256_and_si256(_mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F));
}

// Two blocks, one per 128-bit lane: lo = weights 0-15 of b0 | of b1, hi = weights 16-31.
inline void nibble_pair(const uint8_t* qs0, const uint8_t* qs1, __m256i& lo, __m256i& hi) {
  const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs0))),
                                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs1)), 1);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  lo = _mm256_and_si256(q, low4);
  hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
}

inline int load_qh(const uint8_t* qh) {
  uint32_t bits;
  __builtin_memcpy(&bits, qh, 4);
  return (int)bits;
}

// Byte j of the result is 0xFF when bit j % 8 of byte `which[j]` of v is set, else 0; which is a
// pshufb mask picking each byte's source byte within its lane.
inline __m256i test_bits(__m256i v, __m256i which) {
  const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
  return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, which), bit), bit);
}

// Bit j of one block's 32-bit qh as byte j (0xFF set, 0 clear): x order.
inline __m256i fifth_bits(const uint8_t* qh) {
  return test_bits(_mm256_set1_epi32(load_qh(qh)),
                   _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
}

// Two blocks' fifth bits in nibble_pair's layout: lo = bits 0-15 of qh0 | of qh1, hi = 16-31.
inline void fifth_bit_pair(const uint8_t* qh0, const uint8_t* qh1, __m256i& lo, __m256i& hi) {
  const __m256i v = _mm256_setr_epi32(load_qh(qh0), 0, 0, 0, load_qh(qh1), 0, 0, 0);
  lo = test_bits(v, _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0000000000000000, 0x0101010101010101));
  hi = test_bits(v, _mm256_setr_epi64x(0x0202020202020202, 0x0303030303030303, 0x0202020202020202, 0x0303030303030303));
}

// ---- the formats ---------------------------------------------------------------------------
// Format::codes(block) -> the 32 weight codes in x order; Format::pair(b0, b1, lo, hi) -> those
// of two blocks in nibble_pair's layout. kSigned says how they multiply, kMaxCode bounds |code|,
// kMin says the block has an offset m (w = d * q + m) that meets Q8_1's s = d_x * sum(q_x).

struct Q4_1Format {
  using Block = block_q4_1;
  using XBlock = block_q8_1;
  static constexpr bool kSigned = false, kMin = true;
  static constexpr int kMaxCode = 15;
  static __m256i codes(const Block& b) { return nibbles(b.qs); }
  static void pair(const Block& b0, const Block& b1, __m256i& lo, __m256i& hi) { nibble_pair(b0.qs, b1.qs, lo, hi); }
};

// q = nibble | 16 where the fifth bit is set.
struct Q5_1Format {
  using Block = block_q5_1;
  using XBlock = block_q8_1;
  static constexpr bool kSigned = false, kMin = true;
  static constexpr int kMaxCode = 31;
  static __m256i codes(const Block& b) {
    return _mm256_or_si256(nibbles(b.qs), _mm256_and_si256(fifth_bits(b.qh), _mm256_set1_epi8(0x10)));
  }
  static void pair(const Block& b0, const Block& b1, __m256i& lo, __m256i& hi) {
    __m256i blo, bhi;
    nibble_pair(b0.qs, b1.qs, lo, hi);
    fifth_bit_pair(b0.qh, b1.qh, blo, bhi);
    lo = _mm256_or_si256(lo, _mm256_and_si256(blo, _mm256_set1_epi8(0x10)));
    hi = _mm256_or_si256(hi, _mm256_and_si256(bhi, _mm256_set1_epi8(0x10)));
  }
};

// q - 16 in two's complement: the nibble with 0xF0 above it where the fifth bit is clear.
struct Q5_0Format {
  using Block = block_q5_0;
  using XBlock = block_q8_0;
  static constexpr bool kSigned = true, kMin = false;
  static constexpr int kMaxCode = 16;
  static __m256i codes(const Block& b) {
    return _mm256_or_si256(nibbles(b.qs), _mm256_andnot_si256(fifth_bits(b.qh), _mm256_set1_epi8((char)0xF0)));
  }
  static void pair(const Block& b0, const Block& b1, __m256i& lo, __m256i& hi) {
    __m256i blo, bhi;
    nibble_pair(b0.qs, b1.qs, lo, hi);
    fifth_bit_pair(b0.qh, b1.qh, blo, bhi);
    lo = _mm256_or_si256(lo, _mm256_andnot_si256(blo, _mm256_set1_epi8((char)0xF0)));
    hi = _mm256_or_si256(hi, _mm256_andnot_si256(bhi, _mm256_set1_epi8((char)0xF0)));
  }
};

// The nibble indexes the 16-entry code book (one pshufb, the book in both lanes).
struct Iq4NlFormat {
  using Block = block_iq4_nl;
  using XBlock = block_q8_0;
  static constexpr bool kSigned = true, kMin = false;
  static constexpr int kMaxCode = 127;
  static __m256i book() {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kValuesIq4nl)));
  }
  static __m256i codes(const Block& b) { return _mm256_shuffle_epi8(book(), nibbles(b.qs)); }
  static void pair(const Block& b0, const Block& b1, __m256i& lo, __m256i& hi) {
    nibble_pair(b0.qs, b1.qs, lo, hi);
    lo = _mm256_shuffle_epi8(book(), lo);
    hi = _mm256_shuffle_epi8(book(), hi);
  }
};

// 16 int16 sums of adjacent products of weight codes w and activation codes x. Signed codes go
// through the sign trick, maddubs(|a|, b with a's sign), with a = x when kAbsX (|x| computed once
// per column serves all rows: decode) and a = w otherwise (|w| once per row serves all columns).
// Neither side is ever -128 (the IQ4 book's least value is -127), so |a| fits a byte.
template <bool kSigned, bool kAbsX>
inline __m256i pair_products(__m256i w, __m256i w_abs, __m256i x, __m256i x_abs) {
  if constexpr (!kSigned) return _mm256_maddubs_epi16(w, x);
  else if constexpr (kAbsX) return _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(w, x));
  else return _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
}

// ---- the tile ------------------------------------------------------------------------------
// acc[i][j] collects row i x column j as 8 float lanes: lanes 0-3 from the even block of each
// pair, 4-7 from the odd one (a lone last block uses all 8 with its own scale). The offsets of
// Q4_1 / Q5_1 (m_w * s_x, one product per row, column and block) go to mins[j], lane i = row i.
template <class F>
struct LegacyTile {
  using Block = typename F::Block;
  using XBlock = typename F::XBlock;

  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    static_assert(R >= 1 && R <= 4, "1 to 4 rows: 2 scales per row fill one 8-lane vector");
    const int64_t nb = a.k / kQK;
    const Block* w[R];
    const XBlock* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C], mins[C];
    for (int j = 0; j < C; ++j) {
      mins[j] = _mm256_setzero_ps();
      for (int i = 0; i < R; ++i) acc[i][j] = _mm256_setzero_ps();
    }
    const __m256i ones = _mm256_set1_epi16(1);
    constexpr bool kAbsX = F::kSigned && C <= R;
    auto offsets = [&](int64_t b) {  // mins[j] += m_w(rows) * s_x(column j) for block b
      if constexpr (F::kMin) {
        const __m256 m = halves_of_rows<R>(w, b, &Block::m);
        for (int j = 0; j < C; ++j) mins[j] = _mm256_fmadd_ps(m, _mm256_set1_ps(_cvtsh_ss(x[j][b].s)), mins[j]);
      }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      // Codes of blocks b (low lane) and b+1 (high lane): the low halves (weights 0-15) in lo,
      // the high halves (16-31) in hi, matching x loaded as [x_b 0-15 | x_b+1 0-15] and so on.
      // A GEMM keeps them in registers across its columns; decode (C == 1) builds each row's
      // where it is used, which keeps the 4 accumulators in registers.
      constexpr int kHeld = C > 1 ? R : 1;
      __m256i lo[kHeld], hi[kHeld], lo_abs[kHeld], hi_abs[kHeld];
      auto unpack = [&](int i, int slot) {
        F::pair(w[i][b], w[i][b + 1], lo[slot], hi[slot]);
        if constexpr (F::kSigned && !kAbsX) {
          lo_abs[slot] = _mm256_abs_epi8(lo[slot]);
          hi_abs[slot] = _mm256_abs_epi8(hi[slot]);
        }
      };
      for (int i = 0; i < R; ++i) {
        prefetch_ahead(&w[i][b]);
        if constexpr (C > 1) unpack(i, i);
      }
      // [w0 b, w0 b+1, w1 b, w1 b+1, ...]
      __m128i hw = _mm_cvtsi32_si128(w[0][b].d);
      hw = _mm_insert_epi16(hw, w[0][b + 1].d, 1);
      if constexpr (R > 1) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[1][b].d, 2), w[1][b + 1].d, 3);
      if constexpr (R > 2) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[2][b].d, 4), w[2][b + 1].d, 5);
      if constexpr (R > 3) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[3][b].d, 6), w[3][b + 1].d, 7);
      const __m256 dw = _mm256_cvtph_ps(hw);
      offsets(b);
      offsets(b + 1);
      for (int j = 0; j < C; ++j) {
        const __m256i xlo = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j][b].qs))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j][b + 1].qs)), 1);
        const __m256i xhi = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j][b].qs + 16))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[j][b + 1].qs + 16)), 1);
        __m256i xlo_abs = xlo, xhi_abs = xhi;
        if constexpr (kAbsX) {
          xlo_abs = _mm256_abs_epi8(xlo);
          xhi_abs = _mm256_abs_epi8(xhi);
        }
        // times [x b, x b+1, x b, x b+1, ...]
        const int xd = (int)(x[j][b].d | (uint32_t)x[j][b + 1].d << 16);
        const __m256 s = _mm256_mul_ps(dw, _mm256_cvtph_ps(_mm_set1_epi32(xd)));
        for (int i = 0; i < R; ++i) {
          const int slot = C > 1 ? i : 0;
          if constexpr (C == 1) unpack(i, 0);
          const __m256i plo = pair_products<F::kSigned, kAbsX>(lo[slot], lo_abs[slot], xlo, xlo_abs);
          const __m256i phi = pair_products<F::kSigned, kAbsX>(hi[slot], hi_abs[slot], xhi, xhi_abs);
          __m256i p;
          if constexpr (F::kMaxCode <= 31)  // 4 products of <= 31 * 127 each fit in int16
            p = _mm256_madd_epi16(_mm256_add_epi16(plo, phi), ones);
          else
            p = _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones));
          const __m256i lanes = _mm256_setr_epi32(2 * i, 2 * i, 2 * i, 2 * i, 2 * i + 1, 2 * i + 1, 2 * i + 1, 2 * i + 1);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(s, lanes), acc[i][j]);
        }
      }
    }
    if (b < nb) {  // a lone last block: all 32 codes in one register
      __m256i v[R], v_abs[R];
      for (int i = 0; i < R; ++i) {
        v[i] = F::codes(w[i][b]);
        if constexpr (F::kSigned && !kAbsX) v_abs[i] = _mm256_abs_epi8(v[i]);
      }
      const __m256 dw = scales<R>(w, b);
      offsets(b);
      for (int j = 0; j < C; ++j) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
        const __m256i xq_abs = kAbsX ? _mm256_abs_epi8(xq) : xq;
        const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(x[j][b].d)));
        for (int i = 0; i < R; ++i) {
          const __m256i p = _mm256_madd_epi16(pair_products<F::kSigned, kAbsX>(v[i], v_abs[i], xq, xq_abs), ones);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), broadcast_lane(s, i), acc[i][j]);
        }
      }
    }
    for (int j = 0; j < C; ++j) {
      alignas(32) float m[8];
      _mm256_store_ps(m, mins[j]);
      for (int i = 0; i < R; ++i) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]) + m[i];
    }
  }
};

}  // namespace

// ---- activations -> Q8_1 -------------------------------------------------------------------
// Bit-exact with quantize_row_q8_1_ref: the Q8_0 block (same d, same codes) and s = f16(d * sum),
// the sum of the 32 stored codes times the f32 d.
void quantize_row_q8_1(const float* x, block_q8_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    int sum = 0;
    const float d = quantize_q8_block(x + i * kQK, y[i].qs, &sum);
    y[i].d = float_to_half(d);
    y[i].s = float_to_half((float)sum * d);
  }
}

void gemm_q4_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive_row_blocks<LegacyTile<Q4_1Format>, kGemmRows>(a, r0, r1); }
void gemm_q5_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive_row_blocks<LegacyTile<Q5_0Format>, kGemmRows>(a, r0, r1); }
void gemm_q5_1(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive_row_blocks<LegacyTile<Q5_1Format>, kGemmRows>(a, r0, r1); }
void gemm_iq4_nl(const GemmArgs& a, int64_t r0, int64_t r1) {
  common::drive_row_blocks<LegacyTile<Iq4NlFormat>, kGemmRows>(a, r0, r1);
}

}  // namespace edgellm::avx2
