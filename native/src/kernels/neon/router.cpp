// NEON top-k expert routing. The selection (a scalar insertion, exactly the reference's
// choice) and the weights are in common/route_topk.h; the full-softmax denominator over up to
// 256 experts is the vectorized part, here.
#include <arm_neon.h>

#include <cmath>

#include "kernels/common/route_topk.h"
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

// sum over e of exp(logits[e] - max), the softmax denominator over all experts.
static double full_denom(const float* logits, int64_t n_experts, float max) {
  const float32x4_t vm = vdupq_n_f32(max);
  float32x4_t sum = vdupq_n_f32(0.0f);
  int64_t e = 0;
  for (; e + 4 <= n_experts; e += 4) sum = vaddq_f32(sum, exp_f32(vsubq_f32(vld1q_f32(logits + e), vm)));
  float s = vaddvq_f32(sum);
  for (; e < n_experts; ++e) s += std::exp(logits[e] - max);
  return s;
}

void route_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize, int32_t* idx,
                float* weights) {
  // NaN logits have no order; the reference's scan defines what happens, so defer to it.
  if (has_nan(logits, n_experts)) return ref::route_topk(logits, n_experts, k, renormalize, idx, weights);
  common::route_topk(logits, n_experts, k, renormalize, idx, weights,
                     [&](float max) { return full_denom(logits, n_experts, max); });
}

}  // namespace edgellm::neon
