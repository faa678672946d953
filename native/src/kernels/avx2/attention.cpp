// AVX2+F16C attention: the online-softmax pass of common/attention_online.h over these vector
// primitives (8 floats per vector; f16 K/V widened with vcvtph2ps).
#include <cstddef>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/vecmath.h"
#include "kernels/common/attention_online.h"
#include "quant/fp16.h"

namespace edgellm::avx2 {

namespace {

struct Ops {
  static constexpr int64_t kLanes = 8;
  static constexpr size_t kAlign = 32;

  // Key / value rows as the cache stores them (f16, one pointer per key): 8 dims at i of row j
  // widened to floats, and one dim.
  struct F16Rows {
    const uint16_t* const* r;
    __m256 load8(int64_t j, int64_t i) const {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[j] + i)));
    }
    float at(int64_t j, int64_t i) const { return half_to_float(r[j][i]); }
  };

  // out[j] = scale * (q . row j) for j < n: 4 keys at a time, one accumulator each (4
  // independent FMA chains instead of one latency-bound chain per key), one horizontal
  // reduction for the 4.
  template <class Rows>
  static void scores(const float* q, Rows k, int64_t n, int64_t d, float scale, float* out) {
    const int64_t d8 = d & ~(int64_t)7;
    for (int64_t j = 0; j < n; j += 4) {
      const int64_t m = n - j < 4 ? n - j : 4;  // a last group of 1-3 keys repeats key j
      const int64_t j1 = j + (m > 1 ? 1 : 0), j2 = j + (m > 2 ? 2 : 0), j3 = j + (m > 3 ? 3 : 0);
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t i = 0; i < d8; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, k.load8(j, i), a0);
        a1 = _mm256_fmadd_ps(qv, k.load8(j1, i), a1);
        a2 = _mm256_fmadd_ps(qv, k.load8(j2, i), a2);
        a3 = _mm256_fmadd_ps(qv, k.load8(j3, i), a3);
      }
      // hadd(hadd(a0, a1), hadd(a2, a3)): per 128-bit half the 4 keys' partial sums in order.
      const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
      alignas(16) float t[4];
      _mm_store_ps(t, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
      for (int64_t u = 0; u < m; ++u) {
        for (int64_t i = d8; i < d; ++i) t[u] += q[i] * k.at(j + u, i);
        out[j + u] = t[u] * scale;
      }
    }
  }

  // acc[i .. i + 8R) += sum_j p[j] row j [i ..]: R registers of the sum stay in registers across
  // the keys (R independent FMA chains), read and written once per call.
  template <int R, class Rows>
  static int64_t weighted_pass(float* acc, const float* p, Rows v, int64_t n, int64_t i) {
    __m256 r[R];
    for (int u = 0; u < R; ++u) r[u] = _mm256_loadu_ps(acc + i + 8 * u);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 w = _mm256_set1_ps(p[j]);
      for (int u = 0; u < R; ++u) r[u] = _mm256_fmadd_ps(w, v.load8(j, i + 8 * u), r[u]);
    }
    for (int u = 0; u < R; ++u) _mm256_storeu_ps(acc + i + 8 * u, r[u]);
    return i + 8 * R;
  }


  static void scores_f16(const float* q, const uint16_t* const* k, int64_t n, int64_t d, float scale, float* out) {
    scores(q, F16Rows{k}, n, d, scale, out);
  }
  static void weighted_sum_f16(float* acc, const float* p, const uint16_t* const* v, int64_t n, int64_t d) {
    common::weighted_sum_rows<Ops>(acc, p, F16Rows{v}, n, d);
  }


  // acc holds d floats in a buffer padded to a multiple of kLanes.
  static void scale_buf(float* acc, float s, int64_t d) {
    const __m256 vs = _mm256_set1_ps(s);
    for (int64_t i = 0; i < d; i += 8) _mm256_storeu_ps(acc + i, _mm256_mul_ps(_mm256_loadu_ps(acc + i), vs));
  }

  // score[j] = exp(score[j] - max) for j < n (a multiple of kLanes, score aligned); their sum.
  static float exp_sum(float* score, int64_t n, float max) {
    const __m256 vm = _mm256_set1_ps(max);
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += 8) {
      const __m256 p = exp_ps(_mm256_sub_ps(_mm256_load_ps(score + j), vm));
      _mm256_store_ps(score + j, p);
      vsum = _mm256_add_ps(vsum, p);
    }
    return hsum_ps(vsum);
  }
};

}  // namespace

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) { common::OnlineAttention<Ops>::run(a, t0, t1); }

}  // namespace edgellm::avx2
