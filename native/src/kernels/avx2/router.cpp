// AVX2 top-k expert routing. The selection (a scalar insertion, exactly the reference's
// choice) and the weights are in common/route_topk.h; the full-softmax denominator over up to
// 256 experts is the vectorized part, here.
#include <cmath>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/vecmath.h"
#include "kernels/common/route_topk.h"
#include "kernels/reference/reference.h"

namespace edgellm::avx2 {

static bool has_nan(const float* x, int64_t n) {
  __m256 unord = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  bool any = _mm256_movemask_ps(unord) != 0;
  for (; i < n; ++i) any |= std::isnan(x[i]);
  return any;
}

// sum over e of exp(logits[e] - max), the softmax denominator over all experts.
static double full_denom(const float* logits, int64_t n_experts, float max) {
  const __m256 vm = _mm256_set1_ps(max);
  __m256 sum = _mm256_setzero_ps();
  int64_t e = 0;
  for (; e + 8 <= n_experts; e += 8) sum = _mm256_add_ps(sum, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(logits + e), vm)));
  if (e < n_experts) {
    const __m256i m = tail_mask(n_experts - e);
    const __m256 t = exp_ps(_mm256_sub_ps(_mm256_maskload_ps(logits + e, m), vm));
    sum = _mm256_add_ps(sum, _mm256_and_ps(t, _mm256_castsi256_ps(m)));
  }
  return hsum_ps(sum);
}

void route_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize, int32_t* idx,
                float* weights) {
  // NaN logits have no order; the reference's scan defines what happens, so defer to it.
  if (has_nan(logits, n_experts)) return ref::route_topk(logits, n_experts, k, renormalize, idx, weights);
  common::route_topk(logits, n_experts, k, renormalize, idx, weights,
                     [&](float max) { return full_denom(logits, n_experts, max); });
}

}  // namespace edgellm::avx2
