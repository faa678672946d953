#include "runtime/trace.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "quant/fp16.h"

namespace edgellm {

namespace {

std::string str(int64_t v) { return std::to_string((long long)v); }

// Each index in [0, n), none twice; `what` names them in the error ("layer", "head").
void check_indices(const std::vector<int64_t>& v, int64_t n, const char* what) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0 || v[i] >= n)
      throw std::invalid_argument(std::string(what) + " " + str(v[i]) + " is out of range: the model has " + str(n) + " " +
                                  what + "s (0.." + str(n - 1) + ")");
    for (size_t j = 0; j < i; ++j)
      if (v[j] == v[i]) throw std::invalid_argument(std::string(what) + " " + str(v[i]) + " is listed twice");
  }
}

// Query qi's attention for head h over key positions 0..pos[qi], computed as the reference kernel
// does (double, the cached f16 keys, visibility, scale, soft-cap): row gets the probabilities (0 for
// keys it does not see). Returns the largest |sum p * V - a.out| over the head's dims.
double attention_row(const AttentionArgs& a, int64_t qi, int64_t h, float* row, std::vector<double>& p,
                     std::vector<char>& seen) {
  const KvView& kv = a.kv;
  const int64_t hd = a.head_dim, hk = h / (a.n_head / a.n_head_kv), stride = a.n_head_kv * hd;
  const int64_t qp = a.pos[qi];
  const float* q = a.q + (qi * a.n_head + h) * hd;
  auto slot_of = [&kv](int64_t kp) {
    return kv.ring && kp >= kv.sinks ? kv.sinks + (kp - kv.sinks) % (kv.capacity - kv.sinks) : kp;
  };
  p.assign((size_t)(qp + 1), 0.0);
  seen.assign((size_t)(qp + 1), 0);
  double max = -INFINITY;
  for (int64_t kp = 0; kp <= qp; ++kp) {
    if (!(kv.window == 0 || qp - kp < kv.window || kp < kv.sinks)) continue;
    const uint16_t* k = kv.k + slot_of(kp) * stride + hk * hd;
    double s = 0.0;
    for (int64_t d = 0; d < hd; ++d) s += (double)q[d] * (double)half_to_float(k[d]);
    s *= a.scale;
    if (a.softcap > 0.0f) s = a.softcap * std::tanh(s / a.softcap);
    p[(size_t)kp] = s;
    seen[(size_t)kp] = 1;
    max = std::fmax(max, s);
  }
  double sum = 0.0;
  for (int64_t kp = 0; kp <= qp; ++kp)
    if (seen[(size_t)kp]) sum += (p[(size_t)kp] = std::exp(p[(size_t)kp] - max));
  for (int64_t kp = 0; kp <= qp; ++kp) {
    p[(size_t)kp] = seen[(size_t)kp] ? p[(size_t)kp] / sum : 0.0;
    row[kp] = (float)p[(size_t)kp];
  }
  const float* out = a.out + (qi * a.n_head + h) * hd;
  double err = 0.0;
  for (int64_t d = 0; d < hd; ++d) {
    double acc = 0.0;
    for (int64_t kp = 0; kp <= qp; ++kp)
      if (seen[(size_t)kp]) acc += p[(size_t)kp] * (double)half_to_float(kv.v[slot_of(kp) * stride + hk * hd + d]);
    err = std::fmax(err, std::fabs(acc - (double)out[d]));
  }
  return err;
}

// Copies what the pass reports into a Trace of T positions (one sequence).
class TraceRecorder final : public ForwardObserver {
 public:
  TraceRecorder(const ModelConfig& c, const TraceRequest& r, int64_t T, Trace& out)
      : D_(c.n_embd), T_(T), heads_(r.heads), out_(out), kept_((size_t)c.n_layer, -1) {
    const int64_t H = (int64_t)heads_.size();
    for (size_t i = 0; i < r.layers.size(); ++i) {
      kept_[(size_t)r.layers[i]] = (int64_t)i;
      LayerTrace lt;
      lt.layer = r.layers[i];
      lt.attention.assign((size_t)(H * T * T), 0.0f);
      lt.hidden.assign((size_t)(T * D_), 0.0f);
      out_.layers.push_back(std::move(lt));
    }
    out_.final_norm.assign((size_t)(T * D_), 0.0f);
  }

  void attention(int64_t layer, const AttentionArgs& a) override {
    const int64_t li = kept_[(size_t)layer];
    if (li < 0) return;
    float* att = out_.layers[(size_t)li].attention.data();
    for (int64_t qi = 0; qi < a.n_q; ++qi)
      for (size_t hi = 0; hi < heads_.size(); ++hi) {
        float* row = att + ((int64_t)hi * T_ + a.pos[qi]) * T_;
        out_.attention_error = std::fmax(out_.attention_error, attention_row(a, qi, heads_[hi], row, p_, seen_));
      }
  }

  void layer_output(int64_t layer, const int64_t* pos, const float* x, int64_t n) override {
    const int64_t li = kept_[(size_t)layer];
    if (li < 0) return;
    float* hidden = out_.layers[(size_t)li].hidden.data();
    for (int64_t i = 0; i < n; ++i) std::copy(x + i * D_, x + (i + 1) * D_, hidden + pos[i] * D_);
  }

  void final_norm(int64_t pos, const float* x) override { std::copy(x, x + D_, &out_.final_norm[(size_t)(pos * D_)]); }

 private:
  int64_t D_, T_;
  const std::vector<int64_t>& heads_;
  Trace& out_;
  std::vector<int64_t> kept_;  // layer -> index in out_.layers, -1 when not kept
  std::vector<double> p_;
  std::vector<char> seen_;
};

}  // namespace

Trace run_trace(ForwardPass& forward, const TraceRequest& r) {
  const ModelConfig& c = forward.model().config();
  if (c.arch == Arch::Deepseek2)
    throw ModelError("E_MODEL_UNSUPPORTED",
                     "edgellm trace does not run deepseek2: its latent attention (MLA) keeps no per-head keys to "
                     "show; trace a llama, qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3, olmoe or smollm3 model");
  if (r.prompt.empty()) throw std::invalid_argument("the trace needs at least one prompt token");
  if (r.generate < 0) throw std::invalid_argument("generate must be >= 0, got " + str(r.generate));
  check_indices(r.layers, c.n_layer, "layer");
  check_indices(r.heads, c.n_head, "head");

  const int64_t n = (int64_t)r.prompt.size(), T = n + r.generate, V = c.n_vocab;
  Trace t;
  t.tokens = r.prompt;
  t.n_prompt = n;
  t.logits.resize((size_t)(T * V));
  KvCache seq(forward.cache_config());
  TraceRecorder recorder(c, r, T, t);
  struct Detach {  // the pass reports to nobody once the trace ends, thrown or not
    ForwardPass& f;
    ~Detach() { f.set_observer(nullptr); }
  } detach{forward};
  forward.set_observer(&recorder);
  forward.prefill(seq, r.prompt.data(), n, true, t.logits.data());
  for (int64_t g = 0; g < r.generate; ++g) {  // greedy: the largest logit, the lower id on ties
    const float* last = &t.logits[(t.tokens.size() - 1) * (size_t)V];
    const int32_t next = (int32_t)(std::max_element(last, last + V) - last);
    const BatchToken b{&seq, (int64_t)t.tokens.size(), next, true};
    t.tokens.push_back(next);
    forward.step(&b, 1, &t.logits[(t.tokens.size() - 1) * (size_t)V]);
  }
  return t;
}

}  // namespace edgellm
