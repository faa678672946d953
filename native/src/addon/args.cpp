#include "addon/args.h"

#include <string>

#include "addon/bindings.h"

namespace edgellm::addon {

int64_t whole_option(Napi::Env env, const Napi::Object& o, const char* key, int64_t min, int64_t max, int64_t fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1e300;
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d)
    throw coded_error(env, "E_BAD_ARGUMENT",
                      std::string(key) + " must be a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  return (int64_t)d;
}

std::optional<Napi::Object> options_arg(const Napi::CallbackInfo& info, size_t index, const char* not_object) {
  if (info.Length() <= index || info[index].IsUndefined()) return std::nullopt;
  if (!info[index].IsObject()) throw coded_error(info.Env(), "E_BAD_ARGUMENT", not_object);
  return info[index].As<Napi::Object>();
}

}  // namespace edgellm::addon
