// `edgellm trace`: one prompt (and optionally a few greedy tokens) through the forward pass with
// an observer that keeps, for the layers asked, the attention probabilities of the heads asked
// and the residual stream after the layer, plus the final norm's output at every position.
//
//   TraceRequest r{prompt, /*generate=*/4, /*layers=*/{0, 5}, /*heads=*/{0, 1, 2, 3}};
//   Trace t = run_trace(forward, r);   // t.layers[i].attention: [head][query][key]
//
// A debugging path, slow on purpose: the probabilities are recomputed in double from the
// queries and the f16 keys the attention kernel read (the same visibility, scale and soft-capping),
// and every kept row is checked against the kernel's own output (sum of p * V).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/forward.h"

namespace edgellm {

struct TraceRequest {
  std::vector<int32_t> prompt;  // at least one token
  int64_t generate = 0;         // greedy tokens appended after the prompt and fed through too
  std::vector<int64_t> layers;  // 0-based, distinct, in [0, n_layer)
  std::vector<int64_t> heads;   // query heads, distinct, in [0, n_head)
};

struct LayerTrace {
  int64_t layer = 0;
  // [heads.size()][T][T], row = query position, column = key position: the softmax over the keys
  // the query sees (each row sums to 1), 0 for keys it does not see (later positions, outside a
  // sliding window).
  std::vector<float> attention;
  std::vector<float> hidden;  // [T][n_embd] the residual stream after this layer
};

struct Trace {
  std::vector<int32_t> tokens;  // T = the prompt, then the generated tokens
  int64_t n_prompt = 0;
  std::vector<LayerTrace> layers;  // in the request's order
  std::vector<float> final_norm;   // [T][n_embd] the output norm's result, the classifier's input
  std::vector<float> logits;       // [T][n_vocab] the pass's logits at every position
  // Largest |sum_k p(k) * V(k) - the attention kernel's output| over every kept (query, head).
  double attention_error = 0.0;
};

// Runs the request on a fresh sequence (the pass's context must hold prompt + generate positions).
// Throws std::invalid_argument for an empty prompt or a layer or head out of range,
// ModelError E_MODEL_UNSUPPORTED for deepseek2 (its latent attention has no per-head K to show),
// and what ForwardPass::step throws.
Trace run_trace(ForwardPass& forward, const TraceRequest& request);

}  // namespace edgellm
