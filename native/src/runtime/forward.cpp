#include "runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "quant/quant.h"

namespace edgellm {

namespace {

// Elements per chunk of a multi-token FFN activation (a multiple of every SIMD width).
constexpr int64_t kActivationGrain = 4096;

std::string str(int64_t v) { return std::to_string((long long)v); }

bool has_full_layer(const KvCacheConfig& c) {
  if (c.layers.empty()) return true;
  for (const KvLayerSpec& s : c.layers)
    if (s.window == 0) return true;
  return false;
}

// c * tanh(x / c) in place (gemma2's soft-capping of logits).
void soft_cap(float* x, int64_t n, float c) {
  for (int64_t i = 0; i < n; ++i) x[i] = c * std::tanh(x[i] / c);
}

}  // namespace

ForwardPass::ForwardPass(const Model& model, ThreadPool& pool, const ForwardOptions& opts, const KernelTable& kt)
    : model_(model), cfg_(model.config()), pool_(pool), kt_(kt) {
  cache_config_ = forward_cache_config(cfg_, opts);
  max_batch_ = opts.batch;
  const ModelConfig& c = cfg_;
  rope_factors_ = &model.weights().rope_freq_factors;
  if (c.rope_orig_context > 0)  // LongRoPE: the long factors only when the context outgrows the original
    rope_factors_ = cache_config_.context > c.rope_orig_context ? &model.weights().rope_factors_long
                                                                 : &model.weights().rope_factors_short;

  const int64_t n = max_batch_;
  const int64_t n_ff = std::max(c.n_ff, c.n_ff_expert);
  x_.resize((size_t)(n * c.n_embd));
  xb_.resize(x_.size());
  out_.resize(x_.size());
  q_.resize((size_t)(n * c.q_dim()));
  att_.resize(q_.size());
  k_.resize((size_t)(n * c.kv_dim()));
  v_.resize(k_.size());
  gate_.resize((size_t)(n * n_ff));
  up_.resize(gate_.size());
  cs_full_.resize((size_t)(n * c.n_rot));
  cs_swa_.resize(cs_full_.size());
  pos_.resize((size_t)n);
  runs_.reserve((size_t)n);
  run_of_.resize((size_t)n);
  att_args_.resize((size_t)n);
  if (c.is_moe()) {
    router_logits_.resize((size_t)(n * c.n_expert));
    expert_idx_.resize((size_t)(n * c.n_expert_used));
    expert_w_.resize(expert_idx_.size());
    expert_count_.resize((size_t)c.n_expert);
    expert_tokens_.resize((size_t)(c.n_expert * n));
    expert_token_w_.resize(expert_tokens_.size());
    xe_.resize(x_.size());
    ye_.resize(x_.size());
  }
  if (c.arch == Arch::Deepseek2) init_mla_scratch();
  // Grow the matmul's activation buffer to its largest size now, not during the first step.
  // Q8_K (292 bytes per 256) is the largest activation format per element.
  mm_scratch_.xq.reserve((size_t)n * (size_t)(std::max({c.n_embd, c.q_dim(), n_ff}) / kQKK + 1) * sizeof(block_q8_K));
}

int64_t default_context(const ModelConfig& c) { return std::min<int64_t>(c.context_length, kDefaultContextCap); }

KvCacheConfig forward_cache_config(const ModelConfig& c, const ForwardOptions& opts) {
  if (opts.batch < 1) throw std::invalid_argument("batch must be at least 1, got " + str(opts.batch));
  const int64_t context = opts.context > 0 ? opts.context : c.context_length;
  if (context < 1) throw std::invalid_argument("context must be at least 1");
  if (opts.sinks >= context)
    throw std::invalid_argument("sinks (" + str(opts.sinks) + ") must be smaller than the context (" + str(context) + ")");

  KvCacheConfig kv;
  kv.n_layer = c.n_layer;
  kv.n_head_kv = c.n_head_kv;
  kv.head_dim = c.head_dim;
  if (c.arch == Arch::Deepseek2) {  // the compressed latent and the roped key, one row per position
    if (opts.sinks >= 0) throw std::invalid_argument("sinks are not supported for deepseek2's latent cache");
    kv.head_dim = c.mla.cache_dim(c.n_rot);
    kv.latent = true;
  }
  kv.context = context;
  kv.max_block = opts.batch;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    KvLayerSpec s;
    if (c.layer_is_swa[(size_t)l]) s.window = c.sliding_window;
    else if (opts.sinks >= 0) s = KvLayerSpec{context - opts.sinks, opts.sinks};
    kv.layers.push_back(s);
  }
  return kv;
}

// Mirrors the constructor's buffers (the per-run bookkeeping, a few bytes per token, aside).
size_t forward_scratch_bytes(const ModelConfig& c, int64_t n, int64_t context) {
  const int64_t n_ff = std::max(c.n_ff, c.n_ff_expert);
  size_t floats = 3 * (size_t)(n * c.n_embd)       // x, xb, out
                  + 2 * (size_t)(n * c.q_dim())    // q, att
                  + 2 * (size_t)(n * c.kv_dim())   // k, v
                  + 2 * (size_t)(n * n_ff)         // gate, up
                  + 2 * (size_t)(n * c.n_rot);     // RoPE tables
  size_t bytes = floats * sizeof(float) + (size_t)n * (2 * sizeof(int64_t) + sizeof(AttentionArgs));
  if (c.is_moe()) {
    bytes += (size_t)(n * c.n_expert) * sizeof(float) + (size_t)(n * c.n_expert_used) * (sizeof(int32_t) + sizeof(float)) +
             (size_t)c.n_expert * sizeof(int64_t) + (size_t)(c.n_expert * n) * (sizeof(int64_t) + sizeof(float)) +
             2 * (size_t)(n * c.n_embd) * sizeof(float);
  }
  // The matmul's activations, as reserved above (Q8_K: the largest format per element).
  bytes += (size_t)(n * std::max({c.n_embd, c.q_dim(), n_ff}) / kQKK + 1) * sizeof(block_q8_K);
  if (c.arch == Arch::Deepseek2) bytes += mla_scratch_floats(c, n, context > 0 ? context : default_context(c)) * sizeof(float);
  return bytes;
}

bool ForwardPass::unbounded() const { return !has_full_layer(cache_config_); }

void ForwardPass::mm(const WeightMatrix& w, const float* x, int64_t ncols, float* y, bool same_input) {
  matmul(pool_, kt_, w.type, w.data, w.rows, w.cols, x, ncols, y, mm_scratch_, same_input);
  if (!lora_cols_->empty()) apply_lora(w, x, y);
}

// Unmerged LoRA: for each span of columns with an adapter set, and each adapter of the set that
// adapts W, y += scale * B (A x) as two GEMMs over the span's columns. Columns outside every
// span (sequences without adapters) cost nothing. The MoE experts' matmuls take gathered
// columns, but no adapter targets an expert (LoraAdapter refuses them), so none is found there.
void ForwardPass::apply_lora(const WeightMatrix& w, const float* x, float* y) {
  for (const LoraSpan& span : *lora_cols_) {
    const int64_t m = span.end - span.begin;
    for (const LoraChoice& choice : *span.set) {
      const LoraPair* pair = choice.adapter->find(&w);
      if (!pair) continue;
      const int64_t r = pair->rank();
      if ((int64_t)lora_ax_.size() < max_batch_ * r) lora_ax_.resize((size_t)(max_batch_ * r));
      if ((int64_t)lora_bax_.size() < max_batch_ * w.rows) lora_bax_.resize((size_t)(max_batch_ * w.rows));
      matmul(pool_, kt_, pair->a.type, pair->a.data, r, w.cols, x + span.begin * w.cols, m, lora_ax_.data(), mm_scratch_);
      matmul(pool_, kt_, pair->b.type, pair->b.data, w.rows, r, lora_ax_.data(), m, lora_bax_.data(), mm_scratch_);
      float* yc = y + span.begin * w.rows;
      kt_.scale(lora_bax_.data(), choice.adapter->scale(*pair, choice.scale), lora_bax_.data(), m * w.rows);
      kt_.add(yc, lora_bax_.data(), yc, m * w.rows);
    }
  }
}

// Appends column `col` to the spans when it runs with adapters, extending the last span when it
// has the same set and ends at col.
void ForwardPass::add_lora_column(std::vector<LoraSpan>& spans, const LoraSet* set, int64_t col) {
  if (!set || set->empty()) return;
  if (!spans.empty() && spans.back().set == set && spans.back().end == col) ++spans.back().end;
  else spans.push_back(LoraSpan{set, col, col + 1});
}

// cos/sin of each rotated pair at `pos`, as ggml computes them; frequency factors (llama 3's
// rope_freqs, phi3's LongRoPE factors) divide each pair's angle, and phi3's attn_factor scales
// both cos and sin.
void ForwardPass::rope_table(int64_t pos, const RopeSpec& spec, float* cs) const {
  // YaRN (deepseek2). Without ext_factor ggml's YaRN angle is the plain one scaled by
  // attn_factor, which the path below computes (and it also takes frequency factors).
  if (spec.ext_factor != 0.0f) {
    rope_cache_yarn(pos, cfg_.n_rot, spec, cs);
    return;
  }
  const std::vector<float>& ff = *rope_factors_;
  if (ff.empty()) {
    rope_cache(pos, cfg_.n_rot, spec.base, spec.freq_scale, cs);
  } else {
    const float theta_scale = std::pow(spec.base, -2.0f / (float)cfg_.n_rot);
    float theta_base = (float)pos;
    for (int64_t i = 0; i < cfg_.n_rot / 2; ++i) {
      const float theta = spec.freq_scale * (theta_base / ff[(size_t)i]);
      cs[2 * i] = std::cos(theta);
      cs[2 * i + 1] = std::sin(theta);
      theta_base *= theta_scale;
    }
  }
  if (spec.attn_factor != 1.0f)
    for (int64_t i = 0; i < cfg_.n_rot; ++i) cs[i] *= spec.attn_factor;
}

// Validates a whole request before anything runs, so a refusal leaves every cache unchanged.
void ForwardPass::check(const BatchToken* batch, int64_t n) {
  if (cfg_.encoder)
    throw ModelError("E_NOT_GENERATIVE", "'" + cfg_.arch_name + "' is an embedding model (an encoder): it has no next-token "
                                         "logits to generate from; ask it for embeddings (edgellm embed) instead");
  const bool full = has_full_layer(cache_config_);
  for (int64_t i = 0; i < n;) {
    KvCache* cache = batch[i].cache;
    if (!cache) throw std::invalid_argument("batch entry " + str(i) + " has no sequence");
    const int64_t start = cache->length(0);
    int64_t j = i;
    for (; j < n && batch[j].cache == cache; ++j) {
      const BatchToken& t = batch[j];
      if (t.token < 0 || t.token >= cfg_.n_vocab)
        throw std::invalid_argument("token " + str(t.token) + " is outside the vocabulary (0.." +
                                    str(cfg_.n_vocab - 1) + ")");
      if (t.pos != start + (j - i))
        throw std::invalid_argument("position " + str(t.pos) + " does not continue its sequence, which holds " +
                                    str(start) + " positions");
    }
    for (int64_t k = 0; k < i; ++k)
      if (batch[k].cache == cache)
        throw std::invalid_argument("a sequence's tokens must be contiguous in the batch");
    const int64_t last = batch[j - 1].pos;
    if (full && last >= cache_config_.context)
      throw ContextFullError("the sequence reached the context of " + str(cache_config_.context) +
                             " positions; start a new sequence, raise contextSize, or load the model with "
                             "sinks to keep generating in bounded memory");
    i = j;
  }
}

int64_t ForwardPass::step(const BatchToken* batch, int64_t n, float* logits) {
  check(batch, n);
  int64_t rows = 0;
  for (int64_t b = 0; b < n; b += max_batch_) {
    const int64_t m = std::min(max_batch_, n - b);
    rows += step_block(batch + b, m, logits ? logits + rows * cfg_.n_vocab : nullptr);
  }
  return rows;
}

void ForwardPass::prefill(KvCache& cache, const int32_t* tokens, int64_t n, bool all_positions, float* logits,
                          const LoraSet* lora) {
  if (n <= 0) return;
  std::vector<BatchToken> batch((size_t)n);  // per request, not per token
  const int64_t p0 = cache.length(0);
  for (int64_t i = 0; i < n; ++i) batch[(size_t)i] = BatchToken{&cache, p0 + i, tokens[i], all_positions || i == n - 1, lora};
  step(batch.data(), n, logits);
}

// One step of at most max_batch_ tokens: the whole network, layer by layer.
int64_t ForwardPass::step_block(const BatchToken* batch, int64_t n, float* logits) {
  const ModelConfig& c = cfg_;
  const ModelWeights& w = model_.weights();
  const int64_t D = c.n_embd, hd = c.head_dim;

  // Runs of tokens per sequence, spans per adapter set, and each token's RoPE angles.
  runs_.clear();
  lora_tokens_.clear();
  lora_rows_.clear();
  lora_cols_ = &lora_tokens_;
  for (int64_t i = 0; i < n; ++i) {
    add_lora_column(lora_tokens_, batch[i].lora, i);
    if (runs_.empty() || runs_.back().cache != batch[i].cache) runs_.push_back(Run{batch[i].cache, i, i});
    runs_.back().end = i + 1;
    run_of_[(size_t)i] = (int64_t)runs_.size() - 1;
    pos_[(size_t)i] = batch[i].pos;
    rope_table(batch[i].pos, c.rope, &cs_full_[(size_t)(i * c.n_rot)]);
    if (c.any_swa()) rope_table(batch[i].pos, c.rope_swa, &cs_swa_[(size_t)(i * c.n_rot)]);
  }

  // Token embeddings (one row dequantized per token), scaled for gemma.
  for (int64_t i = 0; i < n; ++i) {
    float* x = &x_[(size_t)(i * D)];
    dequantize_row(w.token_embd.type, w.token_embd.row(batch[i].token), x, D);
    if (c.embd_scale != 1.0f) kt_.scale(x, c.embd_scale, x, D);
  }

  for (int64_t l = 0; l < c.n_layer; ++l) {
    if (c.arch == Arch::Deepseek2) {
      layer_mla(l, n);
      continue;
    }
    const LayerWeights& L = w.layers[(size_t)l];
    const bool swa = c.layer_is_swa[(size_t)l];

    // Attention: norm, Q/K/V projections over the whole batch.
    for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&x_[(size_t)(i * D)], L.attn_norm.data(), &xb_[(size_t)(i * D)], D, c.rms_eps);
    mm(L.wq, xb_.data(), n, q_.data());
    mm(L.wk, xb_.data(), n, k_.data(), /*same_input=*/true);
    mm(L.wv, xb_.data(), n, v_.data(), /*same_input=*/true);
    for (int64_t i = 0; i < n; ++i) {
      float* q = &q_[(size_t)(i * c.q_dim())];
      float* k = &k_[(size_t)(i * c.kv_dim())];
      float* v = &v_[(size_t)(i * c.kv_dim())];
      if (!L.bq.empty()) {  // qwen2
        kt_.add(q, L.bq.data(), q, c.q_dim());
        kt_.add(k, L.bk.data(), k, c.kv_dim());
        kt_.add(v, L.bv.data(), v, c.kv_dim());
      }
      if (c.qk_norm) {  // qwen3, gemma3: each head normed before RoPE
        for (int64_t h = 0; h < c.n_head; ++h) kt_.rmsnorm(q + h * hd, L.q_norm.data(), q + h * hd, hd, c.rms_eps);
        for (int64_t h = 0; h < c.n_head_kv; ++h) kt_.rmsnorm(k + h * hd, L.k_norm.data(), k + h * hd, hd, c.rms_eps);
      }
      if (c.qk_norm_full) {  // olmoe: all heads normed together
        kt_.rmsnorm(q, L.q_norm.data(), q, c.q_dim(), c.rms_eps);
        kt_.rmsnorm(k, L.k_norm.data(), k, c.kv_dim(), c.rms_eps);
      }
      if (!c.layer_uses_rope[(size_t)l]) continue;  // smollm3's NoPE layers
      const float* cs = swa ? &cs_swa_[(size_t)(i * c.n_rot)] : &cs_full_[(size_t)(i * c.n_rot)];
      kt_.rope(q, c.n_head, hd, c.n_rot, cs, c.rope_mode);
      kt_.rope(k, c.n_head_kv, hd, c.n_rot, cs, c.rope_mode);
    }
    attention_block(l, n);
    if (observer_)
      for (size_t r = 0; r < runs_.size(); ++r) observer_->attention(l, att_args_[r]);
    mm(L.wo, att_.data(), n, out_.data());
    if (c.post_norms)
      for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&out_[(size_t)(i * D)], L.attn_post_norm.data(), &out_[(size_t)(i * D)], D, c.rms_eps);
    kt_.add(x_.data(), out_.data(), x_.data(), n * D);

    // Feed-forward: norm, dense or mixture of experts, residual.
    for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&x_[(size_t)(i * D)], L.ffn_norm.data(), &xb_[(size_t)(i * D)], D, c.rms_eps);
    if (c.is_moe()) feed_forward_moe(L, n);
    else feed_forward_dense(L, n);
    if (c.post_norms)
      for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&out_[(size_t)(i * D)], L.ffn_post_norm.data(), &out_[(size_t)(i * D)], D, c.rms_eps);
    kt_.add(x_.data(), out_.data(), x_.data(), n * D);
    if (observer_) observer_->layer_output(l, pos_.data(), x_.data(), n);
  }

  // Logits only where asked: gather those rows, final norm, classifier.
  int64_t rows = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!batch[i].logits) continue;
    kt_.rmsnorm(&x_[(size_t)(i * D)], w.output_norm.data(), &xb_[(size_t)(rows * D)], D, c.rms_eps);
    if (observer_) observer_->final_norm(batch[i].pos, &xb_[(size_t)(rows * D)]);
    add_lora_column(lora_rows_, batch[i].lora, rows);
    ++rows;
  }
  if (rows > 0 && logits) {
    lora_cols_ = &lora_rows_;  // the classifier's columns are the logits rows, not the tokens
    mm(w.output, xb_.data(), rows, logits);
    lora_cols_ = &lora_tokens_;
    if (c.final_softcap > 0.0f) soft_cap(logits, rows * c.n_vocab, c.final_softcap);
  }
  return rows;
}

// Stores each sequence's new K/V, then runs attention over every (query, head) task of the
// step across the pool; a task reads only its own sequence's cache.
void ForwardPass::attention_block(int64_t layer, int64_t n) {
  const ModelConfig& c = cfg_;
  for (size_t r = 0; r < runs_.size(); ++r) {
    const Run& run = runs_[r];
    const int64_t m = run.end - run.begin;
    run.cache->store_block(layer, pos_[(size_t)run.begin], m, &k_[(size_t)(run.begin * c.kv_dim())],
                           &v_[(size_t)(run.begin * c.kv_dim())]);
  }
  for (size_t r = 0; r < runs_.size(); ++r) {
    const Run& run = runs_[r];
    AttentionArgs& a = att_args_[r];
    a.q = &q_[(size_t)(run.begin * c.q_dim())];
    a.pos = &pos_[(size_t)run.begin];
    a.n_q = run.end - run.begin;
    a.n_head = c.n_head;
    a.n_head_kv = c.n_head_kv;
    a.head_dim = c.head_dim;
    a.scale = c.attn_scale;
    a.softcap = c.attn_softcap;
    a.kv = run.cache->view(layer);
    a.out = &att_[(size_t)(run.begin * c.q_dim())];
  }
  const int64_t tasks = n * c.n_head;
  // Chunks of whole head groups (up to the 8 a kernel pass serves): the heads that share a KV
  // head then read its cache together (common/attention_online.h).
  const int64_t unit = std::min<int64_t>(8, c.n_head / std::max<int64_t>(1, c.n_head_kv));
  const int64_t grain = (std::max<int64_t>(1, tasks / (pool_.size() * 4)) + unit - 1) / unit * unit;
  pool_.parallel_for(tasks, grain, [this, &c](int64_t b, int64_t e, int) {
    while (b < e) {  // a chunk may span sequences: split it at run boundaries
      const int64_t r = run_of_[(size_t)(b / c.n_head)];
      const Run& run = runs_[(size_t)r];
      const int64_t run_end = std::min(e, run.end * c.n_head);
      kt_.attention(att_args_[(size_t)r], b - run.begin * c.n_head, run_end - run.begin * c.n_head);
      b = run_end;
    }
  });
}

void ForwardPass::feed_forward_dense(const LayerWeights& L, int64_t n) {
  const int64_t F = cfg_.n_ff;
  mm(L.ffn_gate, xb_.data(), n, gate_.data());
  mm(L.ffn_up, xb_.data(), n, up_.data(), /*same_input=*/true);
  // Several tokens' activations (an exp per element) across the pool: 8 sequences x 2816 took
  // ~1% of a decode step on the calling thread alone.
  const bool geglu = cfg_.ffn_act == FfnActivation::GeGlu;
  pool_.parallel_for(n * F, n > 1 ? kActivationGrain : n * F, [this, geglu](int64_t b, int64_t e, int) {
    float* g = gate_.data() + b;
    if (geglu) kt_.geglu(g, up_.data() + b, g, e - b);
    else kt_.swiglu(g, up_.data() + b, g, e - b);
  });
  mm(L.ffn_down, gate_.data(), n, out_.data());
}

// Routes each token to its top-k experts, then runs each chosen expert once over the tokens
// it serves (a GEMM over those columns) and adds its output, weighted, to theirs.
void ForwardPass::feed_forward_moe(const LayerWeights& L, int64_t n) {
  const ModelConfig& c = cfg_;
  const int64_t E = c.n_expert, K = c.n_expert_used;
  mm(L.router, xb_.data(), n, router_logits_.data());
  for (int64_t i = 0; i < n; ++i)
    kt_.route_topk(&router_logits_[(size_t)(i * E)], E, K, c.expert_weights_norm, &expert_idx_[(size_t)(i * K)],
                   &expert_w_[(size_t)(i * K)]);
  moe_experts(L, n);
}

// Runs each expert that expert_idx_ chose once over the tokens it serves (a GEMM over those
// columns); out_ = per token the sum of its experts' outputs weighted by expert_w_.
void ForwardPass::moe_experts(const LayerWeights& L, int64_t n) {
  const ModelConfig& c = cfg_;
  const int64_t D = c.n_embd, F = c.n_ff_expert, E = c.n_expert, K = c.n_expert_used;
  std::fill(expert_count_.begin(), expert_count_.end(), 0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = expert_idx_[(size_t)(i * K + j)];
      const int64_t slot = e * max_batch_ + expert_count_[(size_t)e]++;
      expert_tokens_[(size_t)slot] = i;
      expert_token_w_[(size_t)slot] = expert_w_[(size_t)(i * K + j)];
    }
  }
  if (L.gate_exps.paged_from) {  // every picked expert's reads start before the first GEMM
    for (int64_t e = 0; e < E; ++e) {
      if (expert_count_[(size_t)e] == 0) continue;
      L.gate_exps.will_need(e), L.up_exps.will_need(e), L.down_exps.will_need(e);
    }
  }
  std::fill(out_.begin(), out_.begin() + n * D, 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t m = expert_count_[(size_t)e];
    if (m == 0) continue;
    const int64_t* toks = &expert_tokens_[(size_t)(e * max_batch_)];
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(&xe_[(size_t)(j * D)], &xb_[(size_t)(toks[j] * D)], (size_t)D * sizeof(float));
    mm(L.gate_exps.expert(e), xe_.data(), m, gate_.data());
    mm(L.up_exps.expert(e), xe_.data(), m, up_.data(), /*same_input=*/true);
    kt_.swiglu(gate_.data(), up_.data(), gate_.data(), m * F);
    mm(L.down_exps.expert(e), gate_.data(), m, ye_.data());
    for (int64_t j = 0; j < m; ++j) {
      float* y = &ye_[(size_t)(j * D)];
      float* o = &out_[(size_t)(toks[j] * D)];
      kt_.scale(y, expert_token_w_[(size_t)(e * max_batch_ + j)], y, D);
      kt_.add(o, y, o, D);
    }
  }
}

}  // namespace edgellm
