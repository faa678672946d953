// loadModel(path, opts) -> Promise<Model>; Model.info(), evalLogits(tokens, opts), evalSequences(seqs), trace(...),
// embed(tokens), generate(request, callback), cancel(id), decodeState(), loadAdapter(path), close().
// Loading and evaluation run on libuv worker threads; the model's state is shared with in-flight
// workers, so close() never frees memory a worker is using.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "addon/args.h"
#include "addon/bindings.h"
#include "addon/decode_channel.h"
#include "addon/failure.h"
#include "addon/lora.h"
#include "addon/model_fields.h"
#include "addon/trace.h"
#include "model/model.h"
#include "runtime/encoder.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/thread_pool.h"

namespace edgellm::addon {

namespace {

struct LoadOptions {
  int threads = 0;  // 0 = default_thread_count()
  int64_t context = 0;
  int64_t sinks = -1;
  int64_t batch = 64;
  int64_t max_sequences = 4;
};

// Everything a loaded model owns. One thread pool per model; one evaluation at a time.
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<ForwardPass> forward;
  std::unique_ptr<EncoderPass> encoder;  // encoders only (bert, nomic-bert)
  std::unique_ptr<KvCache> scratch_sequence;  // evalLogits' fresh sequence, reused
  std::mutex mu;
  int threads = 1;
  int64_t max_sequences = 4;  // generations decoded at once by the model's DecodeLoop
  AdapterRegistry adapters;   // LoRA adapters loaded on this model (loadAdapter)
};

// Opens a LoRA adapter and checks it against the model (on a worker thread: the adapter's file
// is mapped and its tensor table parsed, no weight is copied).
class LoadAdapterWorker : public PromiseWorker {
 public:
  LoadAdapterWorker(Napi::Env env, std::shared_ptr<LoadedModel> m, std::string path)
      : PromiseWorker(env), m_(std::move(m)), path_(std::move(path)) {}

 private:
  void run() override {
    adapter_ = LoraAdapter::load(path_, *m_->model);
    id_ = m_->adapters.add(adapter_);
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, (double)id_));
    o.Set("path", path_);
    o.Set("alpha", Napi::Number::New(env, adapter_->alpha()));
    o.Set("pairs", Napi::Number::New(env, (double)adapter_->n_pairs()));
    o.Set("max_rank", Napi::Number::New(env, (double)adapter_->max_rank()));
    o.Set("bytes", Napi::Number::New(env, (double)adapter_->bytes()));
    return o;
  }

  std::shared_ptr<LoadedModel> m_;
  std::string path_;
  std::shared_ptr<const LoraAdapter> adapter_;
  int64_t id_ = -1;
};

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, LoadOptions opts, Napi::FunctionReference* ctor)
      : PromiseWorker(env), path_(std::move(path)), opts_(opts), ctor_(ctor) {}

 private:
  void run() override {
    auto m = std::make_shared<LoadedModel>();
    m->model = Model::load(path_);
    m->threads = opts_.threads > 0 ? opts_.threads : default_thread_count();
    m->pool = std::make_unique<ThreadPool>(m->threads);
    ForwardOptions fo;
    fo.context = opts_.context > 0 ? opts_.context : default_context(m->model->config());
    fo.batch = opts_.batch;
    fo.sinks = opts_.sinks;
    m->forward = std::make_unique<ForwardPass>(*m->model, *m->pool, fo);
    if (m->model->config().encoder) m->encoder = std::make_unique<EncoderPass>(*m->model, *m->pool);
    m->max_sequences = std::min(opts_.max_sequences, m->forward->max_batch());
    loaded_ = std::move(m);
  }
  Napi::Value result(Napi::Env env) override;

  std::string path_;
  LoadOptions opts_;
  Napi::FunctionReference* ctor_;
  std::shared_ptr<LoadedModel> loaded_;
};

class EvalWorker : public PromiseWorker {
 public:
  EvalWorker(Napi::Env env, std::shared_ptr<LoadedModel> m, std::vector<int32_t> tokens, bool all,
             std::shared_ptr<const LoraSet> lora)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)), all_(all), lora_(std::move(lora)) {}

 private:
  void run() override {
    std::lock_guard<std::mutex> lock(m_->mu);
    const int64_t n = (int64_t)tokens_.size();
    const int64_t rows = all_ ? n : 1;
    logits_.resize((size_t)(rows * m_->model->config().n_vocab));
    if (!m_->scratch_sequence) m_->scratch_sequence = std::make_unique<KvCache>(m_->forward->cache_config());
    m_->scratch_sequence->clear();
    m_->forward->prefill(*m_->scratch_sequence, tokens_.data(), n, all_, logits_.data(), lora_.get());
  }
  Napi::Value result(Napi::Env env) override { return float32_array(env, logits_); }

  std::shared_ptr<LoadedModel> m_;
  std::vector<int32_t> tokens_;
  bool all_;
  std::shared_ptr<const LoraSet> lora_;
  std::vector<float> logits_;
};

// One input's pooled, L2-normalized embedding (encoders only).
class EmbedWorker : public PromiseWorker {
 public:
  EmbedWorker(Napi::Env env, std::shared_ptr<LoadedModel> m, std::vector<int32_t> tokens)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)) {}

 private:
  void run() override {
    std::lock_guard<std::mutex> lock(m_->mu);
    require_encoder(m_->model->config());  // a decoder has no EncoderPass
    out_.resize((size_t)m_->model->config().n_embd);
    m_->encoder->embed(tokens_.data(), (int64_t)tokens_.size(), out_.data());
  }
  Napi::Value result(Napi::Env env) override { return float32_array(env, out_); }

  std::shared_ptr<LoadedModel> m_;
  std::vector<int32_t> tokens_;
  std::vector<float> out_;
};

// Several fresh sequences evaluated together: each one's first `prefill` tokens in chunks on
// its own, then the rest decoded in lockstep, one token of every unfinished sequence per step
// (a batch whose sequences sit at different positions). Logits of every position.
class EvalSequencesWorker : public PromiseWorker {
 public:
  EvalSequencesWorker(Napi::Env env, std::shared_ptr<LoadedModel> m, std::vector<std::vector<int32_t>> tokens,
                      std::vector<int64_t> prefill, std::vector<std::shared_ptr<const LoraSet>> lora)
      : PromiseWorker(env), m_(std::move(m)), tokens_(std::move(tokens)), prefill_(std::move(prefill)), lora_(std::move(lora)) {}

 private:
  void run() override {
    std::lock_guard<std::mutex> lock(m_->mu);
    ForwardPass& f = *m_->forward;
    const int64_t V = m_->model->config().n_vocab;
    const size_t S = tokens_.size();
    std::vector<std::unique_ptr<KvCache>> caches;
    logits_.resize(S);
    for (size_t i = 0; i < S; ++i) {
      caches.push_back(std::make_unique<KvCache>(f.cache_config()));
      logits_[i].resize(tokens_[i].size() * (size_t)V);
      f.prefill(*caches[i], tokens_[i].data(), prefill_[i], true, logits_[i].data(), lora_[i].get());
    }
    std::vector<BatchToken> batch;
    std::vector<size_t> owner;
    std::vector<float> rows(S * (size_t)V);
    for (;;) {
      batch.clear();
      owner.clear();
      for (size_t i = 0; i < S; ++i) {
        const int64_t p = caches[i]->length(0);
        if (p < (int64_t)tokens_[i].size()) {
          batch.push_back(BatchToken{caches[i].get(), p, tokens_[i][(size_t)p], true, lora_[i].get()});
          owner.push_back(i);
        }
      }
      if (batch.empty()) break;
      f.step(batch.data(), (int64_t)batch.size(), rows.data());
      for (size_t j = 0; j < batch.size(); ++j)
        std::memcpy(&logits_[owner[j]][(size_t)batch[j].pos * (size_t)V], &rows[j * (size_t)V],
                    (size_t)V * sizeof(float));
    }
  }
  Napi::Value result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, logits_.size());
    for (size_t i = 0; i < logits_.size(); ++i) out.Set((uint32_t)i, float32_array(env, logits_[i]));
    return out;
  }

  std::shared_ptr<LoadedModel> m_;
  std::vector<std::vector<int32_t>> tokens_;
  std::vector<int64_t> prefill_;
  std::vector<std::shared_ptr<const LoraSet>> lora_;
  std::vector<std::vector<float>> logits_;
};

// The JS Model object: a handle on the shared LoadedModel.
class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
 public:
  static Napi::FunctionReference* define(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "Model",
                                      {InstanceMethod("info", &ModelHandle::Info),
                                       InstanceMethod("evalLogits", &ModelHandle::EvalLogits),
                                       InstanceMethod("evalSequences", &ModelHandle::EvalSequences),
                                       InstanceMethod("trace", &ModelHandle::Trace),
                                       InstanceMethod("embed", &ModelHandle::Embed),
                                       InstanceMethod("generate", &ModelHandle::Generate),
                                       InstanceMethod("cancel", &ModelHandle::Cancel),
                                       InstanceMethod("decodeState", &ModelHandle::DecodeState),
                                       InstanceMethod("loadAdapter", &ModelHandle::LoadAdapter),
                                       InstanceMethod("close", &ModelHandle::Close)});
    auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
    env.SetInstanceData<Napi::FunctionReference>(ref);  // freed with the env
    return ref;
  }

  explicit ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {
    if (info.Length() < 1 || !info[0].IsExternal())
      throw coded_error(info.Env(), "E_BAD_ARGUMENT", "Model objects are made by loadModel()");
    m_ = *info[0].As<Napi::External<std::shared_ptr<LoadedModel>>>().Data();
  }
  ~ModelHandle() override {
    if (decode_) decode_->abandon();  // collected without close(): no sequence is running
  }

 private:
  std::shared_ptr<LoadedModel> live(Napi::Env env) const {
    if (!m_) throw coded_error(env, "E_MODEL_CLOSED", "the model was closed; load it again with loadModel()");
    return m_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const std::shared_ptr<LoadedModel> m = live(env);
    const ModelConfig& c = m->model->config();
    const ModelStats s = m->model->stats();
    Napi::Object o = Napi::Object::New(env);
    auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    o.Set("arch", c.arch_name);
    set_architecture_fields(env, o, c);
    num("n_params", (double)s.n_params);
    num("weight_bytes", (double)s.weight_bytes);
    num("file_size", (double)s.file_bytes);
    Napi::Object types = Napi::Object::New(env);
    for (const auto& [name, count] : s.tensor_types) types.Set(name, Napi::Number::New(env, (double)count));
    o.Set("tensor_types", types);
    o.Set("tied_output", Napi::Boolean::New(env, m->model->weights().tied_output));
    num("context_size", (double)m->forward->context());
    num("batch_size", (double)m->forward->max_batch());
    num("threads", (double)m->threads);
    num("kv_bytes_per_sequence", (double)KvCache::bytes_for(m->forward->cache_config()));
    num("max_sequences", (double)m->max_sequences);
    o.Set("unbounded", Napi::Boolean::New(env, m->forward->unbounded()));
    o.Set("experts_paged", Napi::Boolean::New(env, m->model->weights().experts_paged));
    return o;
  }

  // loadAdapter(path) -> Promise<{id, path, alpha, pairs, max_rank, bytes}> (addon/lora.h)
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    if (info.Length() < 1 || !info[0].IsString())
      throw coded_error(env, "E_BAD_ARGUMENT", "loadAdapter(path) needs the path of a LoRA adapter .gguf file");
    auto* w = new LoadAdapterWorker(env, std::move(m), info[0].As<Napi::String>().Utf8Value());
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // evalLogits(tokens: Int32Array, {allPositions?, lora?}) -> Promise<Float32Array>
  Napi::Value EvalLogits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw coded_error(env, "E_BAD_ARGUMENT", "evalLogits(tokens) needs the token ids as an Int32Array");
    Napi::Int32Array t = info[0].As<Napi::Int32Array>();
    if (t.ElementLength() == 0) throw coded_error(env, "E_BAD_ARGUMENT", "evalLogits needs at least one token");
    std::vector<int32_t> tokens(t.Data(), t.Data() + t.ElementLength());
    bool all = false;
    std::shared_ptr<const LoraSet> lora;
    if (info.Length() > 1 && info[1].IsObject()) {
      Napi::Value a = info[1].As<Napi::Object>().Get("allPositions");
      if (!a.IsUndefined()) {
        if (!a.IsBoolean()) throw coded_error(env, "E_BAD_ARGUMENT", "allPositions must be a boolean");
        all = a.As<Napi::Boolean>().Value();
      }
      lora = m->adapters.resolve(env, info[1].As<Napi::Object>().Get("lora"), "evalLogits");
    }
    auto* w = new EvalWorker(env, std::move(m), std::move(tokens), all, std::move(lora));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // embed(tokens: Int32Array) -> Promise<Float32Array> (n_embd floats, unit length)
  Napi::Value Embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    if (info.Length() < 1 || !info[0].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw coded_error(env, "E_BAD_ARGUMENT", "embed(tokens) needs the token ids as an Int32Array");
    Napi::Int32Array t = info[0].As<Napi::Int32Array>();
    std::vector<int32_t> tokens(t.Data(), t.Data() + t.ElementLength());
    auto* w = new EmbedWorker(env, std::move(m), std::move(tokens));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // evalSequences([{tokens: Int32Array, prefill: number, lora?}]) -> Promise<Float32Array[]>
  Napi::Value EvalSequences(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    const char* usage = "evalSequences needs an array of {tokens: Int32Array, prefill: number}";
    if (info.Length() < 1 || !info[0].IsArray()) throw coded_error(env, "E_BAD_ARGUMENT", usage);
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<std::vector<int32_t>> tokens;
    std::vector<int64_t> prefill;
    std::vector<std::shared_ptr<const LoraSet>> lora;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value e = a.Get(i);
      if (!e.IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", usage);
      Napi::Value t = e.As<Napi::Object>().Get("tokens");
      if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw coded_error(env, "E_BAD_ARGUMENT", usage);
      Napi::Int32Array ti = t.As<Napi::Int32Array>();
      tokens.emplace_back(ti.Data(), ti.Data() + ti.ElementLength());
      prefill.push_back(whole_option(env, e.As<Napi::Object>(), "prefill", 0, (int64_t)ti.ElementLength(), 0));
      lora.push_back(m->adapters.resolve(env, e.As<Napi::Object>().Get("lora"), "evalSequences"));
    }
    auto* w = new EvalSequencesWorker(env, std::move(m), std::move(tokens), std::move(prefill), std::move(lora));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // trace(tokens, {layers, heads, generate}) -> Promise<trace> (addon/trace.h)
  Napi::Value Trace(const Napi::CallbackInfo& info) {
    std::shared_ptr<LoadedModel> m = live(info.Env());
    return queue_trace(info, m, *m->forward, m->mu);
  }

  // generate({tokens, stopTokens, maxTokens, sampling fields}, callback) -> sequence id
  // (see decode_channel.h for the callback's arguments)
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    std::shared_ptr<const LoraSet> lora;
    if (info.Length() > 0 && info[0].IsObject()) lora = m->adapters.resolve(env, info[0].As<Napi::Object>().Get("lora"), "generate");
    if (!decode_) decode_ = DecodeChannel::create(env, m, *m->forward, m->mu, m->max_sequences);
    return decode_->submit(info, std::move(lora));
  }

  // cancel(id): the sequence finishes 'cancelled' before the next step; unknown ids are ignored.
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw coded_error(env, "E_BAD_ARGUMENT", "cancel(id) needs a sequence id");
    if (decode_) decode_->cancel((uint64_t)info[0].As<Napi::Number>().DoubleValue());
    return env.Undefined();
  }

  // decodeState() -> {active, queued, max_sequences}
  Napi::Value DecodeState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<LoadedModel> m = live(env);
    const DecodeLoopState s = decode_ ? decode_->state() : DecodeLoopState{};
    Napi::Object o = Napi::Object::New(env);
    o.Set("active", Napi::Number::New(env, (double)s.active));
    o.Set("queued", Napi::Number::New(env, (double)s.queued));
    o.Set("max_sequences", Napi::Number::New(env, (double)m->max_sequences));
    return o;
  }

  // Cancels running generations (their 'cancelled' finish is delivered before this returns),
  // joins the decode thread, and drops this handle's reference to the model.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    DecodeChannel* d = decode_;
    decode_ = nullptr;
    m_.reset();  // workers still running keep their own reference
    if (d) d->close(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<LoadedModel> m_;
  DecodeChannel* decode_ = nullptr;  // deleted by its TSFN's finalizer
};

Napi::Value LoadWorker::result(Napi::Env env) {
  auto* holder = new std::shared_ptr<LoadedModel>(std::move(loaded_));
  Napi::External<std::shared_ptr<LoadedModel>> ext = Napi::External<std::shared_ptr<LoadedModel>>::New(
      env, holder, [](Napi::Env, std::shared_ptr<LoadedModel>* p) { delete p; });
  return ctor_->New({ext});
}

// loadModel(path, {threads?, contextSize?, sinks?, batchSize?, maxSequences?}) -> Promise<Model>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw coded_error(env, "E_BAD_ARGUMENT", "loadModel(path) needs the path of a .gguf file");
  LoadOptions opts;
  if (const auto o = options_arg(info, 1, "loadModel options must be an object")) {
    opts.threads = (int)whole_option(env, *o, "threads", 1, 256, 0);
    opts.context = whole_option(env, *o, "contextSize", 1, (int64_t)1 << 24, 0);
    opts.sinks = whole_option(env, *o, "sinks", 0, (int64_t)1 << 24, -1);
    opts.batch = whole_option(env, *o, "batchSize", 1, 4096, 64);
    opts.max_sequences = whole_option(env, *o, "maxSequences", 1, 4096, 4);
  }
  auto* ctor = env.GetInstanceData<Napi::FunctionReference>();
  auto* w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), opts, ctor);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  ModelHandle::define(env);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
}

}  // namespace edgellm::addon
