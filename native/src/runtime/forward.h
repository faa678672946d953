// The forward pass: token ids in, next-token logits out, for a batch of (sequence, position,
// token) entries that may belong to several sequences, each with its own KvCache.
//
//   ForwardPass fwd(model, pool, {.context = 2048, .batch = 64});
//   KvCache seq(fwd.cache_config());
//   fwd.prefill(seq, prompt.data(), prompt.size(), false, logits);   // chunks of `batch` tokens
//   BatchToken step[] = {{&seq, pos, token, true}, {&other, pos2, token2, true}};
//   fwd.step(step, 2, logits);                                        // one pass over the weights
//
// A step runs every weight matmul once over all its tokens (a GEMM of up to 64 columns per
// kernel call) and attention per sequence against that sequence's cache. All scratch is
// allocated by the constructor; a step allocates nothing.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "kernels/kernels.h"
#include "model/lora.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "runtime/matmul.h"
#include "runtime/thread_pool.h"

namespace edgellm {

// A sequence would need a position past the context of its full-attention layers
// (the addon turns it into E_CONTEXT_FULL).
struct ContextFullError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ForwardOptions {
  int64_t context = 0;  // positions a full-attention layer holds per sequence; 0 = the model's
  int64_t batch = 64;   // most tokens per step: the prefill chunk and the ring layers' max_block
  // StreamingLLM: when >= 0, full-attention layers become rings keeping the first `sinks`
  // positions plus the last (context - sinks), so a sequence never runs out of context.
  // Sliding-window layers keep their own window either way.
  int64_t sinks = -1;
};

// A model's trained context can be far larger than a device wants to allocate (40960 for Qwen3);
// unless told otherwise, a loaded model holds at most this many positions per sequence.
constexpr int64_t kDefaultContextCap = 4096;

// The context a model gets when none is asked for: its trained context, at most kDefaultContextCap.
int64_t default_context(const ModelConfig& c);

// The KV layout every sequence of a pass with these options needs: sliding-window layers are
// rings of W + batch - 1 slots; full layers hold `context` positions (StreamingLLM rings with
// sinks). Metadata only: `edgellm inspect` sizes the cache with it without loading weights.
// Throws std::invalid_argument for a bad batch, context or sinks.
KvCacheConfig forward_cache_config(const ModelConfig& c, const ForwardOptions& opts);

// Bytes of scratch a ForwardPass allocates for `batch` tokens (activations, MoE routing and the
// matmul's quantized activations; not the logits, which the caller owns). deepseek2's latent
// attention also holds one sequence's cache in f32 for `context` positions (0: default_context).
size_t forward_scratch_bytes(const ModelConfig& c, int64_t batch, int64_t context = 0);

// cos/sin pairs for one position with YaRN (ggml's rope_yarn: per pair a blend of interpolated and
// extrapolated angles, magnitude spec.attn_factor times 1 + 0.1 ln(1 / freq_scale) when
// ext_factor is set). cs holds n_rot floats.
void rope_cache_yarn(int64_t pos, int64_t n_rot, const RopeSpec& spec, float* cs);

// Floats of deepseek2's latent-attention scratch for `batch` tokens and `context` positions.
size_t mla_scratch_floats(const ModelConfig& c, int64_t batch, int64_t context);

// One token of a step. A sequence's tokens must be contiguous in the batch with consecutive
// positions that continue its cache (the first one at cache->length(0)).
struct BatchToken {
  KvCache* cache;
  int64_t pos;
  int32_t token;
  bool logits;  // compute this position's next-token logits
  // The LoRA adapters this token runs with (model/lora.h); null or empty: the base model alone.
  // Neighbouring tokens with the same set pointer share one GEMM per adapted matrix, so callers
  // put the sequences of one set next to each other.
  const LoraSet* lora = nullptr;
};

// Sees inside a step (`edgellm trace`, runtime/trace.h). Only that debugging path sets one; the
// normal path pays one null check per layer and per logits row.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // Layer `layer`'s attention just ran for one sequence's run of the step: a.q holds the run's
  // queries after norm and RoPE, a.kv its cache with the run's keys stored, a.out the kernel's output.
  virtual void attention(int64_t layer, const AttentionArgs& a) = 0;
  // The residual stream after layer `layer`: n rows of n_embd floats, row i at position pos[i].
  virtual void layer_output(int64_t layer, const int64_t* pos, const float* x, int64_t n) = 0;
  // The final norm's output (n_embd floats) at position pos, for each token whose logits were asked.
  virtual void final_norm(int64_t pos, const float* x) = 0;
};

class ForwardPass {
 public:
  ForwardPass(const Model& model, ThreadPool& pool, const ForwardOptions& opts, const KernelTable& kt = kernels());

  // The cache layout every sequence of this pass needs (full, window and sink layers).
  const KvCacheConfig& cache_config() const { return cache_config_; }
  // True when every layer is a ring: sequences never hit E_CONTEXT_FULL.
  bool unbounded() const;
  int64_t max_batch() const { return max_batch_; }
  int64_t context() const { return cache_config_.context; }
  const Model& model() const { return model_; }
  ThreadPool& pool() const { return pool_; }

  // Evaluates n entries (split into steps of max_batch()). For each entry with logits = true,
  // writes n_vocab floats to `logits`, one row after the other in batch order; returns the rows.
  // Throws std::invalid_argument for a token outside the vocabulary or a position that does not
  // continue its sequence, ContextFullError when a full-attention layer would pass its context
  // (checked before anything is computed, so the caches are unchanged).
  int64_t step(const BatchToken* batch, int64_t n, float* logits);

  // Evaluates n tokens of one sequence from position cache.length(0) on, in chunks of
  // max_batch(). Logits of every position (all_positions: n rows) or of the last one (1 row).
  // `lora`: the sequence's adapters (null: none).
  void prefill(KvCache& cache, const int32_t* tokens, int64_t n, bool all_positions, float* logits,
               const LoraSet* lora = nullptr);

  // Steps report to `o` until it is reset to null (deepseek2's latent layers report nothing:
  // runtime/trace.cpp refuses that architecture).
  void set_observer(ForwardObserver* o) { observer_ = o; }

 private:
  struct Run {  // the tokens [begin, end) of one sequence within a step
    KvCache* cache;
    int64_t begin, end;
  };
  struct LoraSpan {  // the columns [begin, end) of a matmul that run with one adapter set
    const LoraSet* set;
    int64_t begin, end;
  };
  void check(const BatchToken* batch, int64_t n);
  int64_t step_block(const BatchToken* batch, int64_t n, float* logits);
  void attention_block(int64_t layer, int64_t n);
  void feed_forward_dense(const LayerWeights& L, int64_t n);
  void feed_forward_moe(const LayerWeights& L, int64_t n);
  void moe_experts(const LayerWeights& L, int64_t n);  // the experts expert_idx_/expert_w_ chose
  // deepseek2 (forward_mla.cpp): one whole layer, its latent attention, its router.
  void init_mla_scratch();
  void layer_mla(int64_t layer, int64_t n);
  void attention_mla(int64_t layer, int64_t n);
  void attend_latent_run(const Run& run, int64_t layer);
  void route_mla(const LayerWeights& L, int64_t n);
  // y = W x over ncols columns, plus each LoRA pair adapting W for the columns lora_cols_ lists.
  // same_input: x is the previous mm's input, unchanged since (its quantization is reused; matmul()
  // checks the input it cached, so a LoRA product in between only costs a requantization).
  void mm(const WeightMatrix& w, const float* x, int64_t ncols, float* y, bool same_input = false);
  void apply_lora(const WeightMatrix& w, const float* x, float* y);
  static void add_lora_column(std::vector<LoraSpan>& spans, const LoraSet* set, int64_t col);
  void rope_table(int64_t pos, const RopeSpec& spec, float* cs) const;

  const Model& model_;
  const ModelConfig& cfg_;
  ThreadPool& pool_;
  const KernelTable& kt_;
  KvCacheConfig cache_config_;
  int64_t max_batch_;
  const std::vector<float>* rope_factors_;
  ForwardObserver* observer_ = nullptr;  // dividing RoPE frequencies: none, rope_freqs, or LongRoPE's pick

  // Scratch for up to max_batch_ tokens (llama2.c's RunState).
  std::vector<float> x_;        // [n][n_embd] the residual stream
  std::vector<float> xb_;       // [n][n_embd] normed input of a sublayer
  std::vector<float> q_;        // [n][q_dim]
  std::vector<float> k_, v_;    // [n][kv_dim]
  std::vector<float> att_;      // [n][q_dim] attention output per head
  std::vector<float> out_;      // [n][n_embd] a sublayer's output
  std::vector<float> gate_, up_;  // [n][n_ff or n_ff_expert]
  std::vector<float> cs_full_, cs_swa_;  // [n][n_rot] RoPE cos/sin per token
  std::vector<int64_t> pos_;    // [n]
  std::vector<Run> runs_;
  std::vector<int64_t> run_of_;  // [n] token -> run
  std::vector<AttentionArgs> att_args_;  // per run
  // MoE routing: per token the chosen experts and weights, per expert the tokens it serves.
  std::vector<float> router_logits_;   // [n][n_expert]
  std::vector<int32_t> expert_idx_;    // [n][n_expert_used]
  std::vector<float> expert_w_;        // [n][n_expert_used]
  std::vector<int64_t> expert_count_;  // [n_expert]
  std::vector<int64_t> expert_tokens_;  // [n_expert][n] token index
  std::vector<float> expert_token_w_;  // [n_expert][n]
  std::vector<float> xe_;              // [n][n_embd] tokens gathered for one expert
  std::vector<float> ye_;              // [n][n_embd] that expert's output
  MatmulScratch mm_scratch_;
  // LoRA: spans of the step's tokens (and of its logits rows, for the classifier) by adapter set;
  // lora_cols_ points at the one that describes the columns mm() is given. lora_ax_ holds A x
  // ([n][rank]), lora_bax_ B (A x) ([n][rows]); both grow on the first step that needs more
  // (loading a larger adapter), and are otherwise reused.
  std::vector<LoraSpan> lora_tokens_, lora_rows_;
  const std::vector<LoraSpan>* lora_cols_ = &lora_tokens_;
  std::vector<float> lora_ax_, lora_bax_;
  // deepseek2's latent attention (sizes in forward_mla.cpp's init_mla_scratch).
  std::vector<float> mla_kv_;      // [n][kv_lora_rank + n_rot] latent (normed) and roped key part
  std::vector<float> mla_qa_;      // [n][q_lora_rank] the q LoRA's inner activations
  std::vector<float> mla_head_in_, mla_head_out_;  // [n][max dims] one head's gathered input / output
  std::vector<float> mla_q_;       // [n][n_head][kv_lora_rank + n_rot] queries in latent space
  std::vector<float> mla_lat_;     // [n][n_head][kv_lora_rank] attended latents
  std::vector<float> mla_keys_;    // [context][kv_lora_rank + n_rot] one sequence's cache in f32
  std::vector<float> mla_lat_t_;   // [kv_lora_rank][context] its latents transposed (the values)
  std::vector<float> mla_scores_;  // [n][n_head][context]
  std::vector<float> mla_sh_gate_, mla_sh_up_;  // [n][n_ff_expert * n_expert_shared]
};

}  // namespace edgellm
