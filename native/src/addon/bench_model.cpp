// benchModel(path, {threads?, promptTokens?, genTokens?, batchSize?}) -> Promise<result>: prompt
// processing and decode speed of the forward pass on a model file, measured like llama-bench
// (pp: one fresh sequence prefilled with p tokens through the GEMM path; tg: a fresh sequence
// decoding n tokens one step at a time, each fed the previous step's argmax). Everything runs on a
// libuv worker thread calling ForwardPass directly, so no JS work is timed.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "addon/args.h"
#include "addon/bindings.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/thread_pool.h"

namespace edgellm::addon {

namespace {

struct BenchModelOptions {
  int threads = 0;  // 0 = default_thread_count()
  int64_t prompt = 512;
  int64_t gen = 128;
  int64_t batch = 64;
};

struct BenchModelResult {
  std::string arch, kernels;
  int threads = 0;
  int64_t prompt = 0, gen = 0, batch = 0;
  double load_seconds = 0, pp_seconds = 0, tg_seconds = 0;
  uint64_t weight_bytes = 0;             // all tensor data in the file
  uint64_t weight_bytes_per_token = 0;   // read per decoded token (MoE: the used experts only)
  uint64_t kv_bytes = 0;                 // one sequence's KV cache
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t matrix_bytes(const WeightMatrix& w) { return w.present() ? (uint64_t)w.rows * w.row_bytes() : 0; }

// Bytes of weights one decoded token reads: every attention and dense FFN matrix, the router and
// n_expert_used experts of each MoE layer, the classifier, and one embedding row.
uint64_t bytes_per_token(const Model& m) {
  const ModelConfig& c = m.config();
  const ModelWeights& w = m.weights();
  uint64_t b = matrix_bytes(w.output) + w.token_embd.row_bytes();
  for (const LayerWeights& L : w.layers) {
    b += matrix_bytes(L.wq) + matrix_bytes(L.wk) + matrix_bytes(L.wv) + matrix_bytes(L.wo);
    b += matrix_bytes(L.ffn_gate) + matrix_bytes(L.ffn_up) + matrix_bytes(L.ffn_down);
    const MlaLayerWeights& M = L.mla;  // deepseek2: latent attention, every head's k_b / v_b, shared experts
    b += matrix_bytes(M.wq_a) + matrix_bytes(M.wq_b) + matrix_bytes(M.wkv_a) + matrix_bytes(M.gate_shexp) +
         matrix_bytes(M.up_shexp) + matrix_bytes(M.down_shexp) +
         (uint64_t)M.k_b.n_head * (matrix_bytes(M.k_b.first) + matrix_bytes(M.v_b.first));
    if (c.is_moe()) {
      b += matrix_bytes(L.router);
      b += (uint64_t)c.n_expert_used *
           (matrix_bytes(L.gate_exps.first) + matrix_bytes(L.up_exps.first) + matrix_bytes(L.down_exps.first));
    }
  }
  return b;
}

int32_t argmax(const float* x, int64_t n) { return (int32_t)(std::max_element(x, x + n) - x); }

BenchModelResult run_bench(const std::string& path, const BenchModelOptions& o) {
  BenchModelResult r;
  double t0 = now();
  std::unique_ptr<Model> model = Model::load(path);
  r.load_seconds = now() - t0;
  const ModelConfig& c = model->config();
  r.arch = c.arch_name;
  r.kernels = kernels().name;
  r.threads = o.threads > 0 ? o.threads : default_thread_count();
  r.prompt = o.prompt;
  r.gen = o.gen;
  r.batch = o.batch;
  r.weight_bytes = model->stats().weight_bytes;
  r.weight_bytes_per_token = bytes_per_token(*model);

  ThreadPool pool(r.threads);
  ForwardOptions fo;
  fo.context = std::max<int64_t>({o.prompt, o.gen + 1, 1});
  fo.batch = o.batch;
  ForwardPass f(*model, pool, fo);
  KvCache seq(f.cache_config());
  r.kv_bytes = seq.bytes();
  const int64_t V = c.n_vocab;
  std::vector<float> logits((size_t)V);

  // Warm-up: one step touches every weight page (not timed, as llama-bench's warm-up run).
  int32_t tok = 1 % (int32_t)V;
  f.prefill(seq, &tok, 1, false, logits.data());

  if (o.prompt > 0) {
    std::vector<int32_t> prompt((size_t)o.prompt);
    for (int64_t i = 0; i < o.prompt; ++i) prompt[(size_t)i] = (int32_t)((i * 7919 + 1) % V);
    seq.clear();
    t0 = now();
    f.prefill(seq, prompt.data(), o.prompt, false, logits.data());
    r.pp_seconds = now() - t0;
  }
  if (o.gen > 0) {
    seq.clear();
    BatchToken b{&seq, 0, tok, true};
    t0 = now();
    for (int64_t i = 0; i < o.gen; ++i) {
      f.step(&b, 1, logits.data());
      b.pos += 1;
      b.token = argmax(logits.data(), V);
    }
    r.tg_seconds = now() - t0;
  }
  return r;
}

class BenchModelWorker : public Napi::AsyncWorker {
 public:
  BenchModelWorker(Napi::Env env, std::string path, BenchModelOptions opts)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)), opts_(opts) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      r_ = run_bench(path_, opts_);
    } catch (const ModelError& e) {
      code_ = e.code;
      SetError(e.message);
    } catch (const std::invalid_argument& e) {
      code_ = "E_BAD_ARGUMENT";
      SetError(e.what());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    o.Set("arch", r_.arch);
    o.Set("kernels", r_.kernels);
    num("threads", r_.threads);
    num("n_prompt", (double)r_.prompt);
    num("n_gen", (double)r_.gen);
    num("batch_size", (double)r_.batch);
    num("load_seconds", r_.load_seconds);
    num("pp_seconds", r_.pp_seconds);
    num("tg_seconds", r_.tg_seconds);
    num("pp_tps", r_.pp_seconds > 0 ? (double)r_.prompt / r_.pp_seconds : 0);
    num("tg_tps", r_.tg_seconds > 0 ? (double)r_.gen / r_.tg_seconds : 0);
    num("weight_bytes", (double)r_.weight_bytes);
    num("weight_bytes_per_token", (double)r_.weight_bytes_per_token);
    num("effective_gbps", r_.tg_seconds > 0 ? (double)r_.weight_bytes_per_token * (double)r_.gen / r_.tg_seconds / 1e9 : 0);
    num("kv_bytes", (double)r_.kv_bytes);
    deferred_.Resolve(o);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(coded_error(Env(), code_, e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  BenchModelOptions opts_;
  BenchModelResult r_;
  std::string code_ = "E_BENCH";
};

Napi::Value BenchModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw coded_error(env, "E_BAD_ARGUMENT", "benchModel(path) needs the path of a .gguf file");
  BenchModelOptions opts;
  if (const auto o = options_arg(info, 1, "benchModel options must be an object")) {
    opts.threads = (int)whole_option(env, *o, "threads", 1, 256, 0);
    opts.prompt = whole_option(env, *o, "promptTokens", 0, 1 << 20, 512);
    opts.gen = whole_option(env, *o, "genTokens", 0, 1 << 20, 128);
    opts.batch = whole_option(env, *o, "batchSize", 1, 4096, 64);
  }
  auto* w = new BenchModelWorker(env, info[0].As<Napi::String>().Utf8Value(), opts);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void register_bench_model(Napi::Env env, Napi::Object exports) {
  exports.Set("benchModel", Napi::Function::New(env, BenchModel, "benchModel"));
}

}  // namespace edgellm::addon
