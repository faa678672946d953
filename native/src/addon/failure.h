// A native exception as the {code, message} it crosses the boundary with (model workers).
#pragma once
#include <exception>
#include <new>
#include <stdexcept>
#include <string>

#include "gguf/gguf.h"
#include "runtime/forward.h"

namespace edgellm::addon {

struct Failure {
  std::string code, message;
};

inline Failure failure_of(const std::exception_ptr& ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const ModelError& e) {
    return {e.code, e.message};
  } catch (const ContextFullError& e) {
    return {"E_CONTEXT_FULL", e.what()};
  } catch (const std::invalid_argument& e) {
    return {"E_BAD_ARGUMENT", e.what()};
  } catch (const std::bad_alloc&) {
    return {"E_OUT_OF_MEMORY", "not enough memory; use a smaller contextSize or batchSize, or a smaller model"};
  } catch (const std::exception& e) {
    return {"E_ENGINE", e.what()};
  }
}

}  // namespace edgellm::addon
