#include "addon/lora.h"

#include <cmath>

#include "addon/bindings.h"

namespace edgellm::addon {

int64_t AdapterRegistry::add(std::shared_ptr<const LoraAdapter> adapter) {
  std::lock_guard<std::mutex> lock(mu_);
  adapters_.push_back(std::move(adapter));
  return (int64_t)adapters_.size() - 1;
}

std::shared_ptr<const LoraSet> AdapterRegistry::resolve(Napi::Env env, const Napi::Value& lora, const char* where) {
  if (lora.IsUndefined() || lora.IsNull()) return nullptr;
  const std::string usage = std::string(where) + ": lora must be an array of {adapter: id from loadAdapter(), scale: number}";
  if (!lora.IsArray()) throw coded_error(env, "E_BAD_ARGUMENT", usage);
  Napi::Array a = lora.As<Napi::Array>();
  if (a.Length() == 0) return nullptr;
  std::vector<std::pair<int64_t, float>> key;
  std::lock_guard<std::mutex> lock(mu_);
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) throw coded_error(env, "E_BAD_ARGUMENT", usage);
    Napi::Value id = e.As<Napi::Object>().Get("adapter");
    Napi::Value scale = e.As<Napi::Object>().Get("scale");
    if (!id.IsNumber()) throw coded_error(env, "E_BAD_ARGUMENT", usage);
    const double d = id.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d < (double)adapters_.size()) || d != std::floor(d))
      throw coded_error(env, "E_UNKNOWN_ADAPTER", std::string(where) + ": no adapter " + std::to_string(d) +
                                                      " is loaded on this model; load it with loadAdapter(path) and pass the id it returns");
    double s = 1.0;
    if (!scale.IsUndefined()) {
      if (!scale.IsNumber() || !std::isfinite(scale.As<Napi::Number>().DoubleValue()))
        throw coded_error(env, "E_BAD_ARGUMENT", std::string(where) + ": a lora scale must be a finite number");
      s = scale.As<Napi::Number>().DoubleValue();
    }
    key.emplace_back((int64_t)d, (float)s);
  }
  auto it = sets_.find(key);
  if (it != sets_.end())
    if (std::shared_ptr<const LoraSet> live = it->second.lock()) return live;
  for (auto e = sets_.begin(); e != sets_.end();) e = e->second.expired() ? sets_.erase(e) : std::next(e);
  auto set = std::make_shared<LoraSet>();
  for (const auto& [id, s] : key) set->push_back(LoraChoice{adapters_[(size_t)id], s});
  sets_[key] = set;
  return set;
}

}  // namespace edgellm::addon
