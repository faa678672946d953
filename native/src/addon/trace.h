// Model.trace(tokens: Int32Array, {layers: number[], heads: number[], generate?: number})
//   -> Promise<{tokens: Int32Array, promptTokens, attentionError, finalNorm: Float32Array,
//               logits: Float32Array, layers: [{layer, attention: Float32Array, hidden: Float32Array}]}>
// (runtime/trace.h says what each array holds). Runs on a libuv worker under the model's mutex.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>

#include "runtime/forward.h"

namespace edgellm::addon {

// `owner` keeps the forward pass alive until the worker is done.
Napi::Value queue_trace(const Napi::CallbackInfo& info, std::shared_ptr<void> owner, ForwardPass& forward,
                        std::mutex& forward_mu);

}  // namespace edgellm::addon
