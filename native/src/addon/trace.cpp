#include "addon/trace.h"

#include <cstring>
#include <string>
#include <vector>

#include "addon/args.h"
#include "addon/bindings.h"
#include "addon/failure.h"
#include "runtime/trace.h"

namespace edgellm::addon {

namespace {

const char* const kUsage = "trace(tokens: Int32Array, {layers: number[], heads: number[], generate?: number})";

// o[key] as an array of whole numbers >= 0 (the native side checks them against the model).
std::vector<int64_t> index_list(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) throw coded_error(env, "E_BAD_ARGUMENT", std::string(key) + " must be an array of indices; " + kUsage);
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= 0 && d < 1e9) || d != (double)(int64_t)d)
      throw coded_error(env, "E_BAD_ARGUMENT", std::string(key) + " must hold whole numbers >= 0");
    out.push_back((int64_t)d);
  }
  return out;
}

class TraceWorker : public PromiseWorker {
 public:
  TraceWorker(Napi::Env env, std::shared_ptr<void> owner, ForwardPass& forward, std::mutex& mu, TraceRequest request)
      : PromiseWorker(env), owner_(std::move(owner)), forward_(forward), mu_(mu), request_(std::move(request)) {}

 private:
  void run() override {
    std::lock_guard<std::mutex> lock(mu_);
    trace_ = run_trace(forward_, request_);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    Napi::Int32Array tokens = Napi::Int32Array::New(env, trace_.tokens.size());
    std::memcpy(tokens.Data(), trace_.tokens.data(), trace_.tokens.size() * sizeof(int32_t));
    o.Set("tokens", tokens);
    o.Set("promptTokens", Napi::Number::New(env, (double)trace_.n_prompt));
    o.Set("attentionError", Napi::Number::New(env, trace_.attention_error));
    o.Set("finalNorm", float32_array(env, trace_.final_norm));
    o.Set("logits", float32_array(env, trace_.logits));
    Napi::Array layers = Napi::Array::New(env, trace_.layers.size());
    for (size_t i = 0; i < trace_.layers.size(); ++i) {
      Napi::Object l = Napi::Object::New(env);
      l.Set("layer", Napi::Number::New(env, (double)trace_.layers[i].layer));
      l.Set("attention", float32_array(env, trace_.layers[i].attention));
      l.Set("hidden", float32_array(env, trace_.layers[i].hidden));
      layers.Set((uint32_t)i, l);
    }
    o.Set("layers", layers);
    return o;
  }

  std::shared_ptr<void> owner_;
  ForwardPass& forward_;
  std::mutex& mu_;
  TraceRequest request_;
  Trace trace_;
};

}  // namespace

Napi::Value queue_trace(const Napi::CallbackInfo& info, std::shared_ptr<void> owner, ForwardPass& forward,
                        std::mutex& forward_mu) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw coded_error(env, "E_BAD_ARGUMENT", std::string("the token ids must be an Int32Array; ") + kUsage);
  Napi::Int32Array t = info[0].As<Napi::Int32Array>();
  const std::optional<Napi::Object> o = options_arg(info, 1, "trace options must be an object");
  if (!o) throw coded_error(env, "E_BAD_ARGUMENT", std::string("trace needs its options; ") + kUsage);
  TraceRequest r;
  r.prompt.assign(t.Data(), t.Data() + t.ElementLength());
  r.layers = index_list(env, *o, "layers");
  r.heads = index_list(env, *o, "heads");
  r.generate = whole_option(env, *o, "generate", 0, 1 << 20, 0);
  auto* w = new TraceWorker(env, std::move(owner), forward, forward_mu, std::move(r));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace edgellm::addon
