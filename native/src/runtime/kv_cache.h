// The KV cache of one sequence: per layer, K and V as f16 [slot][n_head_kv][head_dim].
//
// A layer is either full (one slot per position, up to `context` positions) or a ring for
// sliding-window attention: S sink slots plus a ring of W + max_block - 1 slots. The ring holds
// every key that any query of a block can see while that block's own keys are stored too:
// the first query of a block at p0 sees back to p0 - W + 1 and the block stores up to
// p0 + max_block - 1, a span of W + max_block - 1 positions. A ring layer's memory is fixed,
// so such a sequence can grow without bound (Mistral, StreamingLLM); a full layer throws once a
// position reaches `context`.
//
// Use: per layer, store the block's K and V (positions must be appended without gaps, at most
// max_block of them between attention calls), then run attention with view(layer).
// One KvCache per sequence; sequences share nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"

namespace edgellm {

// The attention span of one layer.
struct KvLayerSpec {
  int64_t window = 0;  // W: the last W positions are visible; 0 = full causal attention
  int64_t sinks = 0;   // S (only with window > 0): the first S positions stay visible too
};

struct KvCacheConfig {
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int64_t context = 0;    // positions a full layer holds (positions 0 .. context-1)
  int64_t max_block = 1;  // most positions stored between two attention calls (prefill chunk)
  std::vector<KvLayerSpec> layers;  // one per layer; empty = every layer full
  // Multi-head latent attention (deepseek2): one row of head_dim per slot (n_head_kv = 1), the
  // compressed latent and the roped key part; no V (attention reads the latent back as its value).
  bool latent = false;
};

class KvCache {
 public:
  // Allocates every layer up front (bytes_for(cfg) bytes). Throws std::invalid_argument on a
  // malformed config. The table's f32_to_f16 converts what store() receives.
  explicit KvCache(const KvCacheConfig& cfg, const KernelTable& kt = kernels());

  // Memory the cache will allocate for cfg, in bytes (to budget several sequences).
  static size_t bytes_for(const KvCacheConfig& cfg);
  // Bytes each position adds on the full (non-ring) layers: what a longer context costs.
  static size_t bytes_per_position(const KvCacheConfig& cfg);

  // K and V of one position: k, v are [n_head_kv][head_dim] floats (v is ignored for a latent cache).
  // pos must be <= length(layer) (append, or rewrite a position the layer still holds).
  // Throws std::out_of_range when a full layer reaches its context or a ring layer no longer
  // holds pos, std::invalid_argument for a gap.
  void store(int64_t layer, int64_t pos, const float* k, const float* v);
  // n consecutive positions from pos0: k, v are [n][n_head_kv][head_dim] floats; n <= max_block.
  void store_block(int64_t layer, int64_t pos0, int64_t n, const float* k, const float* v);

  // What attention reads for this layer (valid until the next store to it).
  KvView view(int64_t layer) const;
  // Positions stored on this layer so far (the next position to append).
  int64_t length(int64_t layer) const;
  // Forget every position (a new sequence); keeps the memory.
  void clear();

  // Memory allocated for K and V, in bytes; constant for the cache's lifetime.
  size_t bytes() const;
  const KvCacheConfig& config() const { return cfg_; }

 private:
  struct Layer {
    std::vector<uint16_t> k, v;
    int64_t capacity = 0;  // slots
    int64_t sinks = 0;
    int64_t window = 0;
    bool ring = false;
    int64_t length = 0;
  };
  int64_t slot_of(const Layer& L, int64_t pos) const;
  const Layer& layer_at(int64_t layer) const;
  Layer& layer_at(int64_t layer) { return const_cast<Layer&>(static_cast<const KvCache*>(this)->layer_at(layer)); }

  KvCacheConfig cfg_;
  const KernelTable* kt_;
  std::vector<Layer> layers_;
};

}  // namespace edgellm
