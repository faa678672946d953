// The LoRA adapters loaded on one model, and the sets requests choose from them.
//
//   model.loadAdapter(path) -> Promise<{id, path, alpha, pairs, max_rank, bytes}>
//   evalLogits(tokens, {lora: [{adapter: id, scale}]}), generate({..., lora: [...]}, cb),
//   evalSequences([{tokens, prefill, lora}])
//
// A request's `lora` list resolves to one shared LoraSet per distinct list (ids and scales), so
// the decode loop puts requests with the same adapters side by side (one GEMM per adapter).
#pragma once
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/lora.h"

namespace edgellm::addon {

class AdapterRegistry {
 public:
  // Adds a loaded adapter; returns its id (0, 1, ... in load order).
  int64_t add(std::shared_ptr<const LoraAdapter> adapter);
  // A request's `lora` value: undefined or an empty array = null (the base model); else an array
  // of {adapter: id, scale?: number (default 1)}. Throws E_BAD_ARGUMENT naming what is wrong
  // (`where` says which call: "generate", "evalLogits", ...).
  std::shared_ptr<const LoraSet> resolve(Napi::Env env, const Napi::Value& lora, const char* where);

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<const LoraAdapter>> adapters_;
  // Sets in use, by their (id, scale) list; expired ones are dropped as new ones are made.
  std::map<std::vector<std::pair<int64_t, float>>, std::weak_ptr<const LoraSet>> sets_;
};

}  // namespace edgellm::addon
