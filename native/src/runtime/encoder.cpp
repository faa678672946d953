#include "runtime/encoder.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/quant.h"

namespace edgellm {

namespace {

std::string str(int64_t v) { return std::to_string((long long)v); }

// sqrt(2 / pi), the tanh approximation's constants (ggml's GELU_COEF_A and SQRT_2_OVER_PI).
constexpr float kGeluCoefA = 0.044715f;
constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f;

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float mean = (float)(sum / (double)n);
  double sum2 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    y[i] = d;
    sum2 += (double)d * d;
  }
  const float scale = 1.0f / std::sqrt((float)(sum2 / (double)n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * scale * w[i] + b[i];
}

void gelu_tanh(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * v * (1.0f + kGeluCoefA * v * v)));
  }
}

size_t encoder_scratch_bytes(const ModelConfig& c, int threads) {
  const int64_t n = c.context_length;
  const size_t floats = (size_t)n * (size_t)(2 * c.n_embd + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.n_ff + threads);
  return floats * sizeof(float) + (size_t)(n * std::max({c.n_embd, c.q_dim(), c.n_ff}) / kQKK + 1) * sizeof(block_q8_K);
}

void require_encoder(const ModelConfig& c) {
  if (!c.encoder)
    throw ModelError("E_NOT_EMBEDDING_MODEL", "'" + c.arch_name +
                                                  "' is a generative model: embeddings come from an encoder (bert, "
                                                  "nomic-bert); load an embedding model such as bge-small or nomic-embed-text");
}

EncoderPass::EncoderPass(const Model& model, ThreadPool& pool, const KernelTable& kt)
    : model_(model), cfg_(model.config()), pool_(pool), kt_(kt) {
  require_encoder(cfg_);
}

void EncoderPass::mm(const WeightMatrix& w, const float* x, int64_t ncols, float* y) {
  matmul(pool_, kt_, w.type, w.data, w.rows, w.cols, x, ncols, y, mm_scratch_);
}

// Every query against every key of the input, per head: softmax((q . k) * scale) . V.
// q: [n][q_dim], k, v: [n][kv_dim], out: [n][q_dim]; a task is one (query, head).
void EncoderPass::attention(int64_t n, const float* q, const float* k, const float* v, float* out) {
  const ModelConfig& c = cfg_;
  const int64_t H = c.n_head, hd = c.head_dim, group = c.n_head / c.n_head_kv;
  std::vector<float> scores((size_t)(pool_.size() * n));
  const int64_t tasks = n * H;
  const int64_t grain = std::max<int64_t>(1, tasks / (pool_.size() * 4));
  pool_.parallel_for(tasks, grain, [&](int64_t b, int64_t e, int thread) {
    float* s = &scores[(size_t)(thread * n)];
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / H, h = t % H, hk = h / group;
      const float* qi = q + i * c.q_dim() + h * hd;
      for (int64_t j = 0; j < n; ++j) {
        const float* kj = k + j * c.kv_dim() + hk * hd;
        float dot = 0.0f;
        for (int64_t d = 0; d < hd; ++d) dot += qi[d] * kj[d];
        s[j] = dot * c.attn_scale;
      }
      kt_.softmax(s, n);
      float* o = out + i * c.q_dim() + h * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float* vj = v + j * c.kv_dim() + hk * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] += s[j] * vj[d];
      }
    }
  });
}

void EncoderPass::hidden_states(const int32_t* tokens, int64_t n, float* hidden) {
  const ModelConfig& c = cfg_;
  const ModelWeights& w = model_.weights();
  if (n <= 0) throw ModelError("E_EMPTY_INPUT", "the input has no tokens: embed at least one character of text");
  if (n > c.context_length)
    throw ModelError("E_INPUT_TOO_LONG", "the input is " + str(n) + " tokens, more than the " + str(c.context_length) +
                                             " this " + c.arch_name + " model reads at once; split the text into shorter pieces");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.n_vocab)
      throw std::invalid_argument("token " + str(tokens[i]) + " is outside the vocabulary (0.." + str(c.n_vocab - 1) + ")");

  const int64_t D = c.n_embd;
  std::vector<float> q((size_t)(n * c.q_dim())), k((size_t)(n * c.kv_dim())), v(k.size());
  std::vector<float> att(q.size()), out((size_t)(n * D)), up((size_t)(n * c.n_ff)), gate(c.arch == Arch::NomicBert ? up.size() : 0);
  std::vector<float> pos_row((size_t)D), cs((size_t)c.n_rot);
  float* X = hidden;  // the residual stream lives in the caller's buffer

  // Token + token type 0 (+ position for bert), then the embeddings' LayerNorm.
  for (int64_t i = 0; i < n; ++i) {
    float* xi = X + i * D;
    dequantize_row(w.token_embd.type, w.token_embd.row(tokens[i]), xi, D);
    if (!w.token_type0.empty()) kt_.add(xi, w.token_type0.data(), xi, D);
    if (w.position_embd.present()) {
      dequantize_row(w.position_embd.type, w.position_embd.row(i), pos_row.data(), D);
      kt_.add(xi, pos_row.data(), xi, D);
    }
    layer_norm(xi, w.embd_norm.data(), w.embd_norm_b.data(), xi, D, c.norm_eps);
  }

  for (int64_t l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = w.layers[(size_t)l];
    mm(L.wq, X, n, q.data());
    mm(L.wk, X, n, k.data());
    mm(L.wv, X, n, v.data());
    for (int64_t i = 0; i < n; ++i) {
      float* qi = &q[(size_t)(i * c.q_dim())];
      float* ki = &k[(size_t)(i * c.kv_dim())];
      if (!L.bq.empty()) {
        kt_.add(qi, L.bq.data(), qi, c.q_dim());
        kt_.add(ki, L.bk.data(), ki, c.kv_dim());
        kt_.add(&v[(size_t)(i * c.kv_dim())], L.bv.data(), &v[(size_t)(i * c.kv_dim())], c.kv_dim());
      }
      if (!c.layer_uses_rope[(size_t)l]) continue;  // bert: positions came with the embeddings
      rope_cache(i, c.n_rot, c.rope.base, c.rope.freq_scale, cs.data());
      kt_.rope(qi, c.n_head, c.head_dim, c.n_rot, cs.data(), c.rope_mode);
      kt_.rope(ki, c.n_head_kv, c.head_dim, c.n_rot, cs.data(), c.rope_mode);
    }
    attention(n, q.data(), k.data(), v.data(), att.data());
    mm(L.wo, att.data(), n, out.data());
    // Post-norm: residual, then LayerNorm (attention), and the same around the FFN.
    for (int64_t i = 0; i < n; ++i) {
      float* oi = &out[(size_t)(i * D)];
      if (!L.bo.empty()) kt_.add(oi, L.bo.data(), oi, D);
      kt_.add(oi, X + i * D, oi, D);
      layer_norm(oi, L.attn_out_norm.data(), L.attn_out_norm_b.data(), X + i * D, D, c.norm_eps);
    }
    mm(L.ffn_up, X, n, up.data());
    if (c.arch == Arch::NomicBert) {  // silu(gate) * up
      mm(L.ffn_gate, X, n, gate.data());
      kt_.swiglu(gate.data(), up.data(), up.data(), n * c.n_ff);
    } else {  // bert: gelu(up + b)
      if (!L.ffn_up_b.empty())
        for (int64_t i = 0; i < n; ++i) kt_.add(&up[(size_t)(i * c.n_ff)], L.ffn_up_b.data(), &up[(size_t)(i * c.n_ff)], c.n_ff);
      gelu_tanh(up.data(), n * c.n_ff);
    }
    mm(L.ffn_down, up.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      float* oi = &out[(size_t)(i * D)];
      if (!L.ffn_down_b.empty()) kt_.add(oi, L.ffn_down_b.data(), oi, D);
      kt_.add(oi, X + i * D, oi, D);
      layer_norm(oi, L.layer_out_norm.data(), L.layer_out_norm_b.data(), X + i * D, D, c.norm_eps);
    }
  }
}

void EncoderPass::embed(const int32_t* tokens, int64_t n, float* out) {
  const ModelConfig& c = cfg_;
  const int64_t D = c.n_embd;
  if (c.pooling == PoolingType::None)
    throw ModelError("E_NO_POOLING", "this " + c.arch_name + " model's pooling_type is none: it defines no embedding of a whole "
                                     "input; use a GGUF converted with a pooling type (mean, cls or last)");
  if (c.pooling == PoolingType::Rank)
    throw ModelError("E_MODEL_UNSUPPORTED", "this " + c.arch_name + " model is a reranker (pooling_type rank), "
                                            "which edgellm does not run; use an embedding model");
  std::vector<float> hidden((size_t)(std::max<int64_t>(n, 0) * D));
  hidden_states(tokens, n, hidden.data());
  if (c.pooling == PoolingType::Mean) {
    std::vector<double> sum((size_t)D, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < D; ++d) sum[(size_t)d] += hidden[(size_t)(i * D + d)];
    for (int64_t d = 0; d < D; ++d) out[d] = (float)(sum[(size_t)d] / (double)n);
  } else {
    const int64_t row = c.pooling == PoolingType::Cls ? 0 : n - 1;
    std::copy(&hidden[(size_t)(row * D)], &hidden[(size_t)(row * D + D)], out);
  }
  double norm = 0.0;
  for (int64_t d = 0; d < D; ++d) norm += (double)out[d] * out[d];
  const float inv = norm > 0.0 ? (float)(1.0 / std::sqrt(norm)) : 0.0f;
  for (int64_t d = 0; d < D; ++d) out[d] *= inv;
}

}  // namespace edgellm
