// AVX2 + FMA + F16C GEMV / small GEMM, the Q8_0 activation quantizer and the f16 row conversions.
//
// Every GEMM works on a register tile of R rows x C columns and walks the k dimension once per
// tile: the R weight rows (a few KiB) come from DRAM on the first column tile and from L1/L2 for
// the others, and the quantized x columns (<= 64 x k bytes) stay in L2. ncols == 1 (decode) uses
// 4 rows per tile so one x block load and its per-block prep serve four weight rows; the 4 rows
// are a quarter of the range apart so that each is its own sequential stream (see common::drive
// in common/gemm_tiling.h).
#include <immintrin.h>

#include <type_traits>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/gemm_common.h"
#include "kernels/common/gemm_tiling.h"
#include "quant/fp16.h"

namespace edgellm::avx2 {

namespace {

using common::w_rows;
using common::x_cols;

// The AVX2 tiling (common::drive): decode 4 rows a quarter of the range apart, GEMM 2 adjacent
// rows x 4 columns (Q8_0 and the float types; Q4_0 with 4 or more columns puts the columns in the
// vector lanes instead, gemm_q4_0_lanes.cpp).
constexpr int kGemmRows = 2;

// ---- Q4_0 x Q8_0 ---------------------------------------------------------------------------
// Both steps below compute maddubs(n, x) - maddubs(8, x) = sum (n - 8) x per byte pair from the
// unsigned nibbles n; the second term depends on x only and is shared by the R rows.

// One block: its 16 bytes are broadcast to both 128-bit lanes; shifting the upper lane right by
// 4 and masking gives the 32 nibbles in x order.
struct Q4Block {
  // acc[i][j] += the products of block b of rows w[i] and columns x[j].
  template <int R, int C>
  static void step(const block_q4_0* const* w, const block_q8_0* const* x, int64_t b, __m256 (&acc)[R][C]) {
    const __m256i lane_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i n[R];
    for (int i = 0; i < R; ++i) {
      prefetch_ahead(&w[i][b]);
      const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[i][b].qs)));
      n[i] = _mm256_and_si256(_mm256_srlv_epi32(q, lane_shift), low4);
    }
    const __m256 dw = scales<R>(w, b);
    for (int j = 0; j < C; ++j) {
      const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
      const __m256i x8 = _mm256_maddubs_epi16(eight, xq);
      const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(x[j][b].d)));
      for (int i = 0; i < R; ++i) {
        const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(n[i], xq), x8);
        const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
        acc[i][j] = _mm256_fmadd_ps(f, broadcast_lane(s, i), acc[i][j]);
      }
    }
  }
};

// Q4_0 over block pairs. The 16 nibble bytes of blocks b and b+1 of a row fill the two 128-bit
// lanes of one register (lane = block), so the low and the high nibbles each take one mask, and
// one madd / convert / FMA (with scales [s_b x4 | s_b+1 x4]) covers two blocks: per row, column
// and block pair that is 6 multiply-port uops instead of 10 for two single blocks (decode runs
// at ~0.8 ns per row-block from L2, well under the DRAM time; the GEMM gains ~1.3x).
// An odd last block goes through Q4Block.
struct Q4PairTile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    static_assert(R >= 1 && R <= 4, "1 to 4 rows: 2 scales per row fill one 8-lane vector");
    const int64_t nb = a.k / kQK;
    const block_q4_0* w[R];
    const block_q8_0* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i ones = _mm256_set1_epi16(1);
    auto pair = [](const void* p0, const void* p1) {
      return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p0))),
                                     _mm_loadu_si128(static_cast<const __m128i*>(p1)), 1);
    };
    auto scale_pair = [](const auto* blocks, int64_t b) {  // the f16 scales of b and b+1 as 2 x 16 bits
      return (int)(blocks[b].d | (uint32_t)blocks[b + 1].d << 16);
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      // Unpacked weights stay in registers across the columns of a GEMM; for decode (C == 1)
      // each row is unpacked right where it is used, which keeps the 4 accumulators in registers.
      __m256i lo[C > 1 ? R : 1], hi[C > 1 ? R : 1];
      auto unpack = [&](int i, __m256i& l, __m256i& h) {
        const __m256i q = pair(w[i][b].qs, w[i][b + 1].qs);
        l = _mm256_and_si256(q, low4);
        h = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
      };
      for (int i = 0; i < R; ++i) {
        prefetch_ahead(&w[i][b]);
        if constexpr (C > 1) unpack(i, lo[i], hi[i]);
      }
      // [w0 b, w0 b+1, w1 b, w1 b+1, ...]
      __m128i hw = _mm_cvtsi32_si128(w[0][b].d);
      hw = _mm_insert_epi16(hw, w[0][b + 1].d, 1);
      if constexpr (R > 1) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[1][b].d, 2), w[1][b + 1].d, 3);
      if constexpr (R > 2) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[2][b].d, 4), w[2][b + 1].d, 5);
      if constexpr (R > 3) hw = _mm_insert_epi16(_mm_insert_epi16(hw, w[3][b].d, 6), w[3][b + 1].d, 7);
      const __m256 dw = _mm256_cvtph_ps(hw);
      for (int j = 0; j < C; ++j) {
        const __m256i xlo = pair(x[j][b].qs, x[j][b + 1].qs);
        const __m256i xhi = pair(x[j][b].qs + 16, x[j][b + 1].qs + 16);
        const __m256i x8 = _mm256_add_epi16(_mm256_maddubs_epi16(eight, xlo), _mm256_maddubs_epi16(eight, xhi));
        // times [x b, x b+1, x b, x b+1, ...]
        const __m256 s = _mm256_mul_ps(dw, _mm256_cvtph_ps(_mm_set1_epi32(scale_pair(x[j], b))));
        for (int i = 0; i < R; ++i) {
          __m256i l, h;
          if constexpr (C > 1) {
            l = lo[i];
            h = hi[i];
          } else {
            unpack(i, l, h);
          }
          const __m256i p = _mm256_sub_epi16(
              _mm256_add_epi16(_mm256_maddubs_epi16(l, xlo), _mm256_maddubs_epi16(h, xhi)), x8);
          const __m256i lanes = _mm256_setr_epi32(2 * i, 2 * i, 2 * i, 2 * i, 2 * i + 1, 2 * i + 1, 2 * i + 1, 2 * i + 1);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),
                                      _mm256_permutevar8x32_ps(s, lanes), acc[i][j]);
        }
      }
    }
    if (b < nb) Q4Block::step<R, C>(w, x, b, acc);
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]);
  }
};

// ---- Q8_0 x Q8_0 ---------------------------------------------------------------------------
// maddubs needs one unsigned operand: |w| times x carrying w's sign. x comes from our quantizer
// and is never -128, so sign(x, w) cannot overflow.
struct Q8Tile {
  template <int R, int C>
  static void run(const GemmArgs& a, int64_t r, int64_t c, int64_t rstep = 1) {
    const int64_t nb = a.k / kQK;
    const block_q8_0* w[R];
    const block_q8_0* x[C];
    w_rows(a, r, rstep, w);
    x_cols(a, c, x);
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; ++b) {
      __m256i wq[R], wabs[R];
      for (int i = 0; i < R; ++i) prefetch_ahead(&w[i][b]);
      for (int i = 0; i < R; ++i) {
        wq[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i][b].qs));
        wabs[i] = _mm256_abs_epi8(wq[i]);
      }
      const __m256 dw = scales<R>(w, b);
      for (int j = 0; j < C; ++j) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
        const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(x[j][b].d)));
        for (int i = 0; i < R; ++i) {
          const __m256i p = _mm256_maddubs_epi16(wabs[i], _mm256_sign_epi8(xq, wq[i]));
          const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
          acc[i][j] = _mm256_fmadd_ps(f, broadcast_lane(s, i), acc[i][j]);
        }
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) a.y[(c + j) * a.y_col_stride + r + i * rstep] = hsum(acc[i][j]);
  }
};

// ---- float weights (common::FloatTile) ----------------------------------------------------
struct Vec8 {
  using V = __m256;
  static constexpr int kLanes = 8;
  static __m256 zero() { return _mm256_setzero_ps(); }
  static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 fma(__m256 acc, __m256 w, __m256 x) { return _mm256_fmadd_ps(w, x, acc); }
  static float hsum(__m256 v) { return avx2::hsum(v); }
};
struct LoadF32 {
  using T = float;
  static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
  static float load1(const T* p) { return *p; }
};
struct LoadF16 {
  using T = uint16_t;
  static __m256 load(const T* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static float load1(const T* p) { return half_to_float(*p); }
};
struct LoadBF16 {
  using T = uint16_t;
  static __m256 load(const T* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static float load1(const T* p) { return bf16_to_float(*p); }
};
template <class L>
using FloatTile = common::FloatTile<Vec8, L>;

}  // namespace

// ---- activations -> Q8_0 -------------------------------------------------------------------
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) y[i].d = float_to_half(quantize_q8_block(x + i * kQK, y[i].qs));
}

// 1 column: the streaming GEMV; 2-3: the same streaming tiling with every column in the tile
// (faster than the lane GEMM, whose per-block tail is not amortized over so few products);
// 4 or more: the columns in the vector lanes (gemm_q4_0_lanes.cpp).
void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) {
  if (a.ncols >= 4) {
    gemm_q4_0_lanes(a, r0, r1);
    return;
  }
  if (a.ncols >= 2) {
    gemm_q4_0_few_cols(a, r0, r1);
    return;
  }
  common::drive<Q4PairTile, kGemmRows>(a, r0, r1);
}
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<Q8Tile, kGemmRows>(a, r0, r1); }

// 2 or 3 columns (as many sequences decoding together): the decode tiling (4 rows a quarter of
// the range apart, each its own sequential stream) with every column in the tile, so the step
// stays a streaming pass over the weights.
void gemm_q4_0_few_cols(const GemmArgs& a, int64_t r0, int64_t r1) {
  auto tile = [&](auto rows, int64_t r, int64_t rstep) {
    constexpr int R = decltype(rows)::value;
    switch (a.ncols) {
      case 2: Q4PairTile::run<R, 2>(a, r, 0, rstep); break;
      case 3: Q4PairTile::run<R, 3>(a, r, 0, rstep); break;
      default: {
        GemmArgs one = a;
        one.ncols = 1;
        for (int64_t c = 0; c < a.ncols; ++c) {
          one.x = static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes;
          one.y = a.y + c * a.y_col_stride;
          Q4PairTile::run<R, 1>(one, r, 0, rstep);
        }
      }
    }
  };
  const int64_t q = (r1 - r0) / 4;
  for (int64_t i = 0; i < q; ++i) tile(std::integral_constant<int, 4>{}, r0 + i, q);
  for (int64_t r = r0 + 4 * q; r < r1; ++r) tile(std::integral_constant<int, 1>{}, r, 1);
}
void gemm_f16(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadF16>, kGemmRows>(a, r0, r1); }
void gemm_bf16(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadBF16>, kGemmRows>(a, r0, r1); }
void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) { common::drive<FloatTile<LoadF32>, kGemmRows>(a, r0, r1); }

// ---- f16 rows ------------------------------------------------------------------------------
// F16C rounds to nearest even like float_to_half; only NaN differs (F16C keeps payload bits,
// the scalar conversion returns the canonical quiet NaN 0x7E00 with the input's sign).
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  const __m128i abs_mask = _mm_set1_epi16(0x7FFF);
  const __m128i inf = _mm_set1_epi16(0x7C00);
  const __m128i qnan = _mm_set1_epi16(0x7E00);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i mag = _mm_and_si128(h, abs_mask);
    const __m128i is_nan = _mm_cmpgt_epi16(mag, inf);
    h = _mm_blendv_epi8(h, _mm_or_si128(_mm_andnot_si128(abs_mask, h), qnan), is_nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), h);
  }
  for (; i < n; ++i) y[i] = float_to_half(x[i]);
}

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; ++i) y[i] = half_to_float(x[i]);
}

}  // namespace edgellm::avx2
