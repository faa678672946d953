// N-API bindings only: argument checks, conversions and off-loop workers. No logic lives here.
#include <napi.h>

#include "addon/bindings.h"

namespace edgellm::addon {

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  register_system(env, exports);
  register_bench(env, exports);
  register_gguf(env, exports);
  register_model(env, exports);
  register_inspect(env, exports);
  register_convert(env, exports);
  register_bench_model(env, exports);
  return exports;
}

}  // namespace edgellm::addon

// NODE_API_MODULE pastes its second argument into a function name, so it must be unqualified.
using edgellm::addon::Init;
NODE_API_MODULE(edgellm, Init)
