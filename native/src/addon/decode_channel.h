// The JS side of one model's DecodeLoop: submits sequences with a JS callback each, and delivers
// the loop's events to those callbacks on the JS thread through a ThreadSafeFunction.
//
// One call of a sequence's callback carries every token that arrived since the last delivery
// (many per call when JS is slow), and the last call carries its finish:
//   callback(tokens: Int32Array, finish?: {reason, code?, message?, stop_token, prompt_tokens,
//            completion_tokens, queue_ms, prompt_ms, ttft_ms, total_ms, decode_ms,
//            [rawLogprobs:] prompt_logprob_sum, prompt_logprob_tokens, completion_logprob_sum,
//            completion_logprob_tokens},
//            steps?: Float64Array [at_ms, step_sequences] per token   (a request with trace),
//            logprobs?: {logprob, top, top_ids, top_logprobs})   (a request with topLogprobs)
// The request's optional topLogprobs (0..20) and rawLogprobs are SequenceRequest's top_logprobs and
// raw_logprobs; without them nothing is computed and logprobs is undefined; steps is undefined
// unless the request asked for its trace.
//
// Lifetime: created on a model's first generate(); the TSFN keeps the process alive only while
// some sequence is unfinished. close() stops the loop (every sequence gets its 'cancelled'
// finish, delivered before close() returns) and releases the TSFN, whose finalizer deletes the
// channel once no call is queued. The loop is always stopped before the TSFN goes away.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/decode_loop.h"

namespace edgellm::addon {

class DecodeChannel {
 public:
  // `owner` keeps the forward pass (and its mutex) alive as long as the channel.
  static DecodeChannel* create(Napi::Env env, std::shared_ptr<void> owner, ForwardPass& forward,
                               std::mutex& forward_mu, int64_t max_sequences);

  // generate(request, callback) -> id; `lora`: the request's adapters (resolved by the model).
  Napi::Value submit(const Napi::CallbackInfo& info, std::shared_ptr<const LoraSet> lora = nullptr);
  void cancel(uint64_t id) { loop_->cancel(id); }
  DecodeLoopState state() const { return loop_->state(); }
  int64_t max_sequences() const { return loop_->max_sequences(); }

  // From the JS thread (Model.close()): stop, deliver the last events, release. `this` may be
  // deleted afterwards; do not use it again.
  void close(Napi::Env env);
  // From a finalizer (no JS may run): stop and release without delivering.
  void abandon();

 private:
  static void call_js_thunk(Napi::Env env, Napi::Function, DecodeChannel* self, void*);
  using Tsfn = Napi::TypedThreadSafeFunction<DecodeChannel, void, &DecodeChannel::call_js_thunk>;
  explicit DecodeChannel(std::shared_ptr<void> owner) : owner_(std::move(owner)) {}
  void deliver(Napi::Env env);
  static Napi::Object logprobs_of(Napi::Env env, const std::vector<const DecodeEvent*>& scored, int32_t stride);
  void release();

  std::shared_ptr<void> owner_;
  std::unique_ptr<DecodeLoop> loop_;
  Tsfn tsfn_;
  bool released_ = false;
  // JS thread only.
  std::unordered_map<uint64_t, Napi::FunctionReference> callbacks_;
  std::unordered_set<uint64_t> traced_;  // sequences whose callback also gets each token's step (request.trace)
};

}  // namespace edgellm::addon
