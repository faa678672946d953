// What the AVX2 GEMM files (gemm.cpp, gemm_legacy.cpp, gemm_k_small.cpp) share: horizontal sums,
// the decode prefetch distance and the round-half-away-from-zero of the Q8 activation quantizers.
// Only for files compiled with -mavx2 -mfma -mf16c. In an anonymous namespace like
// common/gemm_tiling.h, so no inline function here is ever merged across ISA flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace edgellm::avx2 {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane i of v broadcast to all 8 lanes (i is a constant after unrolling).
inline __m256 broadcast_lane(__m256 v, int i) { return _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i)); }

// One f16 field (d, or m of Q4_1 / Q5_1) of block b of up to 4 rows as floats in lanes 0..R-1.
template <int R, class Block>
inline __m256 halves_of_rows(const Block* const* rows, int64_t b, uint16_t Block::*field) {
  static_assert(R >= 1 && R <= 4, "tiles have 1 to 4 rows");
  __m128i h = _mm_cvtsi32_si128(rows[0][b].*field);
  if constexpr (R > 1) h = _mm_insert_epi16(h, rows[1][b].*field, 1);
  if constexpr (R > 2) h = _mm_insert_epi16(h, rows[2][b].*field, 2);
  if constexpr (R > 3) h = _mm_insert_epi16(h, rows[3][b].*field, 3);
  return _mm256_cvtph_ps(h);
}
// The f16 scales d of block b of up to 4 rows.
template <int R, class Block>
inline __m256 scales(const Block* const* rows, int64_t b) {
  return halves_of_rows<R>(rows, b, &Block::d);
}

// Decode reads 4 weight streams (see common::drive); with the block math in between, the hardware
// prefetchers alone reach ~0.8 of single-stream read bandwidth. Prefetching 512 bytes ahead in
// each row (every block: the redundant hits are cheaper than a branch) brings it to ~0.9-1.0
// (measured on a 14336 x 4096 Q4_0 matrix; 256 is short, 512-1024 equal, 2048 worse).
constexpr int kPrefetchBytes = 512;
inline void prefetch_ahead(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
}

// round(s) with ties away from zero, as C's roundf (the Q8_0 / Q8_1 reference quantizers), done
// exactly as trunc(s) + (|s - trunc(s)| >= 0.5 ? sign(s) : 0) (s - trunc(s) is exact in f32),
// converted to int32.
inline __m256i round_half_away_epi32(__m256 s) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(s, t));
  const __m256 away = _mm256_or_ps(_mm256_and_ps(s, sign_bit), _mm256_set1_ps(1.0f));  // +-1, sign of s
  const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), away);
  return _mm256_cvtps_epi32(_mm256_add_ps(t, step));
}

// One 32-value block of activations quantized as quantize_row_q8_0_ref / _q8_1_ref do, bit for
// bit: d = max|x| / 127 in f32 (returned; the caller stores it as f16), the same products x * id
// (no FMA), q = round half away from zero. *qsum (when given) = sum of the 32 codes.
// max(|x|, amax) keeps amax when x is NaN, as fmax in the reference does.
inline float quantize_q8_block(const float* xb, int8_t* qs, int* qsum = nullptr) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  __m256 amax = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) {
    v[j] = _mm256_loadu_ps(xb + 8 * j);
    amax = _mm256_max_ps(_mm256_andnot_ps(sign_bit, v[j]), amax);
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  const float d = _mm_cvtss_f32(m) / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const __m256 vid = _mm256_set1_ps(id);
  __m256i q[4];
  for (int j = 0; j < 4; ++j) q[j] = round_half_away_epi32(_mm256_mul_ps(v[j], vid));
  // packs interleave the 128-bit lanes; the permutation restores element order.
  const __m256i q16a = _mm256_packs_epi32(q[0], q[1]);
  const __m256i q16b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), q8);
  if (qsum) {
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    *qsum = _mm_cvtsi128_si32(t);
  }
  return d;
}

}  // namespace
}  // namespace edgellm::avx2
