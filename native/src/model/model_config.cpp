#include "model/model_config.h"
#include "model/config_errors.h"

#include <cmath>
#include <iterator>
#include <string>

namespace edgellm {

namespace {

std::string str(int64_t v) { return config_str(v); }
[[noreturn]] void corrupt(const GgufFile& f, const std::string& what) { config_corrupt(f, what); }
[[noreturn]] void unsupported(const GgufFile& f, const std::string& what) { config_unsupported(f, what); }

// gemma3 alternates 5 sliding-window layers with 1 global layer (llama.cpp's swa pattern 6).
constexpr int64_t kGemma3SwaPattern = 6;
constexpr float kGemma3SwaRopeBase = 10000.0f;
// gemma2: every other layer is sliding-window unless attention.sliding_window_pattern says
// otherwise, with llama.cpp's defaults for the window and the soft-caps when their keys are absent.
constexpr int64_t kGemma2SwaPattern = 2;
constexpr int64_t kGemma2SlidingWindow = 4096;
constexpr float kGemma2AttnSoftcap = 50.0f;
constexpr float kGemma2FinalSoftcap = 30.0f;
// smollm3: layers 3, 7, 11, ... (every 4th) use no positional encoding at all (NoPE).
constexpr int64_t kSmollm3NoRopeStep = 4;

// Layer l attends to a window when l % pattern < pattern - 1 (llama.cpp's set_swa_pattern).
void set_swa_pattern(ModelConfig& c, int64_t pattern) {
  for (int64_t l = 0; l < c.n_layer; ++l) c.layer_is_swa[(size_t)l] = l % pattern < pattern - 1;
}

// Phi-3/3.5/4-mini: NeoX RoPE; the 128k models carry LongRoPE factors (rope_factors_long/short)
// with the original context they switch at, and a cos/sin scale (rope.scaling.attn_factor).
// llama.cpp ignores attention.sliding_window for phi3 (its Phi SWA is disabled), so does edgellm:
// every layer attends to the whole context, as in the oracle.
void read_phi3(const GgufFile& f, ModelConfig& c) {
  const GgufMetadata& m = f.metadata();
  const std::string p = c.arch_name + ".";
  c.rope_mode = RopeMode::NeoX;
  c.sliding_window = 0;
  c.rope.attn_factor = m.get_f32(p + "rope.scaling.attn_factor", 1.0f);
  const bool has_long = f.find_tensor("rope_factors_long.weight") != nullptr;
  const bool has_short = f.find_tensor("rope_factors_short.weight") != nullptr;
  if (has_long != has_short) corrupt(f, "rope_factors_long.weight and rope_factors_short.weight come as a pair");
  if (has_long && !c.rope_freq_factors) {
    c.rope_orig_context = m.get_u32(p + "rope.scaling.original_context_length", (uint32_t)c.context_length);
    if (c.rope_orig_context <= 0) corrupt(f, "rope.scaling.original_context_length must be positive");
  }
  c.rope_swa = c.rope;
}

// Gemma 2: gemma3's post-norms, GeGLU and sqrt(n_embd) embedding scale, without QK-norm, with
// soft-capped attention scores and logits, and every other layer sliding-window.
void read_gemma2(const GgufFile& f, ModelConfig& c) {
  const GgufMetadata& m = f.metadata();
  const std::string p = c.arch_name + ".";
  c.rope_mode = RopeMode::NeoX;
  c.post_norms = true;
  c.ffn_act = FfnActivation::GeGlu;
  c.embd_scale = std::sqrt((float)c.n_embd);
  c.attn_softcap = m.get_f32(p + "attn_logit_softcapping", kGemma2AttnSoftcap);
  c.final_softcap = m.get_f32(p + "final_logit_softcapping", kGemma2FinalSoftcap);
  if (!(c.attn_softcap > 0.0f) || !(c.final_softcap > 0.0f)) corrupt(f, "the logit soft-capping values must be positive");
  c.sliding_window = m.get_u32(p + "attention.sliding_window", (uint32_t)kGemma2SlidingWindow);
  const int64_t pattern = m.get_u32(p + "attention.sliding_window_pattern", (uint32_t)kGemma2SwaPattern);
  if (pattern < 1) corrupt(f, "attention.sliding_window_pattern must be at least 1");
  if (c.sliding_window > 0) set_swa_pattern(c, pattern);
  c.rope_swa = c.rope;
  c.rope_swa.base = m.get_f32(p + "rope.freq_base_swa", c.rope.base);
  // Gemma 2 27B (46 layers) scales queries by 1/sqrt(n_embd / n_head) (query_pre_attn_scalar).
  if (c.n_layer == 46) c.attn_scale = 1.0f / std::sqrt((float)(c.n_embd / c.n_head));
}

// bert (bge, all-MiniLM) and nomic-bert: post-norm encoders read as llama.cpp reads them.
// bert adds learned absolute position embeddings (position_embd rows = context_length) and has
// no RoPE; nomic-bert ropes Q and K (NeoX) and has no position embeddings.
void read_encoder(const GgufFile& f, ModelConfig& c) {
  const GgufMetadata& m = f.metadata();
  const std::string p = c.arch_name + ".";
  c.encoder = true;
  c.norm_eps = m.get_f32(p + "attention.layer_norm_epsilon");
  if (!(c.norm_eps > 0.0f)) corrupt(f, "attention.layer_norm_epsilon must be positive");
  if (m.get_bool(p + "attention.causal", false))
    unsupported(f, "attention.causal is true: edgellm runs " + c.arch_name + " as a bidirectional encoder only");
  const uint32_t pooling = m.get_u32(p + "pooling_type", 0);
  if (pooling > (uint32_t)PoolingType::Rank) corrupt(f, "pooling_type " + str(pooling) + " is not one of 0 (none) .. 4 (rank)");
  c.pooling = (PoolingType)pooling;
  c.sliding_window = 0;
  if (c.arch == Arch::Bert) c.layer_uses_rope.assign((size_t)c.n_layer, false);
  else c.rope_mode = RopeMode::NeoX;
}

}  // namespace

const char* pooling_name(PoolingType p) {
  switch (p) {
    case PoolingType::None: return "none";
    case PoolingType::Mean: return "mean";
    case PoolingType::Cls: return "cls";
    case PoolingType::Last: return "last";
    case PoolingType::Rank: return "rank";
  }
  return "?";
}

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
    case Arch::Qwen3Moe: return "qwen3moe";
    case Arch::Gemma3: return "gemma3";
    case Arch::Phi3: return "phi3";
    case Arch::Gemma2: return "gemma2";
    case Arch::Olmoe: return "olmoe";
    case Arch::Smollm3: return "smollm3";
    case Arch::Deepseek2: return "deepseek2";
    case Arch::Bert: return "bert";
    case Arch::NomicBert: return "nomic-bert";
  }
  return "?";
}

bool ModelConfig::any_swa() const {
  for (bool b : layer_is_swa)
    if (b) return true;
  return false;
}

bool ModelConfig::all_swa() const {
  for (bool b : layer_is_swa)
    if (!b) return false;
  return !layer_is_swa.empty();
}

ModelConfig read_model_config(const GgufFile& f) {
  const GgufMetadata& m = f.metadata();
  ModelConfig c;
  c.arch_name = m.get_string("general.architecture");
  const std::string& a = c.arch_name;
  bool known = false;
  for (Arch x : kArchs) {
    if (a == arch_name(x)) {
      c.arch = x;
      known = true;
    }
  }
  if (!known) {
    std::string names;  // "llama, qwen2, ... and deepseek2"
    for (size_t k = 0; k < std::size(kArchs); ++k)
      names += (k == 0 ? "" : k + 1 == std::size(kArchs) ? " and " : ", ") + std::string(arch_name(kArchs[k]));
    unsupported(f, "architecture '" + a + "' is not supported (edgellm runs " + names + ")");
  }
  const std::string p = a + ".";
  if (c.arch == Arch::Deepseek2) {
    read_mla_config(f, c);
    c.layer_uses_rope.assign((size_t)c.n_layer, true);  // every layer ropes its key part
    return c;
  }

  c.n_embd = m.get_u32(p + "embedding_length");
  c.n_layer = m.get_u32(p + "block_count");
  c.n_head = m.get_u32(p + "attention.head_count");
  c.n_head_kv = m.get_u32(p + "attention.head_count_kv", (uint32_t)c.n_head);
  c.n_ff = m.get_u32(p + "feed_forward_length", 0);
  c.context_length = m.get_u32(p + "context_length", 2048);
  c.rms_eps = m.get_f32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (c.n_embd <= 0 || c.n_layer <= 0 || c.n_head <= 0 || c.n_head_kv <= 0)
    corrupt(f, "embedding_length, block_count, head_count and head_count_kv must be positive");
  if (c.n_head % c.n_head_kv != 0)
    corrupt(f, "head_count " + str(c.n_head) + " is not a multiple of head_count_kv " + str(c.n_head_kv));
  if (c.n_embd % c.n_head != 0 && !m.has(p + "attention.key_length"))
    corrupt(f, "embedding_length " + str(c.n_embd) + " is not a multiple of head_count " + str(c.n_head) +
                   " and attention.key_length is missing");
  c.head_dim = m.get_u32(p + "attention.key_length", (uint32_t)(c.n_embd / c.n_head));
  const int64_t v_dim = m.get_u32(p + "attention.value_length", (uint32_t)c.head_dim);
  if (v_dim != c.head_dim)
    unsupported(f, "attention.value_length " + str(v_dim) + " differs from key_length " + str(c.head_dim));
  c.n_rot = m.get_u32(p + "rope.dimension_count", (uint32_t)c.head_dim);
  if (c.n_rot <= 0 || c.n_rot > c.head_dim || c.n_rot % 2 != 0)
    corrupt(f, "rope.dimension_count " + str(c.n_rot) + " must be even and at most the head size " + str(c.head_dim));

  c.rope.base = m.get_f32(p + "rope.freq_base", 10000.0f);
  const std::string scaling = m.get_string(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    const float factor = m.get_f32(p + "rope.scaling.factor", 1.0f);
    if (!(factor > 0.0f)) corrupt(f, "rope.scaling.factor must be positive");
    c.rope.freq_scale = 1.0f / factor;
  } else if (scaling != "none") {
    unsupported(f, "RoPE scaling '" + scaling + "' is not supported (only linear)");
  }
  c.rope_freq_factors = f.find_tensor("rope_freqs.weight") != nullptr;
  c.rope_swa = c.rope;

  c.n_expert = m.get_u32(p + "expert_count", 0);
  c.n_expert_used = m.get_u32(p + "expert_used_count", 0);
  c.expert_weights_norm = m.get_bool(p + "expert_weights_norm", true);
  if (c.n_expert > 0) {
    if (c.n_expert > 256) unsupported(f, "expert_count " + str(c.n_expert) + " is above 256");
    if (c.n_expert_used <= 0 || c.n_expert_used > c.n_expert)
      corrupt(f, "expert_used_count " + str(c.n_expert_used) + " must be in 1.." + str(c.n_expert));
    c.n_ff_expert = m.get_u32(p + "expert_feed_forward_length", 0);
    if (c.n_ff_expert == 0) c.n_ff_expert = c.arch == Arch::Qwen3Moe ? c.n_ff / c.n_expert_used : c.n_ff;
  } else if (c.n_ff <= 0) {
    corrupt(f, "feed_forward_length is missing or zero");
  }

  c.attn_scale = 1.0f / std::sqrt((float)c.head_dim);
  c.sliding_window = m.get_u32(p + "attention.sliding_window", 0);
  c.layer_is_swa.assign((size_t)c.n_layer, false);
  c.layer_uses_rope.assign((size_t)c.n_layer, true);

  switch (c.arch) {
    case Arch::Llama:
      // Mistral: every layer attends to the last sliding_window positions. Mixtral-style MoE
      // when expert_count is present.
      if (c.sliding_window > 0) c.layer_is_swa.assign((size_t)c.n_layer, true);
      break;
    case Arch::Qwen2:
      c.rope_mode = RopeMode::NeoX;
      c.sliding_window = 0;  // Qwen2's use_sliding_window is off in every released model
      break;
    case Arch::Qwen3:
      c.rope_mode = RopeMode::NeoX;
      c.qk_norm = true;
      c.sliding_window = 0;
      break;
    case Arch::Qwen3Moe:
      c.rope_mode = RopeMode::NeoX;
      c.qk_norm = true;
      c.sliding_window = 0;
      if (c.n_expert == 0) corrupt(f, "qwen3moe needs expert_count and expert_used_count");
      break;
    case Arch::Gemma3:
      c.rope_mode = RopeMode::NeoX;
      c.qk_norm = true;
      c.post_norms = true;
      c.ffn_act = FfnActivation::GeGlu;
      c.embd_scale = std::sqrt((float)c.n_embd);
      if (c.sliding_window > 0) set_swa_pattern(c, kGemma3SwaPattern);
      c.rope_swa = RopeSpec{kGemma3SwaRopeBase, 1.0f};
      // Gemma 3 27B scales queries by 1/sqrt(n_embd / n_head) instead of 1/sqrt(head_dim)
      // (query_pre_attn_scalar); the 27B is the 62-layer model.
      if (c.n_layer == 62) c.attn_scale = 1.0f / std::sqrt((float)(c.n_embd / c.n_head));
      break;
    case Arch::Phi3:
      read_phi3(f, c);
      break;
    case Arch::Gemma2:
      read_gemma2(f, c);
      break;
    case Arch::Olmoe:
      c.rope_mode = RopeMode::NeoX;
      c.qk_norm_full = true;
      c.expert_weights_norm = false;  // the softmax over all experts, not renormalized over the top k
      c.sliding_window = 0;
      if (c.n_expert == 0) corrupt(f, "olmoe needs expert_count and expert_used_count");
      break;
    case Arch::Smollm3:
      c.sliding_window = 0;
      for (int64_t l = 0; l < c.n_layer; ++l) c.layer_uses_rope[(size_t)l] = (l + 1) % kSmollm3NoRopeStep != 0;
      break;
    case Arch::Deepseek2:  // read by read_mla_config
      break;
    case Arch::Bert:
    case Arch::NomicBert:
      read_encoder(f, c);
      break;
  }
  if (c.n_expert > 0 && c.arch != Arch::Llama && c.arch != Arch::Qwen3Moe && c.arch != Arch::Olmoe)
    unsupported(f, "experts (expert_count) are not supported for architecture '" + a + "'");

  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) corrupt(f, "tensor 'token_embd.weight' is missing");
  c.n_vocab = embd->ne[1];
  return c;
}

}  // namespace edgellm
