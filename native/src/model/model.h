// A loaded model: its GGUF file (memory-mapped), hyperparameters, and weights bound to tensor
// views with every shape checked against the hyperparameters.
//
// Matrices stay in the mapping in their file type; only the small vectors (norm weights, biases,
// RoPE frequency factors) are converted to f32 copies. Exception: with the neon-dotprod table
// the Q4_0, Q4_K and Q6_K matrices that only matmul() reads are repacked in place to Q4_0_X4,
// Q4_K_X4 and Q6_K_X4 (quant/repack.h;
// EDGELLM_REPACK=0 turns it off), in private copies of the mapping's pages, except the routed
// experts of an MoE too large to keep resident (ModelWeights::experts_paged).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/model_config.h"

namespace edgellm {

// `rows` rows of `cols` elements of `type`, contiguous: y = W x reads W row by row.
struct WeightMatrix {
  DType type = DType::F32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  bool present() const { return data != nullptr; }
  size_t row_bytes() const { return dtype_row_bytes(type, cols); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + (size_t)r * row_bytes(); }
};

// n_expert matrices of the same shape stored one after the other (ggml's [cols, rows, n_expert]).
struct ExpertMatrices {
  WeightMatrix first;  // expert 0
  int64_t n_expert = 0;
  // Set when the experts are paged (ModelWeights::experts_paged): the mapping they are read from.
  const GgufFile* paged_from = nullptr;

  size_t expert_bytes() const { return (size_t)first.rows * first.row_bytes(); }
  WeightMatrix expert(int64_t e) const {
    WeightMatrix w = first;
    w.data = static_cast<const uint8_t*>(first.data) + (size_t)e * expert_bytes();
    return w;
  }
  // Paged experts: asks the kernel to start reading expert e's slice now (a hint; no-op otherwise).
  void will_need(int64_t e) const {
    if (paged_from) paged_from->advise_will_need(expert(e).data, expert_bytes());
  }
};

// One matrix per attention head, `stride_bytes` apart (deepseek2's per-head absorption matrices:
// a 3-D tensor, or every head's slice of attn_kv_b).
struct HeadMatrices {
  WeightMatrix first;  // head 0
  int64_t n_head = 0;
  size_t stride_bytes = 0;

  WeightMatrix head(int64_t h) const {
    WeightMatrix w = first;
    w.data = static_cast<const uint8_t*>(first.data) + (size_t)h * stride_bytes;
    return w;
  }
};

// deepseek2's multi-head latent attention and shared experts (MlaConfig).
struct MlaLayerWeights {
  WeightMatrix wq_a, wq_b;           // q LoRA (q_lora_rank > 0); else LayerWeights::wq
  std::vector<float> q_a_norm;       // [q_lora_rank]
  WeightMatrix wkv_a;                // attn_kv_a_mqa: [kv_lora_rank + n_rot rows][n_embd]
  std::vector<float> kv_a_norm;      // [kv_lora_rank]
  // Per head: k_b maps a head's no-rope query into latent space ([kv_lora_rank rows][qk_nope]);
  // v_b maps the attended latent to the head's value ([v_dim rows][kv_lora_rank]).
  HeadMatrices k_b, v_b;
  std::vector<float> k_b_owned;      // k_b transposed out of attn_kv_b (older files), f32
  std::vector<float> exp_probs_b;    // [n_expert] selection bias, when present
  WeightMatrix gate_shexp, up_shexp, down_shexp;  // shared experts (MoE layers)
};

struct LayerWeights {
  std::vector<float> attn_norm;
  WeightMatrix wq, wk, wv, wo;
  std::vector<float> bq, bk, bv;           // empty when the model has no QKV biases
  std::vector<float> q_norm, k_norm;       // [head_dim], when qk_norm
  std::vector<float> attn_post_norm;       // when post_norms
  std::vector<float> ffn_norm;
  WeightMatrix ffn_gate, ffn_up, ffn_down;  // dense FFN
  WeightMatrix router;                      // MoE: [n_expert rows][n_embd]
  ExpertMatrices gate_exps, up_exps, down_exps;
  std::vector<float> ffn_post_norm;        // when post_norms
  MlaLayerWeights mla;                     // deepseek2
  // Encoders (post-norm): attention output bias, the LayerNorm after attention and the one
  // after the FFN (weight and bias each), the FFN biases (bert). Empty when absent.
  std::vector<float> bo;
  std::vector<float> attn_out_norm, attn_out_norm_b;
  std::vector<float> ffn_up_b, ffn_down_b;
  std::vector<float> layer_out_norm, layer_out_norm_b;
};

struct ModelWeights {
  WeightMatrix token_embd;  // [n_vocab rows][n_embd]
  std::vector<float> output_norm;
  WeightMatrix output;      // [n_vocab rows][n_embd]; token_embd when tied
  bool tied_output = false;
  std::vector<float> rope_freq_factors;  // [n_rot / 2] when present
  // phi3 LongRoPE, [n_rot / 2] each when config.rope_orig_context > 0: the forward pass picks one
  // by its context (long beyond the original context).
  std::vector<float> rope_factors_long, rope_factors_short;
  std::vector<LayerWeights> layers;
  // Encoders: learned absolute positions (bert; [context_length rows][n_embd]), token type 0's
  // embedding (every token is "sentence A", as in llama.cpp), the LayerNorm of the embeddings.
  WeightMatrix position_embd;
  std::vector<float> token_type0;
  std::vector<float> embd_norm, embd_norm_b;
  // An MoE whose weights are larger than this process can keep resident (see page_experts in
  // model.cpp): the routed experts are read from the page cache on demand, as the router picks
  // them, and stay as stored (never repacked, which would pin private copies of every expert in RAM).
  bool experts_paged = false;
};

// What `edgellm inspect` and Model.info() report about the file.
struct ModelStats {
  int64_t n_params = 0;       // elements of every tensor in the file
  uint64_t weight_bytes = 0;  // bytes of tensor data
  uint64_t file_bytes = 0;
  // Bytes of the routed experts (blk.N.ffn_{gate,up,down}_exps): what an MoE reads only a part
  // of per token, and can leave to the page cache when the whole file does not fit in RAM.
  uint64_t expert_bytes = 0;
  std::map<std::string, int64_t> tensor_types;  // type name -> number of tensors
  std::map<std::string, uint64_t> tensor_type_bytes;  // type name -> bytes of those tensors
  // Tensors of types edgellm does not run, in file order (a file opened with UnknownTensorTypes::Keep).
  std::vector<const GgufTensor*> unrunnable;
};

// The same, from the file's tensor table alone (no weights read).
ModelStats file_stats(const GgufFile& file);

class Model {
 public:
  // Opens, parses and binds. Throws ModelError (E_MODEL_NOT_FOUND / E_MODEL_CORRUPT naming the
  // tensor and its expected vs actual shape / E_MODEL_UNSUPPORTED naming the architecture).
  static std::unique_ptr<Model> load(const std::string& path);
  static std::unique_ptr<Model> from_file(GgufFile file);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const GgufFile& file() const { return file_; }
  ModelStats stats() const;

 private:
  explicit Model(GgufFile file);
  GgufFile file_;
  ModelConfig config_;
  ModelWeights weights_;
};

}  // namespace edgellm
