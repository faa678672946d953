#include "addon/decode_channel.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "addon/bindings.h"

namespace edgellm::addon {

namespace {

double number_field(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw coded_error(env, "E_BAD_ARGUMENT", std::string("generate: ") + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::vector<int32_t> int32_field(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw coded_error(env, "E_BAD_ARGUMENT", std::string("generate: ") + key + " must be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

}  // namespace

DecodeChannel* DecodeChannel::create(Napi::Env env, std::shared_ptr<void> owner, ForwardPass& forward,
                                     std::mutex& forward_mu, int64_t max_sequences) {
  auto* self = new DecodeChannel(std::move(owner));
  self->tsfn_ = Tsfn::New(env, "edgellm.decode", 0, 1, self, [](Napi::Env, void*, DecodeChannel* ctx) {
    ctx->abandon();  // env teardown reaches here without close(): stop the loop before it is gone
    delete ctx;
  });
  self->tsfn_.Unref(env);  // referenced only while a sequence is unfinished
  try {
    self->loop_ = std::make_unique<DecodeLoop>(forward, forward_mu, DecodeLoopOptions{max_sequences},
                                               [self] { self->tsfn_.NonBlockingCall(); });
  } catch (const std::exception& e) {
    self->release();
    throw coded_error(env, "E_BAD_ARGUMENT", e.what());
  }
  return self;
}

Napi::Value DecodeChannel::submit(const Napi::CallbackInfo& info, std::shared_ptr<const LoraSet> lora) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
    throw coded_error(env, "E_BAD_ARGUMENT", "generate(request, callback) needs a request object and a function");
  Napi::Object o = info[0].As<Napi::Object>();
  SequenceRequest req;
  req.prompt = int32_field(env, o, "tokens");
  req.stop_tokens = int32_field(env, o, "stopTokens");
  req.max_tokens = (int64_t)number_field(env, o, "maxTokens");
  SamplingParams& p = req.sampling;
  p.temperature = (float)number_field(env, o, "temperature");
  p.top_k = (int32_t)number_field(env, o, "top_k");
  p.top_p = (float)number_field(env, o, "top_p");
  p.min_p = (float)number_field(env, o, "min_p");
  p.repeat_penalty = (float)number_field(env, o, "repeat_penalty");
  p.presence_penalty = (float)number_field(env, o, "presence_penalty");
  p.frequency_penalty = (float)number_field(env, o, "frequency_penalty");
  p.penalty_last_n = (int32_t)number_field(env, o, "penalty_last_n");
  const double seed = number_field(env, o, "seed");
  if (!(seed >= 0 && seed <= 9007199254740991.0) || seed != (double)(uint64_t)seed)
    throw coded_error(env, "E_BAD_ARGUMENT", "generate: seed must be a whole number from 0 to 2^53 - 1");
  p.seed = (uint64_t)seed;
  // Optional: absent = no log-probabilities (the loop range-checks the value).
  Napi::Value top = o.Get("topLogprobs");
  if (!top.IsUndefined()) req.top_logprobs = (int32_t)number_field(env, o, "topLogprobs");
  req.raw_logprobs = o.Get("rawLogprobs").ToBoolean().Value();
  req.lora = std::move(lora);
  uint64_t id;
  try {
    id = loop_->submit(std::move(req));
  } catch (const std::invalid_argument& e) {
    throw coded_error(env, "E_BAD_ARGUMENT", e.what());
  } catch (const std::logic_error& e) {
    throw coded_error(env, "E_MODEL_CLOSED", "the model was closed; load it again with loadModel()");
  }
  if (callbacks_.empty()) tsfn_.Ref(env);
  callbacks_.emplace(id, Napi::Persistent(info[1].As<Napi::Function>()));
  Napi::Value trace = o.Get("trace");
  if (trace.IsBoolean() && trace.As<Napi::Boolean>().Value()) traced_.insert(id);
  return Napi::Number::New(env, (double)id);
}

void DecodeChannel::call_js_thunk(Napi::Env env, Napi::Function, DecodeChannel* self, void*) {
  if (env == nullptr || self == nullptr) return;  // the TSFN is being torn down
  self->deliver(env);
}

// {logprob: Float32Array[n], top: stride, top_ids: Int32Array[n * stride] (-1 past a token's own
// count), top_logprobs: Float32Array[n * stride]} for one sequence's scored token events.
Napi::Object DecodeChannel::logprobs_of(Napi::Env env, const std::vector<const DecodeEvent*>& scored, int32_t stride) {
  const size_t n = scored.size(), k = (size_t)stride;
  Napi::Float32Array lp = Napi::Float32Array::New(env, n);
  Napi::Int32Array ids = Napi::Int32Array::New(env, n * k);
  Napi::Float32Array top = Napi::Float32Array::New(env, n * k);
  for (size_t i = 0; i < n; ++i) {
    const DecodeEvent& e = *scored[i];
    lp[i] = e.logprob;
    for (size_t j = 0; j < k; ++j) {
      const bool has = (int32_t)j < e.n_top;
      ids[i * k + j] = has ? e.top[j].id : -1;
      top[i * k + j] = has ? e.top[j].logprob : 0.0f;
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("logprob", lp);
  o.Set("top", Napi::Number::New(env, stride));
  o.Set("top_ids", ids);
  o.Set("top_logprobs", top);
  return o;
}

// Groups the drained events by sequence and calls each sequence's callback once.
void DecodeChannel::deliver(Napi::Env env) {
  if (!loop_) return;
  // A local batch: a callback may re-enter (close() delivers too).
  std::vector<DecodeEvent> events;
  loop_->drain(events);
  if (events.empty()) return;
  struct Batch {
    std::vector<int32_t> tokens;
    std::vector<double> steps;  // traced sequences: (at_ms, step_sequences) per token
    std::vector<const DecodeEvent*> scored;  // token events with log-probabilities
    int32_t stride = 0;                       // most alternatives of one of them
    const DecodeEvent* finish = nullptr;
  };
  std::vector<std::pair<uint64_t, Batch>> batches;
  std::unordered_map<uint64_t, size_t> index;
  for (const DecodeEvent& e : events) {
    auto [it, fresh] = index.emplace(e.id, batches.size());
    if (fresh) batches.emplace_back(e.id, Batch{});
    Batch& b = batches[it->second].second;
    if (e.kind == DecodeEvent::kFinished) {
      b.finish = &e;
      continue;
    }
    b.tokens.push_back(e.token);
    if (traced_.count(e.id) != 0) b.steps.insert(b.steps.end(), {e.at_ms, (double)e.step_sequences});
    if (e.n_top >= 0) {
      b.scored.push_back(&e);
      b.stride = std::max(b.stride, e.n_top);
    }
  }
  Napi::Value pending_error;
  for (auto& [id, b] : batches) {
    auto cb = callbacks_.find(id);
    if (cb == callbacks_.end()) continue;
    Napi::Int32Array tokens = Napi::Int32Array::New(env, b.tokens.size());
    if (!b.tokens.empty()) std::memcpy(tokens.Data(), b.tokens.data(), b.tokens.size() * sizeof(int32_t));
    Napi::Value finish = env.Undefined();
    if (b.finish) {
      const DecodeEvent& e = *b.finish;
      Napi::Object f = Napi::Object::New(env);
      f.Set("reason", finish_reason_name(e.reason));
      if (e.reason == FinishReason::kError) {
        f.Set("code", e.error_code);
        f.Set("message", e.error_message);
      }
      auto num = [&](const char* k, double v) { f.Set(k, Napi::Number::New(env, v)); };
      num("stop_token", e.token);
      num("prompt_tokens", (double)e.prompt_tokens);
      num("completion_tokens", (double)e.completion_tokens);
      num("queue_ms", e.timings.queue_ms);
      num("prompt_ms", e.timings.prompt_ms);
      num("ttft_ms", e.timings.ttft_ms);
      num("total_ms", e.timings.total_ms);
      num("decode_ms", e.timings.decode_ms);
      if (e.prompt_logprob_tokens > 0 || e.completion_logprob_tokens > 0) {
        num("prompt_logprob_sum", e.prompt_logprob_sum);
        num("prompt_logprob_tokens", (double)e.prompt_logprob_tokens);
        num("completion_logprob_sum", e.completion_logprob_sum);
        num("completion_logprob_tokens", (double)e.completion_logprob_tokens);
      }
      finish = f;
    }
    Napi::Value steps = env.Undefined();
    if (traced_.count(id) != 0) {
      Napi::Float64Array a = Napi::Float64Array::New(env, b.steps.size());
      if (!b.steps.empty()) std::memcpy(a.Data(), b.steps.data(), b.steps.size() * sizeof(double));
      steps = a;
    }
    Napi::Value logprobs = env.Undefined();
    if (!b.scored.empty()) logprobs = logprobs_of(env, b.scored, b.stride);
    Napi::FunctionReference fn = std::move(cb->second);
    if (b.finish) {
      traced_.erase(id);
      callbacks_.erase(cb);
      if (callbacks_.empty() && !released_) tsfn_.Unref(env);
    }
    try {
      fn.Call({tokens, finish, steps, logprobs});
    } catch (const Napi::Error& err) {
      if (pending_error.IsEmpty()) pending_error = err.Value();
    }
    if (!b.finish) callbacks_[id] = std::move(fn);
  }
  // A callback that threw becomes an uncaught exception once every sequence has its events.
  if (!pending_error.IsEmpty()) Napi::Error(env, pending_error).ThrowAsJavaScriptException();
}

void DecodeChannel::close(Napi::Env env) {
  if (loop_) loop_->stop();
  deliver(env);  // every sequence's 'cancelled' finish, before close() returns
  release();
}

void DecodeChannel::abandon() {
  if (loop_) loop_->stop();
  release();
}

void DecodeChannel::release() {
  if (released_) return;
  released_ = true;
  tsfn_.Release();  // the finalizer deletes `this` once no call is queued
}

}  // namespace edgellm::addon
