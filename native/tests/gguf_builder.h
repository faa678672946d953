// Builds small GGUF v3 images in memory (tests, the decode benchmark's random models).
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant_blocks.h"

namespace edgellm::test {

class GgufBuilder {
 public:
  void u32(const std::string& key, uint32_t v) { kv_key(key, 4); put(v); ++n_kv_; }
  void f32(const std::string& key, float v) { kv_key(key, 6); put(v); ++n_kv_; }
  void str(const std::string& key, const std::string& v) { kv_key(key, 8); put_str(v); ++n_kv_; }

  // A tensor of ggml shape ne (ne[0] contiguous) from f32 values, stored as `type`.
  void tensor(const std::string& name, std::vector<int64_t> ne, DType type, const std::vector<float>& x) {
    const int64_t row = ne[0];
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    std::vector<uint8_t> bytes(dtype_row_bytes(type, row) * (size_t)(n / row));
    for (int64_t r = 0; r < n / row; ++r)
      quantize_row(type, x.data() + r * row, bytes.data() + (size_t)r * dtype_row_bytes(type, row), row);
    tensors_.push_back({name, std::move(ne), type, std::move(bytes)});
  }

  // Replaces an added tensor's values (same shape and type); false when there is no such tensor.
  bool retensor(const std::string& name, const std::vector<float>& x) {
    for (T& t : tensors_) {
      if (t.name != name) continue;
      const int64_t row = t.ne[0];
      for (size_t r = 0; r < x.size() / (size_t)row; ++r)
        quantize_row(t.type, x.data() + r * (size_t)row, t.data.data() + r * dtype_row_bytes(t.type, row), row);
      return true;
    }
    return false;
  }

  // A tensor stored as the given bytes of `type` (whole rows of ne[0] elements).
  void tensor_bytes(const std::string& name, std::vector<int64_t> ne, DType type, std::vector<uint8_t> data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data)});
  }

  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out;
    auto w = [&out](const void* p, size_t n) { out.insert(out.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
    w("GGUF", 4);
    const uint32_t version = 3;
    w(&version, 4);
    const uint64_t nt = tensors_.size(), nkv = n_kv_;
    w(&nt, 8);
    w(&nkv, 8);
    w(kv_.data(), kv_.size());
    uint64_t offset = 0;
    for (const T& t : tensors_) {
      const uint64_t len = t.name.size();
      w(&len, 8);
      w(t.name.data(), len);
      const uint32_t nd = (uint32_t)t.ne.size();
      w(&nd, 4);
      for (int64_t d : t.ne) {
        const uint64_t u = (uint64_t)d;
        w(&u, 8);
      }
      const uint32_t type = (uint32_t)t.type;
      w(&type, 4);
      w(&offset, 8);
      offset += (t.data.size() + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, 0);
    for (const T& t : tensors_) {
      w(t.data.data(), t.data.size());
      out.resize((out.size() + 31) / 32 * 32, 0);
    }
    return out;
  }

 private:
  struct T {
    std::string name;
    std::vector<int64_t> ne;
    DType type;
    std::vector<uint8_t> data;
  };
  template <class V>
  void put(V v) {
    const uint8_t* p = (const uint8_t*)&v;
    kv_.insert(kv_.end(), p, p + sizeof v);
  }
  void put_str(const std::string& s) {
    put((uint64_t)s.size());
    kv_.insert(kv_.end(), s.begin(), s.end());
  }
  void kv_key(const std::string& key, uint32_t type) {
    put_str(key);
    put(type);
  }
  std::vector<uint8_t> kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

// A random llama-architecture model: dims, GQA, optional sliding window and experts.
struct TinyLlamaSpec {
  int64_t n_vocab = 96, n_embd = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 96;
  int64_t n_expert = 0, n_expert_used = 0;
  int64_t sliding_window = 0;
  int64_t context = 256;
  DType matrix_type = DType::F32;
  // When set, the type of each matrix by tensor name (overrides matrix_type), stored as random
  // valid blocks (quant_blocks.h) instead of quantized values: any mix of types, no quantizer needed.
  std::function<DType(const std::string& name)> random_blocks_of;
  uint32_t seed = 1;
};

// n token ids in [0, vocab), the same for the same seed: prompts for the forward-pass tests.
inline std::vector<int32_t> some_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 r(seed);
  std::vector<int32_t> t((size_t)n);
  for (int32_t& x : t) x = (int32_t)(r() % (uint32_t)vocab);
  return t;
}

inline GgufBuilder tiny_llama(const TinyLlamaSpec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](int64_t n, float scale) {
    std::vector<float> v((size_t)n);
    for (float& x : v) x = nd(rng) * scale;
    return v;
  };
  auto ones = [&](int64_t n) {
    std::vector<float> v((size_t)n);
    for (float& x : v) x = 1.0f + 0.1f * nd(rng);
    return v;
  };
  GgufBuilder b;
  b.str("general.architecture", "llama");
  b.u32("llama.context_length", (uint32_t)s.context);
  b.u32("llama.embedding_length", (uint32_t)s.n_embd);
  b.u32("llama.block_count", (uint32_t)s.n_layer);
  b.u32("llama.feed_forward_length", (uint32_t)s.n_ff);
  b.u32("llama.attention.head_count", (uint32_t)s.n_head);
  b.u32("llama.attention.head_count_kv", (uint32_t)s.n_head_kv);
  b.f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  if (s.sliding_window) b.u32("llama.attention.sliding_window", (uint32_t)s.sliding_window);
  if (s.n_expert) {
    b.u32("llama.expert_count", (uint32_t)s.n_expert);
    b.u32("llama.expert_used_count", (uint32_t)s.n_expert_used);
  }
  const int64_t D = s.n_embd, hd = D / s.n_head, kv = hd * s.n_head_kv;
  const float sd = 1.0f / std::sqrt((float)D), sf = 1.0f / std::sqrt((float)s.n_ff);
  const DType mt = s.matrix_type;
  // A weight matrix (or stack of expert matrices) of ggml shape ne.
  auto matrix = [&](const std::string& name, std::vector<int64_t> ne, std::vector<float> values) {
    if (!s.random_blocks_of) return b.tensor(name, std::move(ne), mt, values);
    const DType t = s.random_blocks_of(name);
    const size_t row_bytes = dtype_row_bytes(t, ne[0]);
    std::vector<uint8_t> data(row_bytes * (values.size() / (size_t)ne[0]));
    for (size_t r = 0; r < data.size() / row_bytes; ++r) random_row(t, data.data() + r * row_bytes, ne[0], rng);
    b.tensor_bytes(name, std::move(ne), t, std::move(data));
  };
  matrix("token_embd.weight", {D, s.n_vocab}, rnd(D * s.n_vocab, 1.0f));
  b.tensor("output_norm.weight", {D}, DType::F32, ones(D));
  matrix("output.weight", {D, s.n_vocab}, rnd(D * s.n_vocab, sd));
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string((long long)l) + ".";
    b.tensor(p + "attn_norm.weight", {D}, DType::F32, ones(D));
    matrix(p + "attn_q.weight", {D, D}, rnd(D * D, sd));
    matrix(p + "attn_k.weight", {D, kv}, rnd(D * kv, sd));
    matrix(p + "attn_v.weight", {D, kv}, rnd(D * kv, sd));
    matrix(p + "attn_output.weight", {D, D}, rnd(D * D, sd));
    b.tensor(p + "ffn_norm.weight", {D}, DType::F32, ones(D));
    if (s.n_expert) {
      b.tensor(p + "ffn_gate_inp.weight", {D, s.n_expert}, DType::F32, rnd(D * s.n_expert, sd));
      matrix(p + "ffn_gate_exps.weight", {D, s.n_ff, s.n_expert}, rnd(D * s.n_ff * s.n_expert, sd));
      matrix(p + "ffn_up_exps.weight", {D, s.n_ff, s.n_expert}, rnd(D * s.n_ff * s.n_expert, sd));
      matrix(p + "ffn_down_exps.weight", {s.n_ff, D, s.n_expert}, rnd(D * s.n_ff * s.n_expert, sf));
    } else {
      matrix(p + "ffn_gate.weight", {D, s.n_ff}, rnd(D * s.n_ff, sd));
      matrix(p + "ffn_up.weight", {D, s.n_ff}, rnd(D * s.n_ff, sd));
      matrix(p + "ffn_down.weight", {s.n_ff, D}, rnd(D * s.n_ff, sf));
    }
  }
  return b;
}

}  // namespace edgellm::test
