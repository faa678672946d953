// Reference top-k expert routing. Softmax is monotonic, so the top k of the probabilities are
// the top k of the logits: selecting on logits makes the choice identical on every ISA.
#include <cmath>

#include "kernels/reference/reference.h"

namespace edgellm::ref {

void route_topk(const float* logits, int64_t n_experts, int64_t k, bool renormalize, int32_t* idx,
                float* weights) {
  // Selection: k passes, each takes the largest remaining logit, lower index on ties.
  bool taken[256] = {};
  for (int64_t j = 0; j < k; ++j) {
    int64_t best = -1;
    for (int64_t e = 0; e < n_experts; ++e) {
      if (taken[e]) continue;
      if (best < 0 || logits[e] > logits[best]) best = e;
    }
    taken[best] = true;
    idx[j] = (int32_t)best;
  }
  const float max = logits[idx[0]];
  double denom = 0.0;
  if (renormalize) {
    for (int64_t j = 0; j < k; ++j) denom += std::exp((double)logits[idx[j]] - max);
  } else {
    for (int64_t e = 0; e < n_experts; ++e) denom += std::exp((double)logits[e] - max);
  }
  for (int64_t j = 0; j < k; ++j) weights[j] = (float)(std::exp((double)logits[idx[j]] - max) / denom);
}

}  // namespace edgellm::ref
