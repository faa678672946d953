// Hyperparameters of a model, read from its GGUF metadata, per architecture.
//
// One struct describes every supported architecture; the differences between them are a few
// named switches (biases, QK-norm, post-norms, GELU, embedding scale, experts, sliding window)
// that the forward pass tests one by one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/kernels.h"

namespace edgellm {

enum class Arch { Llama, Qwen2, Qwen3, Qwen3Moe, Gemma3, Phi3, Gemma2, Olmoe, Smollm3, Deepseek2, Bert, NomicBert };
// Every architecture read_model_config accepts, in the order its error and `supportedArchitectures()`
// list them (general.architecture names: arch_name); the last two are the embedding encoders.
inline constexpr Arch kArchs[] = {Arch::Llama,  Arch::Qwen2,  Arch::Qwen3,   Arch::Qwen3Moe,  Arch::Gemma3, Arch::Phi3,
                                  Arch::Gemma2, Arch::Olmoe,  Arch::Smollm3, Arch::Deepseek2, Arch::Bert,   Arch::NomicBert};

// The feed-forward gate activation: silu(gate) * up or gelu_tanh(gate) * up.
enum class FfnActivation { SwiGlu, GeGlu };

// RoPE parameters of one layer (gemma3's sliding-window layers use another base than its
// global ones).
struct RopeSpec {
  float base = 10000.0f;
  float freq_scale = 1.0f;  // 1 / linear scaling factor
  // attn_factor multiplies cos and sin (phi3 LongRoPE: rope.scaling.attn_factor). YaRN
  // (rope.scaling.type "yarn"): ext_factor 1 blends interpolated and extrapolated angles per pair
  // between the correction dims of beta_fast / beta_slow at n_ctx_orig, and attn_factor is the
  // cos/sin magnitude ggml is handed (it multiplies in 1 + 0.1 ln(1 / freq_scale) itself).
  float ext_factor = 0.0f;
  float attn_factor = 1.0f;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  int64_t n_ctx_orig = 0;
};

// How a deepseek2 router turns logits into expert probabilities (expert_gating_func: 1, 2).
enum class ExpertGating { Softmax = 1, Sigmoid = 2 };

// Multi-head latent attention (deepseek2): K and V come from one normed latent of kv_lora_rank
// per token, shared by every head, plus one roped key part of n_rot shared by every head.
struct MlaConfig {
  int64_t q_lora_rank = 0;   // 0: queries come from attn_q directly
  int64_t kv_lora_rank = 0;
  int64_t qk_nope = 0;       // per-head query/key dims without RoPE (head_dim = qk_nope + n_rot)
  int64_t v_dim = 0;         // per-head value dims
  bool split_kv_b = false;   // attn_k_b / attn_v_b (newer converters) instead of attn_kv_b
  int64_t n_layer_dense_lead = 0;  // the first layers have a dense FFN of n_ff
  int64_t n_expert_shared = 0;     // shared experts: one dense FFN of n_ff_expert * n_expert_shared
  float expert_weights_scale = 0.0f;  // routed weights are multiplied by this (0: not scaled)
  ExpertGating gating = ExpertGating::Softmax;
  float yarn_log_mul = 0.0f;  // mscale_all_dim (the file's rope.scaling.yarn_log_multiplier / 0.1)
  // The latent cache row: kv_lora_rank normed latent, then n_rot roped key dims.
  int64_t cache_dim(int64_t n_rot) const { return kv_lora_rank + n_rot; }
};

// How an encoder turns its tokens' hidden states into one embedding ({arch}.pooling_type, the
// values of llama.cpp's llama_pooling_type). None: no embedding is defined (the file says so);
// Rank: a reranker's classification head, which edgellm does not run.
enum class PoolingType { None = 0, Mean = 1, Cls = 2, Last = 3, Rank = 4 };

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string arch_name;  // general.architecture as written in the file

  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;   // per head, for Q, K and V (attention.key_length)
  int64_t n_ff = 0;       // dense FFN width (0 when every layer is MoE)
  int64_t n_expert = 0;   // 0: dense
  int64_t n_expert_used = 0;
  int64_t n_ff_expert = 0;  // width of one expert's FFN
  int64_t n_rot = 0;        // leading dims of each head that RoPE rotates
  int64_t context_length = 0;  // trained context (positions)
  float rms_eps = 1e-5f;

  RopeMode rope_mode = RopeMode::Normal;
  RopeSpec rope;          // full-attention layers
  RopeSpec rope_swa;      // sliding-window layers
  bool rope_freq_factors = false;  // rope_freqs.weight divides each frequency (llama 3.x)

  int64_t sliding_window = 0;       // W; 0 = none
  std::vector<bool> layer_is_swa;   // per layer: attends to the last W positions only

  float attn_scale = 0.0f;   // scores = (q . k) * attn_scale
  float embd_scale = 1.0f;   // token embeddings are multiplied by this (gemma: sqrt(n_embd))
  FfnActivation ffn_act = FfnActivation::SwiGlu;
  bool qk_norm = false;      // RMS-norm each head of Q and K before RoPE (qwen3, gemma3)
  bool post_norms = false;   // RMS-norm the attention and FFN outputs before the residual (gemma3)
  bool expert_weights_norm = true;  // top-k router weights renormalized to sum to 1
  MlaConfig mla;             // deepseek2 only

  // Appended per architecture (keep the order: other branches append here too).
  std::vector<bool> layer_uses_rope;  // per layer; smollm3's NoPE layers (every 4th) are false
  bool qk_norm_full = false;   // olmoe: RMS-norm all of Q and all of K (not per head) before RoPE
  float attn_softcap = 0.0f;   // gemma2: scores = c * tanh(scores / c); 0 = off
  float final_softcap = 0.0f;  // gemma2: logits = c * tanh(logits / c); 0 = off
  // phi3 LongRoPE: rope_factors_long.weight divides the frequencies when the context is longer
  // than this (the original context), rope_factors_short.weight otherwise. 0 = no such factors.
  int64_t rope_orig_context = 0;
  // Encoders (bert, nomic-bert): every token attends to every token of its input, the norms are
  // LayerNorms with bias (norm_eps), and the output is one pooled embedding, not logits.
  bool encoder = false;
  float norm_eps = 1e-12f;  // attention.layer_norm_epsilon
  PoolingType pooling = PoolingType::None;

  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
  bool is_moe() const { return n_expert > 0; }
  bool any_swa() const;
  bool all_swa() const;
};

// Reads the hyperparameters. Throws ModelError: E_MODEL_UNSUPPORTED for an architecture (or a
// feature of one) edgellm does not run, naming it; E_MODEL_CORRUPT for missing or inconsistent keys.
ModelConfig read_model_config(const GgufFile& file);
// deepseek2's keys (model_config_mla.cpp), on a config whose arch and arch_name are set.
void read_mla_config(const GgufFile& file, ModelConfig& c);

const char* arch_name(Arch a);
const char* pooling_name(PoolingType p);

}  // namespace edgellm
