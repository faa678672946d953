// AVX2+FMA element-wise and normalization ops. Tails (n % 8) go through masked loads/stores so
// every element takes the same vector code path.
#include <cmath>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/vecmath.h"

namespace edgellm::avx2 {

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 8) {
    const __m256 a = _mm256_maskload_ps(x + i, tail_mask(n - i));  // masked lanes read 0
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  const double ss = hsum_ps(_mm256_add_ps(acc0, acc1));
  const float scale = 1.0f / std::sqrt((float)(ss / (double)n) + eps);
  const __m256 vs = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vs);
    if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    _mm256_storeu_ps(y + i, v);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, m), vs);
    if (w) v = _mm256_mul_ps(v, _mm256_maskload_ps(w + i, m));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

// Products and sums are rounded in the reference's order, so results are bit-exact. No
// addsub and no scalar tail on purpose: GCC fuses mul+addsub (and the SLP-vectorized scalar
// pair update) into vfmaddsub even under -ffp-contract=off, which would round differently.
// Tails use masked loads/stores instead.
static inline __m256 neg_even_lanes(__m256 v) {
  return _mm256_xor_ps(v, _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0)));
}

// 4 adjacent pairs: v = [a0 b0 a1 b1 ..], cs = [c0 s0 c1 s1 ..]; m masks the live lanes.
static inline void rope_normal4(float* v, const float* cs, __m256i m) {
  const __m256 xv = _mm256_maskload_ps(v, m);
  const __m256 csv = _mm256_maskload_ps(cs, m);
  const __m256 c = _mm256_moveldup_ps(csv), s = _mm256_movehdup_ps(csv);
  const __m256 sw = _mm256_permute_ps(xv, 0xB1);  // [b0 a0 b1 a1 ..]
  // even lanes a*c + -(b*s), odd lanes b*c + a*s
  _mm256_maskstore_ps(v, m, _mm256_add_ps(_mm256_mul_ps(xv, c), neg_even_lanes(_mm256_mul_ps(sw, s))));
}

// 8 pairs (v[i], v[half + i]); cs (16 floats, 2*live of them read) deinterleaved into c and s.
static inline void rope_neox8(float* v0, float* v1, const float* cs, int64_t live) {
  const __m256i m = tail_mask(live);
  const __m256 lo = _mm256_maskload_ps(cs, tail_mask(2 * live));
  const __m256 hi = _mm256_maskload_ps(cs + 8, tail_mask(2 * live - 8));
  const __m256 c = _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
  const __m256 s = _mm256_castpd_ps(
      _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
  const __m256 a = _mm256_maskload_ps(v0, m), b = _mm256_maskload_ps(v1, m);
  _mm256_maskstore_ps(v0, m, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
  _mm256_maskstore_ps(v1, m, _mm256_add_ps(_mm256_mul_ps(a, s), _mm256_mul_ps(b, c)));
}

void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs, RopeMode mode) {
  const int64_t half = n_rot / 2;
  const __m256i all = _mm256_set1_epi32(-1);
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    int64_t i = 0;
    if (mode == RopeMode::Normal) {
      for (; i + 4 <= half; i += 4) rope_normal4(v + 2 * i, cs + 2 * i, all);
      if (i < half) rope_normal4(v + 2 * i, cs + 2 * i, tail_mask(2 * (half - i)));
    } else {
      for (; i < half; i += 8) rope_neox8(v + i, v + half + i, cs + 2 * i, half - i < 8 ? half - i : 8);
    }
  }
}

// Applies out = f(gate) * up over full vectors and a masked tail.
template <class F>
static inline void gated(const float* gate, const float* up, float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(f(_mm256_loadu_ps(gate + i)), _mm256_loadu_ps(up + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(out + i, m,
                        _mm256_mul_ps(f(_mm256_maskload_ps(gate + i, m)), _mm256_maskload_ps(up + i, m)));
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  gated(gate, up, out, n, [](__m256 g) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  });
}

// 0.5 * g * (1 + tanh(u)) == g * sigmoid(2u): the sigmoid form has no cancellation for g < 0.
void geglu(const float* gate, const float* up, float* out, int64_t n) {
  gated(gate, up, out, n, [](__m256 g) {
    const __m256 g2 = _mm256_mul_ps(g, g);
    const __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), g2, _mm256_set1_ps(1.0f));
    const __m256 u2 = _mm256_mul_ps(_mm256_mul_ps(g, _mm256_set1_ps(2.0f * 0.79788456080286535588f)), inner);
    return _mm256_mul_ps(g, sigmoid_ps(u2));
  });
}

void softmax(float* x, int64_t n) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float max = hmax_ps(vmax);
  for (; i < n; ++i) max = std::fmax(max, x[i]);
  const __m256 vm = _mm256_set1_ps(max);
  // The sum in double: over a 32k-152k vocabulary a float sum drops the small terms (log-probs
  // ~1e-5 off); the two widening adds are cheap beside the exp.
  __m256d sum_lo = _mm256_setzero_pd(), sum_hi = _mm256_setzero_pd();
  const auto add = [&](__m256 e) {
    sum_lo = _mm256_add_pd(sum_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    sum_hi = _mm256_add_pd(sum_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  };
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e);
    add(e);
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vm)),
                                   _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    add(e);
  }
  const __m256d s4 = _mm256_add_pd(sum_lo, sum_hi);
  const __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
  const __m256 inv = _mm256_set1_ps((float)(1.0 / _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)))));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
  }
}

void add(const float* a, const float* b, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(out + i, m, _mm256_add_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
  }
}

void scale(const float* a, float s, float* out, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), vs));
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_maskload_ps(a + i, m), vs));
  }
}

}  // namespace edgellm::avx2
