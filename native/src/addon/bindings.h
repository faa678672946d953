#pragma once
#include <napi.h>

#include <string>

namespace edgellm::addon {

// Errors cross the boundary as JS Errors with a `code` (E_...) and a message that says what to do.
Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message);

void register_system(Napi::Env env, Napi::Object exports);  // cpuInfo(), sdNotify(state)
void register_bench(Napi::Env env, Napi::Object exports);   // benchKernels(opts) -> Promise
void register_gguf(Napi::Env env, Napi::Object exports);    // ggufInfo(path)
void register_model(Napi::Env env, Napi::Object exports);   // loadModel(path, opts) -> Promise<Model>
void register_inspect(Napi::Env env, Napi::Object exports);  // modelConfig(path, opts): metadata only; supportedArchitectures()
void register_convert(Napi::Env env, Napi::Object exports);  // convertRows(src, from, to, rowLength) -> Promise
void register_bench_model(Napi::Env env, Napi::Object exports);  // benchModel(path, opts) -> Promise

}  // namespace edgellm::addon
