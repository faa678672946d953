// deepseek2's layer: multi-head latent attention over a compressed cache, and a feed-forward that
// is dense in the leading layers and routed + shared experts after them.
//
// Per token the cache keeps c = rmsnorm(W_kv_a x)[:kv_lora_rank] and k_pe = rope(W_kv_a x)[kv_lora_rank:]
// (kv_lora_rank + n_rot values), never the per-head K and V. Head h's key is W_kb,h c (+ k_pe) and its
// value W_vb,h c, so a score q_nope . (W_kb,h c) is (W_kb,h^T q_nope) . c: each query is absorbed
// into latent space once, attention runs over latents as one shared (MQA) head of
// kv_lora_rank + n_rot, and the attended latent is mapped to the head's value by W_vb,h after the
// softmax. Prefill and decode both take this path: per cached position a chunk of n queries costs
// n_head * n * (2 kv_lora_rank + n_rot) multiply-adds absorbed, against n_head * kv_lora_rank *
// (qk_nope + v_dim) + n_head * n * (qk_nope + n_rot + v_dim) expanded, so for DeepSeek-V2's shape
// expanding only pays past ~170 queries per chunk (the prefill chunk is 64), and there is one path to test.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "runtime/forward.h"

namespace edgellm {

namespace {

// ggml's YaRN correction dims: the pair indices where extrapolation starts / ends.
float yarn_corr_dim(int64_t n_dims, int64_t n_ctx_orig, float n_rot, float base) {
  return (float)n_dims * std::log((float)n_ctx_orig / (n_rot * 2.0f * (float)M_PI)) / (2.0f * std::log(base));
}

}  // namespace

void rope_cache_yarn(int64_t pos, int64_t n_rot, const RopeSpec& spec, float* cs) {
  const float theta_scale = std::pow(spec.base, -2.0f / (float)n_rot);
  float low = 0.0f, high = 0.0f;
  if (spec.ext_factor != 0.0f) {
    low = std::max(0.0f, std::floor(yarn_corr_dim(n_rot, spec.n_ctx_orig, spec.beta_fast, spec.base)));
    high = std::min((float)(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, spec.n_ctx_orig, spec.beta_slow, spec.base)));
  }
  float theta_extrap = (float)pos;
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const float theta_interp = spec.freq_scale * theta_extrap;
    float theta = theta_interp, mscale = spec.attn_factor;
    if (spec.ext_factor != 0.0f) {
      const float y = ((float)i - low) / std::max(0.001f, high - low);
      const float ramp_mix = (1.0f - std::min(1.0f, std::max(0.0f, y))) * spec.ext_factor;
      theta = theta_interp * (1.0f - ramp_mix) + theta_extrap * ramp_mix;
      mscale *= 1.0f + 0.1f * std::log(1.0f / spec.freq_scale);
    }
    cs[2 * i] = std::cos(theta) * mscale;
    cs[2 * i + 1] = std::sin(theta) * mscale;
    theta_extrap *= theta_scale;
  }
}

size_t mla_scratch_floats(const ModelConfig& c, int64_t n, int64_t context) {
  const MlaConfig& a = c.mla;
  const int64_t cd = a.cache_dim(c.n_rot), head_io = std::max({a.qk_nope, a.kv_lora_rank, a.v_dim});
  return (size_t)(n * cd + n * a.q_lora_rank + 2 * n * head_io + n * c.n_head * cd + n * c.n_head * a.kv_lora_rank +
                  context * cd + a.kv_lora_rank * context + n * c.n_head * context +
                  2 * n * c.n_ff_expert * a.n_expert_shared);
}

void ForwardPass::init_mla_scratch() {
  const ModelConfig& c = cfg_;
  const MlaConfig& a = c.mla;
  const int64_t n = max_batch_, ctx = cache_config_.context, cd = a.cache_dim(c.n_rot);
  const int64_t head_io = std::max({a.qk_nope, a.kv_lora_rank, a.v_dim});
  mla_kv_.resize((size_t)(n * cd));
  mla_qa_.resize((size_t)(n * a.q_lora_rank));
  mla_head_in_.resize((size_t)(n * head_io));
  mla_head_out_.resize((size_t)(n * head_io));
  mla_q_.resize((size_t)(n * c.n_head * cd));
  mla_lat_.resize((size_t)(n * c.n_head * a.kv_lora_rank));
  mla_keys_.resize((size_t)(ctx * cd));
  mla_lat_t_.resize((size_t)(a.kv_lora_rank * ctx));
  mla_scores_.resize((size_t)(n * c.n_head * ctx));
  mla_sh_gate_.resize((size_t)(n * c.n_ff_expert * a.n_expert_shared));
  mla_sh_up_.resize(mla_sh_gate_.size());
  // att_ holds n_head * v_dim per token (sized for n_head * head_dim, which may be smaller).
  if (att_.size() < (size_t)(n * c.n_head * a.v_dim)) att_.resize((size_t)(n * c.n_head * a.v_dim));
}

void ForwardPass::layer_mla(int64_t l, int64_t n) {
  const ModelConfig& c = cfg_;
  const LayerWeights& L = model_.weights().layers[(size_t)l];
  const int64_t D = c.n_embd;
  for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&x_[(size_t)(i * D)], L.attn_norm.data(), &xb_[(size_t)(i * D)], D, c.rms_eps);
  attention_mla(l, n);
  mm(L.wo, att_.data(), n, out_.data());
  kt_.add(x_.data(), out_.data(), x_.data(), n * D);

  for (int64_t i = 0; i < n; ++i) kt_.rmsnorm(&x_[(size_t)(i * D)], L.ffn_norm.data(), &xb_[(size_t)(i * D)], D, c.rms_eps);
  if (l < c.mla.n_layer_dense_lead) {
    feed_forward_dense(L, n);
  } else {
    route_mla(L, n);
    moe_experts(L, n);
    const MlaLayerWeights& M = L.mla;
    if (M.gate_shexp.present()) {  // shared experts: every token, unweighted
      mm(M.gate_shexp, xb_.data(), n, mla_sh_gate_.data());
      mm(M.up_shexp, xb_.data(), n, mla_sh_up_.data());
      kt_.swiglu(mla_sh_gate_.data(), mla_sh_up_.data(), mla_sh_gate_.data(), n * M.gate_shexp.rows);
      mm(M.down_shexp, mla_sh_gate_.data(), n, ye_.data());
      kt_.add(out_.data(), ye_.data(), out_.data(), n * D);
    }
  }
  kt_.add(x_.data(), out_.data(), x_.data(), n * D);
}

// xb_ (normed input) -> att_ ([n][n_head][v_dim], before attn_output), storing each token's
// latent row in its sequence's cache.
void ForwardPass::attention_mla(int64_t l, int64_t n) {
  const ModelConfig& c = cfg_;
  const MlaConfig& a = c.mla;
  const MlaLayerWeights& M = model_.weights().layers[(size_t)l].mla;
  const LayerWeights& L = model_.weights().layers[(size_t)l];
  const int64_t H = c.n_head, hd = c.head_dim, R = a.kv_lora_rank, rot = c.n_rot, cd = a.cache_dim(rot);
  const int64_t nope = a.qk_nope, vd = a.v_dim;

  // Queries [n][H][qk_nope + n_rot], through the q LoRA when the model has one.
  if (M.wq_a.present()) {
    mm(M.wq_a, xb_.data(), n, mla_qa_.data());
    for (int64_t i = 0; i < n; ++i) {
      float* qa = &mla_qa_[(size_t)(i * a.q_lora_rank)];
      kt_.rmsnorm(qa, M.q_a_norm.data(), qa, a.q_lora_rank, c.rms_eps);
    }
    mm(M.wq_b, mla_qa_.data(), n, q_.data());
  } else {
    mm(L.wq, xb_.data(), n, q_.data());
  }
  // The latent and the shared roped key part [n][R + n_rot].
  mm(M.wkv_a, xb_.data(), n, mla_kv_.data());
  for (int64_t i = 0; i < n; ++i) {
    const float* cs = &cs_full_[(size_t)(i * rot)];
    float* kv = &mla_kv_[(size_t)(i * cd)];
    kt_.rmsnorm(kv, M.kv_a_norm.data(), kv, R, c.rms_eps);
    kt_.rope(kv + R, 1, rot, rot, cs, c.rope_mode);
    for (int64_t h = 0; h < H; ++h) {
      float* q = &q_[(size_t)((i * H + h) * hd)];
      kt_.rope(q + nope, 1, rot, rot, cs, c.rope_mode);
      std::memcpy(&mla_q_[(size_t)((i * H + h) * cd + R)], q + nope, (size_t)rot * sizeof(float));
    }
  }
  for (const Run& run : runs_)
    run.cache->store_block(l, pos_[(size_t)run.begin], run.end - run.begin, &mla_kv_[(size_t)(run.begin * cd)], nullptr);

  // Absorb each head's no-rope query into latent space: q_lat = W_kb,h^T q_nope (k_b is stored transposed).
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&mla_head_in_[(size_t)(i * nope)], &q_[(size_t)((i * H + h) * hd)], (size_t)nope * sizeof(float));
    mm(M.k_b.head(h), mla_head_in_.data(), n, mla_head_out_.data());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&mla_q_[(size_t)((i * H + h) * cd)], &mla_head_out_[(size_t)(i * R)], (size_t)R * sizeof(float));
  }

  for (const Run& run : runs_) attend_latent_run(run, l);

  // Each head's attended latent -> its value: W_vb,h lat.
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&mla_head_in_[(size_t)(i * R)], &mla_lat_[(size_t)((i * H + h) * R)], (size_t)R * sizeof(float));
    mm(M.v_b.head(h), mla_head_in_.data(), n, mla_head_out_.data());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&att_[(size_t)((i * H + h) * vd)], &mla_head_out_[(size_t)(i * vd)], (size_t)vd * sizeof(float));
  }
}

// Attention of one sequence's queries over its cached latent rows [0, last position]: the
// scores are one GEMM (cache rows x queries), the softmax is causal per query, and the attended
// latents another GEMM (latents transposed x probabilities); both through matmul on f32 copies.
void ForwardPass::attend_latent_run(const Run& run, int64_t l) {
  const ModelConfig& c = cfg_;
  const int64_t H = c.n_head, R = c.mla.kv_lora_rank, cd = c.mla.cache_dim(c.n_rot);
  const int64_t len = pos_[(size_t)(run.end - 1)] + 1;  // positions visible to the last query
  const int64_t nq = (run.end - run.begin) * H;         // (query, head) rows
  const uint16_t* keys = run.cache->view(l).k;

  pool_.parallel_for(len, 64, [&](int64_t b, int64_t e, int) {
    kt_.f16_to_f32(keys + b * cd, &mla_keys_[(size_t)(b * cd)], (e - b) * cd);
    for (int64_t j = 0; j < R; ++j)
      for (int64_t s = b; s < e; ++s) mla_lat_t_[(size_t)(j * len + s)] = mla_keys_[(size_t)(s * cd + j)];
  });
  float* scores = mla_scores_.data();
  matmul(pool_, kt_, DType::F32, mla_keys_.data(), len, cd, &mla_q_[(size_t)(run.begin * H * cd)], nq, scores, mm_scratch_);
  for (int64_t t = 0; t < nq; ++t) {
    const int64_t visible = pos_[(size_t)(run.begin + t / H)] + 1;
    float* row = scores + t * len;
    kt_.scale(row, c.attn_scale, row, visible);
    kt_.softmax(row, visible);
    std::fill(row + visible, row + len, 0.0f);
  }
  matmul(pool_, kt_, DType::F32, mla_lat_t_.data(), R, len, scores, nq, &mla_lat_[(size_t)(run.begin * H * R)], mm_scratch_);
}

// deepseek2's router: softmax or sigmoid probabilities; the top k by probability plus the
// selection bias (exp_probs_b) when present; weights are the chosen probabilities, renormalized
// when expert_weights_norm, times expert_weights_scale when set.
void ForwardPass::route_mla(const LayerWeights& L, int64_t n) {
  const ModelConfig& c = cfg_;
  const MlaConfig& a = c.mla;
  const int64_t E = c.n_expert, K = c.n_expert_used;
  const std::vector<float>& bias = L.mla.exp_probs_b;
  mm(L.router, xb_.data(), n, router_logits_.data());
  float sel[256];
  for (int64_t i = 0; i < n; ++i) {
    float* p = &router_logits_[(size_t)(i * E)];
    if (a.gating == ExpertGating::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + std::exp(-p[e]));
    } else {
      kt_.softmax(p, E);
    }
    for (int64_t e = 0; e < E; ++e) sel[e] = bias.empty() ? p[e] : p[e] + bias[(size_t)e];
    int32_t* idx = &expert_idx_[(size_t)(i * K)];
    float* wt = &expert_w_[(size_t)(i * K)];
    for (int64_t j = 0; j < K; ++j) {  // k passes: k and E are small (6-8 of 64-256)
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (sel[e] != -std::numeric_limits<float>::infinity() && (best < 0 || sel[e] > sel[best])) best = e;
      idx[j] = (int32_t)best;
      wt[j] = p[best];
      sel[best] = -std::numeric_limits<float>::infinity();
    }
    if (c.expert_weights_norm) {
      float sum = 0.0f;
      for (int64_t j = 0; j < K; ++j) sum += wt[j];
      sum = std::max(sum, 6.103515625e-5f);  // ggml clamps the sum (the smallest normal f16)
      for (int64_t j = 0; j < K; ++j) wt[j] /= sum;
    }
    if (a.expert_weights_scale != 0.0f)
      for (int64_t j = 0; j < K; ++j) wt[j] *= a.expert_weights_scale;
  }
}

}  // namespace edgellm
