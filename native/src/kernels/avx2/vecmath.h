// Vector math for the AVX2+FMA fast paths: exp, sigmoid, tanh and horizontal reductions over
// __m256. Only for files compiled with -mavx2 -mfma (kernels/avx2/).
//
// exp(x) = 2^n * e^r with n = round(x / ln2) and |r| <= ln2/2; e^r is a degree-7 polynomial
// (Cephes-style minimax coefficients), max error about 1-2 ulp on normal results. 2^n is
// applied as two factors 2^(n>>1) * 2^(n - (n>>1)) so that every n in [-159, 129] builds normal
// floats: results overflow to +inf above ~88.72, fall through the subnormals to +0 below
// ~-103.97, and -inf gives exactly 0. NaN stays NaN.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace edgellm::avx2 {

inline __m256 exp_ps(__m256 x) {
  const __m256 hi = _mm256_set1_ps(89.0f);    // e^89 overflows f32 anyway
  const __m256 lo = _mm256_set1_ps(-110.0f);  // e^-110 underflows to 0 anyway
  // Operand order keeps NaN: max/min return the second operand when either is NaN.
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n*ln2 with ln2 split in two so n*ln2_hi is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// 1 / (1 + e^-x), with a true division (the approximate reciprocal costs ~11 bits).
inline __m256 sigmoid_ps(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// tanh(x) = 2 * sigmoid(2x) - 1. Absolute error ~1e-7; relative error grows near 0, so callers
// that need 1 + tanh (GELU) should use sigmoid directly.
inline __m256 tanh_ps(__m256 x) {
  const __m256 two = _mm256_set1_ps(2.0f);
  return _mm256_fmsub_ps(two, sigmoid_ps(_mm256_mul_ps(two, x)), _mm256_set1_ps(1.0f));
}

inline float hsum_ps(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax_ps(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Lane mask for the first `n` (0..8) of 8 floats, for maskload/maskstore on tails.
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace edgellm::avx2
