// Reference attention: explicit scores, a plain softmax, then the weighted sum of V, in double.
#include <cmath>
#include <vector>

#include "kernels/reference/reference.h"
#include "quant/fp16.h"

namespace edgellm::ref {

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) {
  const KvView& kv = a.kv;
  const int64_t group = a.n_head / a.n_head_kv;
  const int64_t slot_stride = a.n_head_kv * a.head_dim;
  std::vector<double> scores;
  std::vector<double> acc(a.head_dim);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t qi = t / a.n_head, h = t % a.n_head, hk = h / group;
    const int64_t qp = a.pos[qi];
    const float* q = a.q + (qi * a.n_head + h) * a.head_dim;
    float* out = a.out + (qi * a.n_head + h) * a.head_dim;
    scores.clear();
    std::vector<int64_t> slots;
    for (int64_t kp = 0; kp <= qp; ++kp) {
      const bool visible = kv.window == 0 || qp - kp < kv.window || kp < kv.sinks;
      if (!visible) continue;
      int64_t slot = kp;
      if (kv.ring && kp >= kv.sinks) slot = kv.sinks + (kp - kv.sinks) % (kv.capacity - kv.sinks);
      const uint16_t* k = kv.k + slot * slot_stride + hk * a.head_dim;
      double s = 0.0;
      for (int64_t d = 0; d < a.head_dim; ++d) s += (double)q[d] * (double)half_to_float(k[d]);
      s *= a.scale;
      if (a.softcap > 0.0f) s = a.softcap * std::tanh(s / a.softcap);
      scores.push_back(s);
      slots.push_back(slot);
    }
    double max = -INFINITY;
    for (double s : scores) max = std::fmax(max, s);
    double sum = 0.0;
    for (double& s : scores) sum += (s = std::exp(s - max));
    for (int64_t d = 0; d < a.head_dim; ++d) acc[d] = 0.0;
    for (size_t j = 0; j < scores.size(); ++j) {
      const uint16_t* v = kv.v + slots[j] * slot_stride + hk * a.head_dim;
      for (int64_t d = 0; d < a.head_dim; ++d) acc[d] += scores[j] * (double)half_to_float(v[d]);
    }
    for (int64_t d = 0; d < a.head_dim; ++d) out[d] = scores.empty() ? 0.0f : (float)(acc[d] / sum);
  }
}

}  // namespace edgellm::ref
