#pragma once
#include <napi.h>

#include <cstdint>
#include <optional>

namespace edgellm::addon {

// Reading a JS options object, with E_BAD_ARGUMENT errors that name the option.

// o[key] as a whole number in [min, max], or `fallback` when it is undefined; anything else
// throws "<key> must be a whole number from <min> to <max>".
int64_t whole_option(Napi::Env env, const Napi::Object& o, const char* key, int64_t min, int64_t max, int64_t fallback);

// info[index] as an options object, or nothing when it is absent or undefined; anything else
// throws `not_object` (e.g. "loadModel options must be an object").
std::optional<Napi::Object> options_arg(const Napi::CallbackInfo& info, size_t index, const char* not_object);

}  // namespace edgellm::addon
