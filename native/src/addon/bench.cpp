#include <string>
#include <vector>

#include "addon/bindings.h"
#include "bench/kernel_bench.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

namespace edgellm::addon {

// Runs the kernel benchmark on a libuv worker thread so the event loop stays free.
class BenchWorker : public Napi::AsyncWorker {
 public:
  BenchWorker(Napi::Env env, KernelBenchOptions opts)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(opts)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      rows_ = run_kernel_bench(opts_, kernels());
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array out = Napi::Array::New(env, rows_.size());
    for (size_t i = 0; i < rows_.size(); ++i) {
      const KernelBenchRow& r = rows_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", r.name);
      o.Set("isa", r.isa);
      o.Set("rows", Napi::Number::New(env, (double)r.rows));
      o.Set("cols", Napi::Number::New(env, (double)r.cols));
      o.Set("threads", r.threads);
      o.Set("gbps", r.gbps);
      o.Set("peak_gbps", r.peak_gbps);
      o.Set("ratio", r.ratio);
      o.Set("seconds", r.seconds);
      out.Set((uint32_t)i, o);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    deferred_.Reject(coded_error(Env(), "E_BENCH", e.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  KernelBenchOptions opts_;
  std::vector<KernelBenchRow> rows_;
};

static int64_t positive_int(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw coded_error(env, "E_BAD_ARGUMENT", std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 1) || d != (double)(int64_t)d)
    throw coded_error(env, "E_BAD_ARGUMENT", std::string(what) + " must be a positive integer");
  return (int64_t)d;
}

static Napi::Array array_arg(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw coded_error(env, "E_BAD_ARGUMENT", std::string(what) + " must be an array");
  return v.As<Napi::Array>();
}

// benchKernels({threads?: number[], shapes?: [rows, cols][], types?: string[], minSeconds?, workingSetBytes?})
static Napi::Value BenchKernels(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KernelBenchOptions opts;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", "benchKernels options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    if (o.Has("threads") && !o.Get("threads").IsUndefined()) {
      Napi::Array a = array_arg(env, o.Get("threads"), "threads");
      opts.threads.clear();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        const int64_t n = positive_int(env, a.Get(i), "threads[i]");
        if (n > 256) throw coded_error(env, "E_BAD_ARGUMENT", "threads must be at most 256, got " + std::to_string(n));
        opts.threads.push_back((int)n);
      }
    }
    if (o.Has("shapes") && !o.Get("shapes").IsUndefined()) {
      Napi::Array a = array_arg(env, o.Get("shapes"), "shapes");
      opts.shapes.clear();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Array s = array_arg(env, a.Get(i), "shapes[i] ([rows, cols])");
        const int64_t rows = positive_int(env, s.Get(0u), "shape rows");
        const int64_t cols = positive_int(env, s.Get(1u), "shape cols");
        opts.shapes.push_back({rows, cols});
      }
    }
    if (o.Has("types") && !o.Get("types").IsUndefined()) {
      Napi::Array a = array_arg(env, o.Get("types"), "types");
      opts.types.clear();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        const Napi::Value v = a.Get(i);
        DType t;
        if (!v.IsString() || !dtype_from_name(v.As<Napi::String>().Utf8Value(), &t) || dtype_block_elems(t) == 1)
          throw coded_error(env, "E_BAD_ARGUMENT",
                            "types[" + std::to_string(i) + "] must name a quantized weight type (Q4_0, Q4_1, Q5_0, "
                            "Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)");
        opts.types.push_back(t);
      }
      if (opts.types.empty()) throw coded_error(env, "E_BAD_ARGUMENT", "types must name at least one type");
    }
    for (const auto& shape : opts.shapes)
      for (DType t : opts.types)
        if (shape.second % dtype_block_elems(t) != 0)
          throw coded_error(env, "E_BAD_ARGUMENT",
                            "shape cols must be a multiple of " + std::to_string(dtype_block_elems(t)) + " (the " +
                                dtype_name(t) + " block), got " + std::to_string(shape.second));
    if (o.Has("minSeconds") && o.Get("minSeconds").IsNumber())
      opts.min_seconds = o.Get("minSeconds").As<Napi::Number>().DoubleValue();
    if (o.Has("workingSetBytes") && !o.Get("workingSetBytes").IsUndefined())
      opts.working_set_bytes = (size_t)positive_int(env, o.Get("workingSetBytes"), "workingSetBytes");
  }
  auto* w = new BenchWorker(env, std::move(opts));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

void register_bench(Napi::Env env, Napi::Object exports) {
  exports.Set("benchKernels", Napi::Function::New(env, BenchKernels, "benchKernels"));
}

}  // namespace edgellm::addon
