// ISA-neutral part of the fast top-k expert routers (avx2/router.cpp, neon/router.cpp): the
// selection and the final weights. A fast path supplies only the vectorized full-softmax
// denominator. Header-only, no intrinsics; in an anonymous namespace so each translation unit
// compiles its own copy with its own ISA flags (see common/gemm_tiling.h).
//
// The reference (reference/router.cpp) deliberately keeps its own, simpler selection: it is the
// definition the tests hold these paths to.
#pragma once
#include <cmath>
#include <cstdint>

namespace edgellm::common {
namespace {

// The k largest of logits[0..n_experts) into idx, largest first, ties to the lower index (the
// reference's choice). A scalar insertion into a sorted top-k list: idx[0..count) stays sorted
// by (logit descending, index ascending), and a new expert enters only if strictly larger than
// the current k-th, so an equal logit never displaces a lower index. Logits must not be NaN.
inline void select_topk(const float* logits, int64_t n_experts, int64_t k, int32_t* idx) {
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
}

// route_topk (kernels.h) for NaN-free logits. full_denom(max) returns sum over all experts of
// exp(logit - max), the only part worth vectorizing; the rest is computed in double as in the
// reference.
template <class FullDenom>
inline void route_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize, int32_t* idx,
                       float* weights, FullDenom full_denom) {
  select_topk(logits, n_experts, k, idx);
  const float max = logits[idx[0]];
  double denom = 0.0;
  if (renormalize) {
    for (int64_t j = 0; j < k; ++j) denom += std::exp((double)logits[idx[j]] - max);
  } else {
    denom = full_denom(max);
  }
  for (int64_t j = 0; j < k; ++j) weights[j] = (float)(std::exp((double)logits[idx[j]] - max) / denom);
}

}  // namespace
}  // namespace edgellm::common
