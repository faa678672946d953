#include "addon/bindings.h"
#include "kernels/kernels.h"
#include "runtime/thread_pool.h"
#include "sys/cpu_budget.h"
#include "sys/cpu_features.h"
#include "sys/sd_notify.h"

#include <cstdlib>
#include <cstring>

namespace edgellm::addon {

Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// cpuInfo(): what this CPU can run and which kernel table edgellm uses.
static Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("arch", f.arch);
  o.Set("model", f.model);
  o.Set("logicalCores", f.logical_cores);
  o.Set("physicalCores", f.physical_cores);
  const ThreadDefault threads = default_threads();
  o.Set("usableCpus", usable_cpu_count());
  o.Set("defaultThreads", threads.threads);
  o.Set("defaultThreadsReason", threads.reason);
  Napi::Object feats = Napi::Object::New(env);
  feats.Set("avx2", f.avx2);
  feats.Set("fma", f.fma);
  feats.Set("f16c", f.f16c);
  feats.Set("avx512vnni", f.avx512vnni);
  feats.Set("neon", f.neon);
  feats.Set("dotprod", f.dotprod);
  o.Set("features", feats);
  try {
    o.Set("kernels", kernels().name);
  } catch (const std::exception& e) {
    throw coded_error(env, "E_CONFIG", e.what());
  }
  auto tables = runnable_kernel_tables();
  Napi::Array runnable = Napi::Array::New(env, tables.size());
  for (size_t i = 0; i < tables.size(); ++i) runnable.Set((uint32_t)i, tables[i]->name);
  o.Set("runnableKernels", runnable);
  return o;
}

// sdNotify(state): sends `state` ("READY=1", "WATCHDOG=1"...) to $NOTIFY_SOCKET.
// true when sent, false when NOTIFY_SOCKET is unset; E_SYSTEMD when it is set but unusable.
static Napi::Value SdNotify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    throw coded_error(env, "E_BAD_ARGUMENT", "sdNotify(state) takes a string such as \"READY=1\"");
  }
  const int r = sd_notify(info[0].As<Napi::String>().Utf8Value());
  if (r < 0) {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    throw coded_error(env, "E_SYSTEMD",
                      std::string("could not notify systemd at NOTIFY_SOCKET=") + (socket ? socket : "") + ": " +
                          std::strerror(-r));
  }
  return Napi::Boolean::New(env, r > 0);
}

void register_system(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo, "cpuInfo"));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotify, "sdNotify"));
}

}  // namespace edgellm::addon
