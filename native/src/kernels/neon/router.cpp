// NEON top-k expert routing. The selection is a scalar insertion into a sorted top-k list, which
// yields exactly the reference's choice (largest logits, ties to the lower index, descending);
// the full-softmax denominator over up to 256 experts is the vectorized part.
#include <arm_neon.h>

#include <cmath>

#include "kernels/neon/neon.h"
#include "kernels/neon/vecmath.h"
#include "kernels/reference/reference.h"

namespace edgellm::neon {

static bool has_nan(const float* x, int64_t n) {
  uint32x4_t ordered = vdupq_n_u32(~0u);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    ordered = vandq_u32(ordered, vceqq_f32(v, v));
  }
  bool any = vminvq_u32(ordered) == 0;
  for (; i < n; ++i) any |= std::isnan(x[i]);
  return any;
}

void route_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize, int32_t* idx,
                float* weights) {
  // NaN logits have no order; the reference's scan defines what happens, so defer to it.
  if (has_nan(logits, n_experts)) return ref::route_topk(logits, n_experts, k, renormalize, idx, weights);

  // idx[0..count) stays sorted by (logit descending, index ascending). A new expert enters only
  // if strictly larger than the current k-th, so an equal logit never displaces a lower index.
  int64_t count = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    const float l = logits[e];
    int64_t p;
    if (count < k) {
      p = count++;
    } else {
      if (!(l > logits[idx[k - 1]])) continue;
      p = k - 1;
    }
    while (p > 0 && l > logits[idx[p - 1]]) {
      idx[p] = idx[p - 1];
      --p;
    }
    idx[p] = (int32_t)e;
  }

  const float max = logits[idx[0]];
  double denom = 0.0;
  if (renormalize) {
    for (int64_t j = 0; j < k; ++j) denom += std::exp((double)logits[idx[j]] - max);
  } else {
    const float32x4_t vm = vdupq_n_f32(max);
    float32x4_t sum = vdupq_n_f32(0.0f);
    int64_t e = 0;
    for (; e + 4 <= n_experts; e += 4) sum = vaddq_f32(sum, exp_f32(vsubq_f32(vld1q_f32(logits + e), vm)));
    float s = vaddvq_f32(sum);
    for (; e < n_experts; ++e) s += std::exp(logits[e] - max);
    denom = s;
  }
  for (int64_t j = 0; j < k; ++j) weights[j] = (float)(std::exp((double)logits[idx[j]] - max) / denom);
}

}  // namespace edgellm::neon
