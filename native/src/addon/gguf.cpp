#include <cstring>
#include <string>

#include "addon/bindings.h"
#include "gguf/gguf.h"

namespace edgellm::addon {

// 2^53: integers up to this magnitude are exact as JS numbers; larger ones become BigInt.
constexpr uint64_t kMaxSafeInteger = 9007199254740992ull;

static Napi::Value unsigned_value(Napi::Env env, uint64_t v) {
  if (v <= kMaxSafeInteger) return Napi::Number::New(env, (double)v);
  return Napi::BigInt::New(env, v);
}
static Napi::Value signed_value(Napi::Env env, int64_t v) {
  if (v >= -(int64_t)kMaxSafeInteger && v <= (int64_t)kMaxSafeInteger) return Napi::Number::New(env, (double)v);
  return Napi::BigInt::New(env, v);
}

template <typename TypedArray, typename T>
static Napi::Value typed_copy(Napi::Env env, const GgufValue& v, T (*elem)(const GgufValue&, uint64_t)) {
  TypedArray out = TypedArray::New(env, (size_t)v.count);
  T* dst = out.Data();
  for (uint64_t k = 0; k < v.count; ++k) dst[k] = elem(v, k);
  return out;
}

// Metadata value -> JS. Arrays of float32/float64 become Float32Array/Float64Array and arrays of
// integers that fit in int32 (int8..int32, uint8, uint16) become Int32Array, so a 150k-entry
// vocabulary's scores and token types do not become 150k boxed numbers; other arrays are plain.
static Napi::Value to_js(Napi::Env env, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::U8: case GgufValueType::U16: case GgufValueType::U32: case GgufValueType::U64:
      return unsigned_value(env, v.u);
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32: case GgufValueType::I64:
      return signed_value(env, v.i);
    case GgufValueType::F32: case GgufValueType::F64: return Napi::Number::New(env, v.f);
    case GgufValueType::BOOL: return Napi::Boolean::New(env, v.u != 0);
    case GgufValueType::STRING: return Napi::String::New(env, v.str.data(), v.str.size());
    case GgufValueType::ARRAY: break;
  }
  switch (v.elem_type) {
    case GgufValueType::F32:
      return typed_copy<Napi::Float32Array, float>(env, v, [](const GgufValue& a, uint64_t k) {
        float f;
        std::memcpy(&f, a.raw + k * 4, 4);
        return f;
      });
    case GgufValueType::F64:
      return typed_copy<Napi::Float64Array, double>(env, v, [](const GgufValue& a, uint64_t k) { return a.number_at(k); });
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
    case GgufValueType::I32:
      return typed_copy<Napi::Int32Array, int32_t>(env, v, [](const GgufValue& a, uint64_t k) { return (int32_t)a.int_at(k); });
    default: break;
  }
  Napi::Array out = Napi::Array::New(env, (size_t)v.count);
  for (uint64_t k = 0; k < v.count; ++k) {
    Napi::Value e;
    switch (v.elem_type) {
      case GgufValueType::U32: case GgufValueType::U64: e = unsigned_value(env, v.uint_at(k)); break;
      case GgufValueType::I64: e = signed_value(env, v.int_at(k)); break;
      case GgufValueType::BOOL: e = Napi::Boolean::New(env, v.uint_at(k) != 0); break;
      case GgufValueType::STRING: e = Napi::String::New(env, v.strings[k].data(), v.strings[k].size()); break;
      case GgufValueType::ARRAY: e = to_js(env, v.items[k]); break;
      default: e = env.Undefined(); break;  // numeric types are handled above
    }
    out.Set((uint32_t)k, e);
  }
  return out;
}

// Defines (not sets) a property, so a key such as "__proto__" is an ordinary own property.
static void define(Napi::Object o, std::string_view key, Napi::Value v) {
  o.DefineProperty(Napi::PropertyDescriptor::Value(Napi::String::New(o.Env(), key.data(), key.size()), v,
                                                   static_cast<napi_property_attributes>(
                                                       napi_enumerable | napi_writable | napi_configurable)));
}

// ggufInfo(path): the header, metadata and tensor table of a GGUF file (no weights are read).
static Napi::Value GgufInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw coded_error(env, "E_BAD_ARGUMENT", "ggufInfo(path) needs the path of a .gguf file");
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  try {
    GgufFile f = GgufFile::open(path);
    Napi::Object o = Napi::Object::New(env);
    o.Set("version", f.version());
    o.Set("alignment", f.alignment());
    o.Set("fileSize", Napi::Number::New(env, (double)f.file_size()));
    o.Set("dataOffset", Napi::Number::New(env, (double)f.data_offset()));
    Napi::Object meta = Napi::Object::New(env);
    Napi::Object types = Napi::Object::New(env);
    for (const GgufMetadata::Entry& e : f.metadata().entries()) {
      define(meta, e.key, to_js(env, e.value));
      define(types, e.key, Napi::String::New(env, e.value.type_string()));
    }
    o.Set("metadata", meta);
    o.Set("metadataTypes", types);
    Napi::Array tensors = Napi::Array::New(env, f.tensors().size());
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const GgufTensor& t = f.tensors()[i];
      Napi::Object to = Napi::Object::New(env);
      to.Set("name", t.name);
      to.Set("type", dtype_name(t.type));
      Napi::Array shape = Napi::Array::New(env, (size_t)t.n_dims);
      for (int d = 0; d < t.n_dims; ++d) shape.Set((uint32_t)d, Napi::Number::New(env, (double)t.ne[d]));
      to.Set("shape", shape);
      to.Set("offset", Napi::Number::New(env, (double)t.offset));
      to.Set("bytes", Napi::Number::New(env, (double)t.bytes));
      tensors.Set((uint32_t)i, to);
    }
    o.Set("tensors", tensors);
    return o;
  } catch (const ModelError& e) {
    throw coded_error(env, e.code, e.message);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {  // e.g. out of memory for a huge vocabulary
    throw coded_error(env, "E_MODEL_CORRUPT", path + ": cannot be read (" + e.what() + ")");
  }
}

void register_gguf(Napi::Env env, Napi::Object exports) {
  exports.Set("ggufInfo", Napi::Function::New(env, GgufInfo, "ggufInfo"));
}

}  // namespace edgellm::addon
