// deepseek2 (DeepSeek-V2, V2-Lite, V2.5, V3): multi-head latent attention, shared experts, leading
// dense layers, YaRN. Keys and defaults as llama.cpp's loader reads them.
#include <cmath>
#include <string>

#include "model/model_config.h"
#include "model/config_errors.h"

namespace edgellm {

namespace {

// YaRN's magnitude correction for a context extended by `factor` (HF's yarn_get_mscale).
float yarn_mscale(float factor, float mscale) { return factor <= 1.0f ? 1.0f : 0.1f * mscale * std::log(factor) + 1.0f; }

}  // namespace

void read_mla_config(const GgufFile& f, ModelConfig& c) {
  const GgufMetadata& m = f.metadata();
  const std::string p = c.arch_name + ".";
  MlaConfig& a = c.mla;

  c.n_embd = m.get_u32(p + "embedding_length");
  c.n_layer = m.get_u32(p + "block_count");
  c.n_head = m.get_u32(p + "attention.head_count");
  c.context_length = m.get_u32(p + "context_length", 2048);
  c.rms_eps = m.get_f32(p + "attention.layer_norm_rms_epsilon", 1e-6f);
  c.n_ff = m.get_u32(p + "feed_forward_length", 0);
  if (c.n_embd <= 0 || c.n_layer <= 0 || c.n_head <= 0)
    config_corrupt(f, "embedding_length, block_count and head_count must be positive");

  a.q_lora_rank = m.get_u32(p + "attention.q_lora_rank", 0);
  a.kv_lora_rank = m.get_u32(p + "attention.kv_lora_rank");
  c.n_rot = m.get_u32(p + "rope.dimension_count");
  // Newer converters write the absorbed (MQA) view: key_length = kv_lora_rank + rope dims,
  // value_length = kv_lora_rank, and the per-head sizes under *_mla with attn_k_b / attn_v_b.
  a.split_kv_b = m.has(p + "attention.key_length_mla");
  if (a.split_kv_b) {
    c.head_dim = m.get_u32(p + "attention.key_length_mla");
    a.v_dim = m.get_u32(p + "attention.value_length_mla", (uint32_t)c.head_dim);
  } else {
    c.head_dim = m.get_u32(p + "attention.key_length");
    a.v_dim = m.get_u32(p + "attention.value_length", (uint32_t)c.head_dim);
  }
  a.qk_nope = c.head_dim - c.n_rot;
  if (a.kv_lora_rank <= 0 || c.n_rot <= 0 || c.n_rot % 2 != 0 || a.qk_nope <= 0 || a.v_dim <= 0)
    config_corrupt(f, "kv_lora_rank " + config_str(a.kv_lora_rank) + ", rope.dimension_count " + config_str(c.n_rot) + " and key_length " +
                   config_str(c.head_dim) + " must give positive latent, even rope and positive no-rope dims");
  // The attention scores treat the latent row as an MQA key of one head.
  c.n_head_kv = 1;

  a.n_layer_dense_lead = m.get_u32(p + "leading_dense_block_count", 0);
  c.n_expert = m.get_u32(p + "expert_count", 0);
  c.n_expert_used = m.get_u32(p + "expert_used_count", 0);
  c.n_ff_expert = m.get_u32(p + "expert_feed_forward_length", 0);
  a.n_expert_shared = m.get_u32(p + "expert_shared_count", 0);
  a.expert_weights_scale = m.get_f32(p + "expert_weights_scale", 0.0f);
  c.expert_weights_norm = m.get_bool(p + "expert_weights_norm", false);
  const uint32_t gating = m.get_u32(p + "expert_gating_func", 0);  // 0: absent (V2, V2.5): softmax
  if (gating > 2) config_unsupported(f, "expert_gating_func " + config_str(gating) + " is not supported (1 softmax, 2 sigmoid)");
  a.gating = gating == 2 ? ExpertGating::Sigmoid : ExpertGating::Softmax;
  if (a.n_layer_dense_lead > c.n_layer) config_corrupt(f, "leading_dense_block_count is larger than block_count");
  if (a.n_layer_dense_lead < c.n_layer) {
    if (c.n_expert <= 0 || c.n_expert > 256 || c.n_expert_used <= 0 || c.n_expert_used > c.n_expert)
      config_corrupt(f, "expert_count " + config_str(c.n_expert) + " must be in 1..256 and expert_used_count " + config_str(c.n_expert_used) +
                     " in 1..expert_count");
    if (c.n_ff_expert <= 0) config_corrupt(f, "expert_feed_forward_length is missing or zero");
  }
  if (a.n_layer_dense_lead > 0 && c.n_ff <= 0) config_corrupt(f, "feed_forward_length is missing or zero");

  // RoPE, on the n_rot dims of each head only, adjacent pairs (llama.cpp's NORM for deepseek2).
  c.rope_mode = RopeMode::Normal;
  c.rope.base = m.get_f32(p + "rope.freq_base", 10000.0f);
  const std::string scaling = m.get_string(p + "rope.scaling.type", "none");
  float factor = 1.0f;
  if (scaling == "yarn" || scaling == "linear") {
    factor = m.get_f32(p + "rope.scaling.factor", 1.0f);
    if (!(factor > 0.0f)) config_corrupt(f, "rope.scaling.factor must be positive");
    c.rope.freq_scale = 1.0f / factor;
  } else if (scaling != "none") {
    config_unsupported(f, "RoPE scaling '" + scaling + "' is not supported for deepseek2 (yarn, linear)");
  }
  // The converter writes 0.1 * mscale_all_dim; llama.cpp divides it back.
  if (m.has(p + "rope.scaling.yarn_log_multiplier"))
    a.yarn_log_mul = m.get_f32(p + "rope.scaling.yarn_log_multiplier") / 0.1f;
  float mscale = 1.0f;  // what the scores are scaled by twice (q and k), as llama.cpp's kq_scale
  if (scaling == "yarn") {
    RopeSpec& r = c.rope;
    r.ext_factor = 1.0f;
    r.n_ctx_orig = m.get_u32(p + "rope.scaling.original_context_length", (uint32_t)c.context_length);
    r.beta_fast = m.get_f32(p + "rope.scaling.yarn_beta_fast", 32.0f);
    r.beta_slow = m.get_f32(p + "rope.scaling.yarn_beta_slow", 1.0f);
    // llama.cpp: with a log multiplier, DeepSeek-V2 takes mscale == mscale_all_dim, so the ratio
    // of the two corrections is 1; then it cancels the 1 + 0.1 ln(factor) ggml's rope multiplies in.
    const float ratio = a.yarn_log_mul != 0.0f ? 1.0f : yarn_mscale(factor, 1.0f);
    r.attn_factor = ratio / (1.0f + 0.1f * std::log(factor)) * m.get_f32(p + "rope.scaling.attn_factor", 1.0f);
    const float attn_factor_org = r.attn_factor * (1.0f + 0.1f * std::log(factor));
    mscale = attn_factor_org * (1.0f + 0.1f * a.yarn_log_mul * std::log(factor));
  }
  c.rope_swa = c.rope;
  c.attn_scale = mscale * mscale / std::sqrt((float)c.head_dim);
  c.layer_is_swa.assign((size_t)c.n_layer, false);

  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) config_corrupt(f, "tensor 'token_embd.weight' is missing");
  c.n_vocab = embd->ne[1];
}

}  // namespace edgellm
