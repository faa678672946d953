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

  // q . k over d dims, k in f16. Never reads past k[d - 1].
  static float dot_f16(const float* q, const uint16_t* k, int64_t d) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= d; i += 16) {
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i))), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i + 8))), acc1);
    }
    for (; i + 8 <= d; i += 8)
      acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i),
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(k + i))), acc0);
    float s = hsum_ps(_mm256_add_ps(acc0, acc1));
    if (i + 4 <= d) {
      __m128 p = _mm_mul_ps(_mm_loadu_ps(q + i), _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(k + i))));
      p = _mm_add_ps(p, _mm_movehl_ps(p, p));
      s += _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
      i += 4;
    }
    for (; i < d; ++i) s += q[i] * half_to_float(k[i]);
    return s;
  }

  // acc += w * v over d dims, v in f16.
  static void axpy_f16(float* acc, float w, const uint16_t* v, int64_t d) {
    const __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
      _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vw, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(v + i))),
                                                _mm256_loadu_ps(acc + i)));
    if (i + 4 <= d) {
      _mm_storeu_ps(acc + i, _mm_fmadd_ps(_mm256_castps256_ps128(vw),
                                          _mm_cvtph_ps(_mm_loadl_epi64((const __m128i*)(v + i))),
                                          _mm_loadu_ps(acc + i)));
      i += 4;
    }
    for (; i < d; ++i) acc[i] += w * half_to_float(v[i]);
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
