// modelConfig(path, {contextSize?, batchSize?, sinks?}): what a model file needs to run, from its
// metadata and tensor table alone (no weights are read): the engine's own ModelConfig, the KV
// cache a sequence would allocate and the forward pass's scratch. `edgellm inspect` shows it.
// supportedArchitectures(): the architectures read_model_config accepts.
#include <iterator>
#include <string>

#include "addon/args.h"
#include "addon/bindings.h"
#include "addon/model_fields.h"
#include "model/model.h"
#include "runtime/forward.h"
#include "runtime/encoder.h"
#include "runtime/kv_cache.h"

namespace edgellm::addon {

namespace {

Napi::Value ModelConfigOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString())
    throw coded_error(env, "E_BAD_ARGUMENT", "modelConfig(path) needs the path of a .gguf file");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  ForwardOptions fo;
  int64_t context = 0;
  if (const auto o = options_arg(info, 1, "modelConfig options must be an object")) {
    context = whole_option(env, *o, "contextSize", 1, (int64_t)1 << 24, 0);
    fo.batch = whole_option(env, *o, "batchSize", 1, 4096, 64);
    fo.sinks = whole_option(env, *o, "sinks", 0, (int64_t)1 << 24, -1);
  }
  try {
    // Keep tensors of types edgellm does not run: inspect lists them and says they block loading.
    const GgufFile f = GgufFile::open(path, UnknownTensorTypes::Keep);
    const ModelConfig c = read_model_config(f);
    const ModelStats s = file_stats(f);
    fo.context = context > 0 ? context : default_context(c);
    const KvCacheConfig kv = forward_cache_config(c, fo);

    Napi::Object o = Napi::Object::New(env);
    auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    o.Set("arch", c.arch_name);
    o.Set("name", f.metadata().get_string("general.name", ""));
    set_architecture_fields(env, o, c);
    int64_t swa_layers = 0;
    for (bool b : c.layer_is_swa) swa_layers += b ? 1 : 0;
    num("swa_layers", (double)swa_layers);
    num("n_params", (double)s.n_params);
    num("weight_bytes", (double)s.weight_bytes);
    num("expert_bytes", (double)s.expert_bytes);
    num("file_size", (double)s.file_bytes);
    Napi::Object types = Napi::Object::New(env);
    for (const auto& [name, count] : s.tensor_types) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("count", Napi::Number::New(env, (double)count));
      t.Set("bytes", Napi::Number::New(env, (double)s.tensor_type_bytes.at(name)));
      types.Set(name, t);
    }
    o.Set("tensor_types", types);
    Napi::Array blocking = Napi::Array::New(env, s.unrunnable.size());
    for (size_t k = 0; k < s.unrunnable.size(); ++k) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("name", s.unrunnable[k]->name);
      t.Set("type", ggml_type_name((uint32_t)s.unrunnable[k]->type));
      t.Set("advice", unrunnable_type_advice((uint32_t)s.unrunnable[k]->type));
      blocking.Set((uint32_t)k, t);
    }
    o.Set("unsupported_tensors", blocking);
    o.Set("tied_output", Napi::Boolean::New(env, !c.encoder && f.find_tensor("output.weight") == nullptr));
    num("context_size", (double)kv.context);
    num("batch_size", (double)fo.batch);
    // An encoder keeps no KV cache: an input's activations live for one embedding call.
    num("kv_bytes_per_sequence", c.encoder ? 0.0 : (double)KvCache::bytes_for(kv));
    num("kv_bytes_per_token", c.encoder ? 0.0 : (double)KvCache::bytes_per_position(kv));
    num("scratch_bytes", (double)(c.encoder ? encoder_scratch_bytes(c, default_thread_count()) : forward_scratch_bytes(c, fo.batch, kv.context)));
    bool unbounded = true;
    for (const KvLayerSpec& l : kv.layers) unbounded = unbounded && l.window > 0;
    o.Set("unbounded", Napi::Boolean::New(env, unbounded && !kv.layers.empty()));
    return o;
  } catch (const ModelError& e) {
    throw coded_error(env, e.code, e.message);
  } catch (const std::invalid_argument& e) {
    throw coded_error(env, "E_BAD_ARGUMENT", e.what());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw coded_error(env, "E_MODEL_CORRUPT", path + ": cannot be read (" + e.what() + ")");
  }
}

// supportedArchitectures(): the general.architecture names edgellm loads (the README's model table is
// tested against it).
Napi::Value SupportedArchitectures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array names = Napi::Array::New(env, std::size(kArchs));
  for (size_t k = 0; k < std::size(kArchs); ++k) names.Set((uint32_t)k, arch_name(kArchs[k]));
  return names;
}

}  // namespace

void register_inspect(Napi::Env env, Napi::Object exports) {
  exports.Set("modelConfig", Napi::Function::New(env, ModelConfigOf, "modelConfig"));
  exports.Set("supportedArchitectures", Napi::Function::New(env, SupportedArchitectures, "supportedArchitectures"));
}

}  // namespace edgellm::addon
