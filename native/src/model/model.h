// A loaded model: its GGUF file (memory-mapped), hyperparameters, and weights bound to tensor
// views with every shape checked against the hyperparameters.
//
// Matrices stay in the mapping in their file type; only the small vectors (norm weights, biases,
// RoPE frequency factors) are converted to f32 copies. Exception: with the neon-dotprod table
// the Q4_0 matrices that only matmul() reads are repacked in place to Q4_0_X4 (quant/repack.h;
// EDGELLM_REPACK=0 turns it off), in private copies of the mapping's pages.
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

  WeightMatrix expert(int64_t e) const {
    WeightMatrix w = first;
    w.data = static_cast<const uint8_t*>(first.data) + (size_t)e * (size_t)first.rows * first.row_bytes();
    return w;
  }
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
};

struct ModelWeights {
  WeightMatrix token_embd;  // [n_vocab rows][n_embd]
  std::vector<float> output_norm;
  WeightMatrix output;      // [n_vocab rows][n_embd]; token_embd when tied
  bool tied_output = false;
  std::vector<float> rope_freq_factors;  // [n_rot / 2] when present
  std::vector<LayerWeights> layers;
};

// What `edgellm inspect` and Model.info() report about the file.
struct ModelStats {
  int64_t n_params = 0;       // elements of every tensor in the file
  uint64_t weight_bytes = 0;  // bytes of tensor data
  uint64_t file_bytes = 0;
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
