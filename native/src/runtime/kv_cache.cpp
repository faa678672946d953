#include "runtime/kv_cache.h"

#include <stdexcept>
#include <string>

namespace edgellm {

namespace {

std::string str(int64_t v) { return std::to_string((long long)v); }

// Validates cfg and returns (capacity, ring) of layer l.
void layer_shape(const KvCacheConfig& cfg, int64_t l, int64_t* capacity, bool* ring) {
  const KvLayerSpec spec = cfg.layers.empty() ? KvLayerSpec{} : cfg.layers[(size_t)l];
  if (spec.window < 0 || spec.sinks < 0)
    throw std::invalid_argument("KvCache: layer " + str(l) + " has a negative window or sink count");
  if (spec.window == 0 && spec.sinks > 0)
    throw std::invalid_argument("KvCache: layer " + str(l) +
                                " has sinks without a window; sinks only apply to sliding-window layers");
  *ring = spec.window > 0;
  *capacity = *ring ? spec.sinks + spec.window + cfg.max_block - 1 : cfg.context;
}

void check_config(const KvCacheConfig& cfg) {
  if (cfg.n_layer <= 0 || cfg.n_head_kv <= 0 || cfg.head_dim <= 0)
    throw std::invalid_argument("KvCache: n_layer, n_head_kv and head_dim must be positive (got " +
                                str(cfg.n_layer) + ", " + str(cfg.n_head_kv) + ", " + str(cfg.head_dim) + ")");
  if (cfg.context <= 0) throw std::invalid_argument("KvCache: context must be positive (got " + str(cfg.context) + ")");
  if (cfg.max_block <= 0)
    throw std::invalid_argument("KvCache: max_block must be positive (got " + str(cfg.max_block) + ")");
  if (!cfg.layers.empty() && (int64_t)cfg.layers.size() != cfg.n_layer)
    throw std::invalid_argument("KvCache: " + str((int64_t)cfg.layers.size()) + " layer specs for " +
                                str(cfg.n_layer) + " layers");
}

// Bytes of all layers (full_only: of the full layers, one slot each: what a position adds).
size_t cache_bytes(const KvCacheConfig& cfg, bool full_only) {
  check_config(cfg);
  const size_t slot_bytes = (cfg.latent ? 1 : 2) * (size_t)(cfg.n_head_kv * cfg.head_dim) * sizeof(uint16_t);
  size_t total = 0;
  for (int64_t l = 0; l < cfg.n_layer; ++l) {
    int64_t capacity;
    bool ring;
    layer_shape(cfg, l, &capacity, &ring);
    if (!full_only) total += (size_t)capacity * slot_bytes;
    else if (!ring) total += slot_bytes;
  }
  return total;
}

}  // namespace

size_t KvCache::bytes_for(const KvCacheConfig& cfg) { return cache_bytes(cfg, false); }

size_t KvCache::bytes_per_position(const KvCacheConfig& cfg) { return cache_bytes(cfg, true); }

KvCache::KvCache(const KvCacheConfig& cfg, const KernelTable& kt) : cfg_(cfg), kt_(&kt) {
  check_config(cfg_);
  layers_.resize((size_t)cfg_.n_layer);
  const size_t slot_elems = (size_t)(cfg_.n_head_kv * cfg_.head_dim);
  for (int64_t l = 0; l < cfg_.n_layer; ++l) {
    Layer& L = layers_[(size_t)l];
    layer_shape(cfg_, l, &L.capacity, &L.ring);
    if (L.ring) {
      L.sinks = cfg_.layers[(size_t)l].sinks;
      L.window = cfg_.layers[(size_t)l].window;
    }
    L.k.assign((size_t)L.capacity * slot_elems, 0);
    if (!cfg_.latent) L.v.assign((size_t)L.capacity * slot_elems, 0);
  }
}

const KvCache::Layer& KvCache::layer_at(int64_t layer) const {
  if (layer < 0 || layer >= cfg_.n_layer)
    throw std::out_of_range("KvCache: layer " + str(layer) + " of " + str(cfg_.n_layer));
  return layers_[(size_t)layer];
}

// The slot mapping documented at KvView (kernels.h).
int64_t KvCache::slot_of(const Layer& L, int64_t pos) const {
  if (!L.ring || pos < L.sinks) return pos;
  return L.sinks + (pos - L.sinks) % (L.capacity - L.sinks);
}

void KvCache::store(int64_t layer, int64_t pos, const float* k, const float* v) {
  Layer& L = layer_at(layer);
  if (pos < 0 || pos > L.length)
    throw std::invalid_argument("KvCache: position " + str(pos) + " stored on layer " + str(layer) +
                                " which holds positions up to " + str(L.length - 1) +
                                "; positions must be appended without gaps");
  if (!L.ring && pos >= L.capacity)
    throw std::out_of_range("KvCache: position " + str(pos) + " is past the context of " + str(L.capacity) +
                            " positions (layer " + str(layer) +
                            " keeps every position); start a new sequence or raise the context");
  if (L.ring && pos < L.length && pos >= L.sinks && L.length - pos > L.capacity - L.sinks)
    throw std::out_of_range("KvCache: position " + str(pos) + " was already overwritten in the ring of layer " +
                            str(layer));
  const int64_t n = cfg_.n_head_kv * cfg_.head_dim;
  const int64_t slot = slot_of(L, pos);
  kt_->f32_to_f16(k, L.k.data() + slot * n, n);
  if (!cfg_.latent) kt_->f32_to_f16(v, L.v.data() + slot * n, n);
  if (pos == L.length) L.length = pos + 1;
}

void KvCache::store_block(int64_t layer, int64_t pos0, int64_t n, const float* k, const float* v) {
  if (n > cfg_.max_block)
    throw std::invalid_argument("KvCache: block of " + str(n) + " positions is larger than max_block " +
                                str(cfg_.max_block) + "; split it or raise max_block");
  const int64_t stride = cfg_.n_head_kv * cfg_.head_dim;
  for (int64_t i = 0; i < n; ++i) store(layer, pos0 + i, k + i * stride, v ? v + i * stride : nullptr);
}

KvView KvCache::view(int64_t layer) const {
  const Layer& L = layer_at(layer);
  return KvView{L.k.data(), cfg_.latent ? nullptr : L.v.data(), L.capacity, L.sinks, L.window, L.ring};
}

int64_t KvCache::length(int64_t layer) const { return layer_at(layer).length; }

void KvCache::clear() {
  for (Layer& L : layers_) L.length = 0;
}

size_t KvCache::bytes() const {
  size_t total = 0;
  for (const Layer& L : layers_) total += (L.k.size() + L.v.size()) * sizeof(uint16_t);
  return total;
}

}  // namespace edgellm
