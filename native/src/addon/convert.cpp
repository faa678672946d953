// convertRows(src, srcType, dstType, rowLength) -> Promise<Buffer>: whole rows of a tensor from
// one type to another (any weight type: F32/F16/BF16, Q4_0..Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS),
// through f32, with the reference quantizers (the same bytes as ggml's), on a libuv worker. `edgellm quantize` keeps several
// chunks of rows in flight to use several cores.
#include <cstring>
#include <string>
#include <vector>

#include "addon/bindings.h"
#include "quant/quant.h"

namespace edgellm::addon {

namespace {

// A weight type by its GGUF name ("Q4_K"), as dtype_name spells it.
bool parse_dtype(const std::string& s, DType* t) {
  for (DType w : kWeightTypes) {
    if (s == dtype_name(w)) {
      *t = w;
      return true;
    }
  }
  return false;
}

std::string weight_type_names() {
  std::string names;
  for (DType w : kWeightTypes) names += std::string(names.empty() ? "" : ", ") + dtype_name(w);
  return names;
}

class ConvertWorker : public Napi::AsyncWorker {
 public:
  ConvertWorker(Napi::Env env, Napi::Uint8Array src, DType from, DType to, int64_t row_len, int64_t rows)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), src_ref_(Napi::Persistent(src)),
        src_(src.Data()), from_(from), to_(to), row_len_(row_len), rows_(rows) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      const size_t in_row = dtype_row_bytes(from_, row_len_), out_row = dtype_row_bytes(to_, row_len_);
      out_ = new std::vector<uint8_t>((size_t)rows_ * out_row);
      std::vector<float> f((size_t)row_len_);
      for (int64_t r = 0; r < rows_; ++r) {
        dequantize_row(from_, src_ + (size_t)r * in_row, f.data(), row_len_);
        quantize_row(to_, f.data(), out_->data() + (size_t)r * out_row, row_len_);
      }
    } catch (const std::bad_alloc&) {
      SetError("not enough memory to convert a chunk of rows");
    } catch (const std::exception& e) {
      // A type this build has no (de)quantizer for: quantize_row / dequantize_row say which.
      code_ = "E_NOT_IMPLEMENTED";
      SetError(std::string("convertRows: ") + e.what());
    }
  }
  void OnOK() override {
    std::vector<uint8_t>* v = out_;
    out_ = nullptr;
    // The Buffer owns the vector: no copy of the converted rows.
    deferred_.Resolve(Napi::Buffer<uint8_t>::New(
        Env(), v->data(), v->size(), [](Napi::Env, uint8_t*, std::vector<uint8_t>* p) { delete p; }, v));
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(coded_error(Env(), code_, e.Message()).Value());
  }
  ~ConvertWorker() override { delete out_; }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Uint8Array> src_ref_;  // keeps the source alive while Execute reads it
  const uint8_t* src_;
  DType from_, to_;
  int64_t row_len_, rows_;
  std::vector<uint8_t>* out_ = nullptr;
  std::string code_ = "E_OUT_OF_MEMORY";
};

Napi::Value ConvertRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "convertRows(src: Uint8Array, srcType, dstType, rowLength) converts whole rows";
  if (info.Length() < 4 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array || !info[1].IsString() ||
      !info[2].IsString() || !info[3].IsNumber())
    throw coded_error(env, "E_BAD_ARGUMENT", usage);
  DType from, to;
  const std::string fs = info[1].As<Napi::String>().Utf8Value(), ts = info[2].As<Napi::String>().Utf8Value();
  if (!parse_dtype(fs, &from))
    throw coded_error(env, "E_BAD_ARGUMENT", "convertRows: unknown source type " + fs + " (known: " + weight_type_names() + ")");
  if (!parse_dtype(ts, &to))
    throw coded_error(env, "E_BAD_ARGUMENT", "convertRows: unknown target type " + ts + " (known: " + weight_type_names() + ")");
  const double rl = info[3].As<Napi::Number>().DoubleValue();
  const int64_t row_len = (int64_t)rl;
  if (!(rl >= 1) || rl != (double)row_len || row_len % dtype_block_elems(from) != 0 ||
      row_len % dtype_block_elems(to) != 0)
    throw coded_error(env, "E_BAD_ARGUMENT", "convertRows: a row of " + std::to_string((long long)row_len) +
                                                 " elements is not whole blocks of " + fs + " and " + ts);
  Napi::Uint8Array src = info[0].As<Napi::Uint8Array>();
  const size_t in_row = dtype_row_bytes(from, row_len);
  if (src.ByteLength() % in_row != 0)
    throw coded_error(env, "E_BAD_ARGUMENT", "convertRows: " + std::to_string(src.ByteLength()) +
                                                 " bytes are not whole rows of " + std::to_string(in_row) + " bytes");
  auto* w = new ConvertWorker(env, src, from, to, row_len, (int64_t)(src.ByteLength() / in_row));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void register_convert(Napi::Env env, Napi::Object exports) {
  exports.Set("convertRows", Napi::Function::New(env, ConvertRows, "convertRows"));
}

}  // namespace edgellm::addon
