// A native exception as the {code, message} it crosses the boundary with, and the worker shape the
// model's asynchronous calls share: work on a libuv thread, a promise settled on the JS thread.
#pragma once
#include <napi.h>

#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "addon/bindings.h"
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

// floats as a new Float32Array.
inline Napi::Float32Array float32_array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

// An AsyncWorker whose promise() resolves with result() after run() on the worker thread, or
// rejects with the coded error (failure_of) of the exception run() threw.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  virtual void run() = 0;                          // worker thread
  virtual Napi::Value result(Napi::Env env) = 0;  // JS thread, after run() returned

 private:
  void Execute() final {
    try {
      run();
    } catch (...) {
      failure_ = failure_of(std::current_exception());
      SetError(failure_.message);
    }
  }
  void OnOK() final { deferred_.Resolve(result(Env())); }
  void OnError(const Napi::Error&) final {
    deferred_.Reject(coded_error(Env(), failure_.code, failure_.message).Value());
  }

  Napi::Promise::Deferred deferred_;
  Failure failure_;
};

}  // namespace edgellm::addon
