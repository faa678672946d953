// KvCache: full and ring layers, the errors at its edges, fixed memory for ring layers, and
// attention through its views equal to a brute force over every position's K and V.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "runtime/kv_cache.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

// A plain max: GCC 12's aarch64 vectorizer crashes on std::fmax reductions at -O3.
inline double max_of(double a, double b) { return a > b ? a : b; }

KvCacheConfig config(int64_t n_layer, int64_t n_head_kv, int64_t head_dim, int64_t context, int64_t max_block,
                     std::vector<KvLayerSpec> layers = {}) {
  KvCacheConfig c;
  c.n_layer = n_layer;
  c.n_head_kv = n_head_kv;
  c.head_dim = head_dim;
  c.context = context;
  c.max_block = max_block;
  c.layers = std::move(layers);
  return c;
}

// Runs f and returns the message of the exception of type E it throws ("" if none).
template <class E, class F>
std::string thrown(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (...) {
    return "<other exception>";
  }
  return "";
}

}  // namespace

TEST(kvcache, ring_layers_keep_their_memory_over_100000_positions) {
  KvCache cache(config(2, 2, 8, 4096, 4, {{64, 4}, {32, 0}}));
  const size_t bytes = cache.bytes();
  CHECK_EQ(bytes, KvCache::bytes_for(cache.config()));
  // (4 + 64 + 3) + (32 + 3) slots, 16 halves each for K and for V.
  CHECK_EQ(bytes, (size_t)((71 + 35) * 16 * 2 * 2));
  std::vector<float> k(16), v(16);
  for (int64_t p = 0; p < 100000; ++p) {
    k[0] = (float)(p % 1000);
    for (int64_t l = 0; l < 2; ++l) cache.store(l, p, k.data(), v.data());
    if (p % 10000 == 0) CHECK_EQ(cache.bytes(), bytes);
  }
  CHECK_EQ(cache.bytes(), bytes);
  CHECK_EQ(cache.length(0), 100000);
  // The last position is where the slot formula says.
  const KvView view = cache.view(0);
  const int64_t slot = 4 + (99999 - 4) % (view.capacity - 4);
  CHECK_EQ(half_to_float(view.k[slot * 16]), 999.0f);
}

TEST(kvcache, full_layer_throws_past_its_context) {
  KvCache cache(config(1, 1, 4, 8, 1));
  std::vector<float> k(4, 1.0f), v(4, 2.0f);
  for (int64_t p = 0; p < 8; ++p) cache.store(0, p, k.data(), v.data());
  const std::string msg = thrown<std::out_of_range>([&] { cache.store(0, 8, k.data(), v.data()); });
  CHECK_MSG(msg.find("position 8 is past the context of 8 positions") != std::string::npos, "message: " + msg);
  CHECK_EQ(cache.length(0), 8);
  cache.clear();  // a new sequence starts over in the same memory
  CHECK_EQ(cache.length(0), 0);
  cache.store(0, 0, k.data(), v.data());
}

TEST(kvcache, rejects_gaps_oversized_blocks_and_bad_configs) {
  KvCache cache(config(2, 1, 4, 64, 4, {{0, 0}, {8, 2}}));
  std::vector<float> kv(4 * 5, 0.5f);
  CHECK(thrown<std::invalid_argument>([&] { cache.store(0, 3, kv.data(), kv.data()); }).find("without gaps") !=
        std::string::npos);
  CHECK(thrown<std::invalid_argument>([&] { cache.store_block(1, 0, 5, kv.data(), kv.data()); })
            .find("larger than max_block 4") != std::string::npos);
  CHECK(thrown<std::out_of_range>([&] { cache.view(2); }).find("layer 2") != std::string::npos);
  // Rewriting a position the ring no longer holds.
  for (int64_t p = 0; p < 40; ++p) cache.store(1, p, kv.data(), kv.data());
  CHECK(thrown<std::out_of_range>([&] { cache.store(1, 10, kv.data(), kv.data()); }).find("overwritten") !=
        std::string::npos);
  cache.store(1, 1, kv.data(), kv.data());   // a sink: still held
  cache.store(1, 35, kv.data(), kv.data());  // recent: still held
  CHECK(!thrown<std::invalid_argument>([&] { KvCache bad(config(1, 1, 4, 64, 1, {{0, 4}})); }).empty());
  CHECK(!thrown<std::invalid_argument>([&] { KvCache bad(config(2, 1, 4, 64, 1, {{0, 0}})); }).empty());
  CHECK(!thrown<std::invalid_argument>([&] { KvCache bad(config(1, 1, 4, 0, 1)); }).empty());
}

// The forward-pass pattern: per block, store the block's K/V for each layer, then attend the
// block's queries through view(layer). Layer 0 is full, layer 1 a sliding window with sinks
// (gemma3/Mistral-style mix, StreamingLLM sinks); prefill in blocks of max_block, then decode.
TEST(kvcache, attention_through_views_matches_brute_force_in_prefill_and_decode) {
  const int64_t n_head = 4, n_head_kv = 2, D = 16, row = n_head_kv * D, block = 6, W = 10, S = 2;
  const int64_t total = 200;
  KvCache cache(config(2, n_head_kv, D, 256, block, {{0, 0}, {W, S}}));
  std::vector<float> K((size_t)(total * row)), V((size_t)(total * row));
  fill_normal(K.data(), (int64_t)K.size(), 1.0f);
  fill_normal(V.data(), (int64_t)V.size(), 1.0f);
  for (float& x : K) x = half_to_float(float_to_half(x));
  for (float& x : V) x = half_to_float(float_to_half(x));
  const float scale = 1.0f / std::sqrt((float)D);
  const KernelTable& kt = kernels();
  int64_t p0 = 0;
  while (p0 < total) {
    const int64_t n = p0 < 120 ? std::min(block, 120 - p0) : 1;  // prefill chunks, then decode
    std::vector<int64_t> pos;
    for (int64_t i = 0; i < n; ++i) pos.push_back(p0 + i);
    std::vector<float> q((size_t)(n * n_head * D));
    fill_normal(q.data(), (int64_t)q.size(), 1.5f);
    for (int64_t layer = 0; layer < 2; ++layer) {
      cache.store_block(layer, p0, n, K.data() + p0 * row, V.data() + p0 * row);
      std::vector<float> got(q.size());
      AttentionArgs a{q.data(), pos.data(), n, n_head, n_head_kv, D, scale, cache.view(layer), got.data()};
      kt.attention(a, 0, n * n_head);
      // Brute force from the explicit positions.
      std::vector<float> want(q.size());
      for (int64_t qi = 0; qi < n; ++qi) {
        const int64_t qp = pos[(size_t)qi];
        for (int64_t h = 0; h < n_head; ++h) {
          const int64_t hk = h / (n_head / n_head_kv);
          const float* qv = q.data() + (qi * n_head + h) * D;
          std::vector<double> w;
          std::vector<int64_t> vis;
          for (int64_t kp = 0; kp <= qp; ++kp) {
            if (layer == 1 && !(qp - kp < W || kp < S)) continue;
            double d = 0;
            for (int64_t i = 0; i < D; ++i) d += (double)qv[i] * K[(size_t)(kp * row + hk * D + i)];
            w.push_back(d * scale);
            vis.push_back(kp);
          }
          double mx = -INFINITY, sum = 0;
          for (double x : w) mx = max_of(mx, x);
          for (double& x : w) sum += (x = std::exp(x - mx));
          for (int64_t i = 0; i < D; ++i) {
            double acc = 0;
            for (size_t j = 0; j < vis.size(); ++j) acc += w[j] * V[(size_t)(vis[j] * row + hk * D + i)];
            want[(size_t)((qi * n_head + h) * D + i)] = (float)(acc / sum);
          }
        }
      }
      std::string why;
      if (!near_all(got.data(), want.data(), (int64_t)want.size(), 2e-5, 2e-5, &why))
        CHECK_MSG(false, "layer " + std::to_string(layer) + " block at " + std::to_string(p0) + ": " + why);
    }
    p0 += n;
  }
  CHECK_EQ(cache.length(1), total);
}

TEST(kvcache, sequences_are_independent) {
  const KvCacheConfig cfg = config(1, 1, 4, 16, 1, {{4, 1}});
  KvCache a(cfg), b(cfg);
  std::vector<float> one(4, 1.0f), two(4, 2.0f);
  for (int64_t p = 0; p < 10; ++p) a.store(0, p, one.data(), one.data());
  for (int64_t p = 0; p < 3; ++p) b.store(0, p, two.data(), two.data());
  CHECK_EQ(a.length(0), 10);
  CHECK_EQ(b.length(0), 3);
  CHECK_EQ(half_to_float(a.view(0).k[0]), 1.0f);
  CHECK_EQ(half_to_float(b.view(0).k[0]), 2.0f);
  CHECK(a.view(0).k != b.view(0).k);
}

TEST(kvcache, latent_cache_stores_one_row_per_position_and_no_values) {
  // deepseek2: one "head" of kv_lora_rank + rope dims (here 12) per position and layer.
  KvCacheConfig c = config(3, 1, 12, 16, 4);
  c.latent = true;
  KvCache cache(c);
  CHECK_EQ(cache.bytes(), (size_t)(3 * 16 * 12 * 2));
  CHECK_EQ(KvCache::bytes_for(c), cache.bytes());
  CHECK_EQ(KvCache::bytes_per_position(c), (size_t)(3 * 12 * 2));
  std::vector<float> rows(2 * 12);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = (float)i * 0.5f;
  cache.store_block(1, 0, 2, rows.data(), nullptr);
  const KvView view = cache.view(1);
  CHECK(view.v == nullptr);
  for (int64_t i = 0; i < 24; ++i) CHECK_EQ(half_to_float(view.k[i]), (float)i * 0.5f);
  CHECK_EQ(cache.length(1), 2);
  // A plain cache of the same shape holds K and V: twice the bytes.
  CHECK_EQ(KvCache::bytes_for(config(3, 1, 12, 16, 4)), 2 * cache.bytes());
  CHECK_EQ(KvCache::bytes_per_position(config(3, 1, 12, 16, 4, {{8, 0}, {}, {}})), (size_t)(2 * 2 * 12 * 2));
}
