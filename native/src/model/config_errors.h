// The errors read_model_config raises, naming the file: shared by every architecture's reader.
#pragma once
#include <cstdint>
#include <string>

#include "gguf/gguf.h"

namespace edgellm {

inline std::string config_str(int64_t v) { return std::to_string((long long)v); }

// Missing or inconsistent keys.
[[noreturn]] inline void config_corrupt(const GgufFile& f, const std::string& what) {
  throw ModelError("E_MODEL_CORRUPT", f.path() + ": " + what);
}
// An architecture, or a feature of one, edgellm does not run.
[[noreturn]] inline void config_unsupported(const GgufFile& f, const std::string& what) {
  throw ModelError("E_MODEL_UNSUPPORTED", f.path() + ": " + what);
}

}  // namespace edgellm
