// LoRA adapters in llama.cpp's GGUF adapter format, applied at run time (never merged into the
// base weights), so one base model in memory serves sequences with different adapters, or none.
//
//   auto adapter = LoraAdapter::load("style.gguf", *model);   // checked against the base model
//   auto set = std::make_shared<LoraSet>();
//   set->push_back({adapter, 1.0f});
//   BatchToken t{&cache, pos, token, true, set.get()};         // y = W x + s B (A x) for this token
//
// The file: general.type = "adapter", adapter.type = "lora", general.architecture = the base's,
// adapter.lora.alpha (f32, optional), and per adapted base tensor NAME a pair NAME.lora_a
// (ggml shape [cols of the base, rank]) and NAME.lora_b ([rank, rows of the base]), of any
// weight type edgellm runs. A pair adds scale * B (A x) to the base's output with
// scale = user scale * alpha / rank (the user scale alone when alpha is 0 or absent), as
// llama.cpp does. Tensors named *_norm.weight are skipped, as llama.cpp skips them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "gguf/gguf.h"
#include "model/model.h"

namespace edgellm {

// One adapted matrix: A is [rank rows][cols of the base], B is [rows of the base][rank].
struct LoraPair {
  WeightMatrix a, b;
  int64_t rank() const { return a.rows; }
};

class LoraAdapter {
 public:
  // Opens the file and binds every pair to the base model's matrix of the same name. Throws
  // ModelError naming the file and the tensor: E_MODEL_NOT_FOUND (no such file),
  // E_MODEL_CORRUPT (not a GGUF file, a pair missing its other half, an unexpected tensor),
  // E_MODEL_UNSUPPORTED (not a LoRA adapter, an activated LoRA, made for another architecture,
  // for a tensor the base does not have or edgellm does not adapt, or of a shape that does not
  // fit the base).
  static std::shared_ptr<const LoraAdapter> load(const std::string& path, const Model& base);
  static std::shared_ptr<const LoraAdapter> from_file(GgufFile file, const Model& base);

  const std::string& path() const { return file_.path(); }
  float alpha() const { return alpha_; }
  int64_t n_pairs() const { return (int64_t)pairs_.size(); }
  int64_t max_rank() const { return max_rank_; }
  int64_t max_rows() const { return max_rows_; }  // rows of the largest adapted base matrix
  uint64_t bytes() const { return bytes_; }        // tensor data of the pairs

  // The pair adapting `target` (a matrix of the base model's ModelWeights), or null.
  const LoraPair* find(const WeightMatrix* target) const {
    const auto it = pairs_.find(target);
    return it == pairs_.end() ? nullptr : &it->second;
  }
  // The factor B (A x) is multiplied by for a user scale.
  float scale(const LoraPair& p, float user_scale) const {
    return alpha_ != 0.0f ? user_scale * alpha_ / (float)p.rank() : user_scale;
  }

 private:
  explicit LoraAdapter(GgufFile file) : file_(std::move(file)) {}
  GgufFile file_;  // the pairs are views into its mapping
  float alpha_ = 0.0f;
  int64_t max_rank_ = 0, max_rows_ = 0;
  uint64_t bytes_ = 0;
  std::unordered_map<const WeightMatrix*, LoraPair> pairs_;
};

// The adapters one sequence runs with, each with its user scale. A sequence holds its set by
// shared_ptr; sequences that share one set object are grouped into one GEMM per adapter.
struct LoraChoice {
  std::shared_ptr<const LoraAdapter> adapter;
  float scale = 1.0f;
};
using LoraSet = std::vector<LoraChoice>;

}  // namespace edgellm
