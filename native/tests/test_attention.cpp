// Attention against a brute force computed here from an explicit list of visible positions
// (not from the slot formula the kernels use), on full caches, sliding windows with sinks, and
// rings that have wrapped many times. The KV arrays are filled by writing every position in
// order to its slot, as a cache would, and the test checks that every key it expects a query to
// see is still in its slot.
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "test.h"

using namespace edgellm;
using namespace edgellm::test;

namespace {

// A plain max: GCC 12's aarch64 vectorizer crashes on std::fmax reductions at -O3.
inline double max_of(double a, double b) { return a > b ? a : b; }

struct Scenario {
  Scenario(const char* name_, int64_t n_head_, int64_t n_head_kv_, int64_t head_dim_, int64_t sinks_ = 0,
           int64_t window_ = 0, bool ring_ = false, int64_t max_block_ = 1)
      : name(name_), n_head(n_head_), n_head_kv(n_head_kv_), head_dim(head_dim_), sinks(sinks_),
        window(window_), ring(ring_), max_block(max_block_) {}
  const char* name;
  int64_t n_head, n_head_kv, head_dim;
  int64_t sinks, window;
  bool ring;
  int64_t max_block;  // ring capacity = sinks + window + max_block - 1
  int64_t n_stored = 0;   // positions 0 .. n_stored-1 are written, in order
  std::vector<int64_t> qpos;
  float q_std = 2.0f;
  bool growing_scores = false;  // K_p grows with p: every tile raises the running max
  float softcap = 0.0f;         // gemma2: scores capped to softcap * tanh(score / softcap)
};

std::vector<int64_t> range(int64_t a, int64_t b) {
  std::vector<int64_t> r;
  for (int64_t p = a; p < b; ++p) r.push_back(p);
  return r;
}

struct Built {
  std::vector<uint16_t> k, v;  // the cache: [capacity][n_head_kv][head_dim]
  std::vector<float> kp, vp;   // every position's K and V (f16-rounded): [n_stored][n_head_kv][head_dim]
  std::vector<int64_t> owner;  // position last written to each slot
  int64_t capacity;
};

Built build(const Scenario& s) {
  Built b;
  const int64_t row = s.n_head_kv * s.head_dim;
  b.capacity = s.ring ? s.sinks + s.window + s.max_block - 1 : s.n_stored;
  b.k.assign((size_t)(b.capacity * row), 0);
  b.v.assign((size_t)(b.capacity * row), 0);
  b.owner.assign((size_t)b.capacity, -1);
  b.kp.resize((size_t)(s.n_stored * row));
  b.vp.resize((size_t)(s.n_stored * row));
  fill_normal(b.kp.data(), (int64_t)b.kp.size(), 1.0f);
  fill_normal(b.vp.data(), (int64_t)b.vp.size(), 1.0f);
  if (s.growing_scores)
    for (int64_t p = 0; p < s.n_stored; ++p)
      for (int64_t i = 0; i < row; ++i) b.kp[(size_t)(p * row + i)] = b.kp[(size_t)i] * (1.0f + 0.02f * (float)p);
  for (int64_t p = 0; p < s.n_stored; ++p) {
    const int64_t ring_len = b.capacity - s.sinks;
    const int64_t slot = !s.ring || p < s.sinks ? p : s.sinks + (p - s.sinks) % ring_len;
    b.owner[(size_t)slot] = p;
    for (int64_t i = 0; i < row; ++i) {
      const size_t src = (size_t)(p * row + i), dst = (size_t)(slot * row + i);
      b.k[dst] = float_to_half(b.kp[src]);
      b.v[dst] = float_to_half(b.vp[src]);
      b.kp[src] = half_to_float(b.k[dst]);
      b.vp[src] = half_to_float(b.v[dst]);
    }
  }
  return b;
}

// Softmax attention over the explicitly listed visible positions, in double.
std::vector<float> brute_force(const Scenario& s, const Built& b, const std::vector<float>& q, float scale) {
  const int64_t D = s.head_dim, row = s.n_head_kv * D, group = s.n_head / s.n_head_kv;
  std::vector<float> out(s.qpos.size() * (size_t)(s.n_head * D));
  for (size_t qi = 0; qi < s.qpos.size(); ++qi) {
    const int64_t qp = s.qpos[qi];
    std::vector<int64_t> visible;
    for (int64_t kp = 0; kp <= qp; ++kp) {
      const bool in_window = s.window == 0 || qp - kp < s.window;
      if (in_window || kp < s.sinks) visible.push_back(kp);
    }
    // The scenario must keep every visible key resident (this is what the ring sizing promises).
    for (int64_t kp : visible) {
      bool resident = false;
      for (int64_t o : b.owner) resident |= o == kp;
      if (!resident) {
        CHECK_MSG(false, std::string(s.name) + ": key " + std::to_string(kp) + " visible to query " +
                             std::to_string(qp) + " is no longer in the cache");
        return out;
      }
    }
    for (int64_t h = 0; h < s.n_head; ++h) {
      const int64_t hk = h / group;
      const float* qv = q.data() + (qi * (size_t)s.n_head + (size_t)h) * (size_t)D;
      std::vector<double> sc;
      double max = -INFINITY;
      for (int64_t kp : visible) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i) d += (double)qv[i] * b.kp[(size_t)(kp * row + hk * D + i)];
        d *= scale;
        if (s.softcap > 0.0f) d = s.softcap * std::tanh(d / s.softcap);
        sc.push_back(d);
        max = max_of(max, sc.back());
      }
      double sum = 0;
      for (double& x : sc) sum += (x = std::exp(x - max));
      for (int64_t i = 0; i < D; ++i) {
        double acc = 0;
        for (size_t j = 0; j < visible.size(); ++j) acc += sc[j] * b.vp[(size_t)(visible[j] * row + hk * D + i)];
        out[(qi * (size_t)s.n_head + (size_t)h) * (size_t)D + (size_t)i] = (float)(acc / sum);
      }
    }
  }
  return out;
}

// Every table against the brute force; tasks run in two uneven ranges. Returns the worst error.
double run(const Scenario& s) {
  const Built b = build(s);
  const int64_t D = s.head_dim;
  const int64_t n_q = (int64_t)s.qpos.size(), tasks = n_q * s.n_head;
  std::vector<float> q((size_t)(tasks * D));
  fill_normal(q.data(), (int64_t)q.size(), s.q_std);
  if (s.growing_scores)  // q = K_0 of its kv head, so q.k_p grows with p
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t i = 0; i < D; ++i)
        q[(size_t)(t * D + i)] = b.kp[(size_t)((t % s.n_head) / (s.n_head / s.n_head_kv) * D + i)];
  const float scale = 1.0f / std::sqrt((float)D);
  const std::vector<float> want = brute_force(s, b, q, scale);
  double worst = 0;
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<float> got(want.size(), NAN);
    AttentionArgs a{q.data(), s.qpos.data(), n_q, s.n_head, s.n_head_kv, D, scale,
                    KvView{b.k.data(), b.v.data(), b.capacity, s.sinks, s.window, s.ring}, got.data(), s.softcap};
    const int64_t split = tasks / 3;
    t->attention(a, 0, split);
    t->attention(a, split, tasks);
    std::string why;
    if (!near_all(got.data(), want.data(), (int64_t)want.size(), 2e-5, 2e-5, &why))
      CHECK_MSG(false, std::string(t->name) + " " + s.name + " head_dim " + std::to_string(D) + ": " + why);
    if (t->isa != Isa::Reference)
      for (size_t i = 0; i < want.size(); ++i) worst = max_of(worst, std::fabs((double)got[i] - want[i]));
  }
  return worst;
}

void report(const char* what, double worst) {
  std::printf("     attention %-28s max |err| vs brute force (fast paths) %.3g\n", what, worst);
}

}  // namespace

TEST(attention, full_causal) {
  double worst = 0;
  for (int64_t D : {4, 5, 7, 8, 64, 80, 128, 256}) {
    Scenario s{"full causal", 4, 2, D};
    s.n_stored = 150;
    s.qpos = {0, 1, 63, 64, 65, 128, 149};
    worst = max_of(worst, run(s));
  }
  report("full causal", worst);
}

// gemma2: scores c * tanh(score / c), with scores large enough (q_std 4) that the cap bites;
// prefill blocks, one decode query with many heads, and a window, so every fast path (and the
// avx512 table's routing of capped calls) is held to the brute force.
TEST(attention, soft_capped_scores) {
  auto capped = [](const char* name, int64_t n_head, int64_t D, int64_t window, int64_t n_stored, std::vector<int64_t> qpos) {
    Scenario s{name, n_head, 2, D, 0, window};
    s.n_stored = n_stored;
    s.qpos = std::move(qpos);
    s.q_std = 4.0f;
    s.softcap = 2.0f;
    return s;
  };
  double worst = 0;
  for (int64_t D : {8, 64, 128, 256}) {
    worst = max_of(worst, run(capped("softcap prefill", 8, D, 0, 150, range(100, 150))));
    worst = max_of(worst, run(capped("softcap decode", 40, D, 0, 300, range(299, 300))));
    worst = max_of(worst, run(capped("softcap window", 4, D, 16, 100, range(0, 100))));
  }
  report("soft-capped scores", worst);
}

TEST(attention, gqa_ratios_1_2_4_8) {
  double worst = 0;
  for (int64_t group : {1, 2, 4, 8}) {
    for (int64_t D : {8, 64, 128}) {
      Scenario s{"gqa", 8, 8 / group, D};
      s.n_stored = 100;
      s.qpos = range(92, 100);
      worst = max_of(worst, run(s));
    }
  }
  report("gqa 1/2/4/8", worst);
}

// Decode: one query, its heads in one or two task ranges (the avx512 table then shares each K/V
// tile among the heads of a KV head, 16 at a most), positions inside and past the first tiles.
TEST(attention, decode_one_query_many_heads_per_kv_head) {
  double worst = 0;
  for (int64_t D : {16, 64, 128, 256})
    for (int64_t pos : {0, 15, 16, 17, 70, 299}) {
      Scenario s{"decode", 40, 2, D};  // 20 heads per KV head
      s.n_stored = 300;
      s.qpos.assign(1, pos);
      worst = max_of(worst, run(s));
    }
  report("decode 20 heads per kv head", worst);
}

TEST(attention, sliding_window_longer_sequence) {
  double worst = 0;
  for (int64_t D : {8, 64, 80}) {
    for (int64_t W : {1, 16, 70}) {
      Scenario s{"window", 4, 2, D, 0, W};
      s.n_stored = 200;
      s.qpos = {0, 5, 69, 70, 71, 150, 199};
      worst = max_of(worst, run(s));
    }
  }
  report("window", worst);
}

TEST(attention, sinks_and_window) {
  double worst = 0;
  for (int64_t D : {4, 64, 128}) {
    Scenario s{"sinks+window", 4, 1, D, 4, 16};
    s.n_stored = 200;
    s.qpos = {0, 3, 4, 19, 20, 21, 100, 199};
    worst = max_of(worst, run(s));
  }
  report("sinks + window", worst);
}

TEST(attention, ring_wrapped_many_times) {
  double worst = 0;
  for (int64_t D : {8, 64, 80, 128, 256}) {
    Scenario s{"ring S=4 W=16 block 8", 8, 2, D, 4, 16, true, 8};
    s.n_stored = 1000;  // capacity 27: the ring has wrapped ~43 times
    s.qpos = range(992, 1000);
    worst = max_of(worst, run(s));
  }
  Scenario no_sinks{"ring S=0 W=32 decode", 4, 4, 64, 0, 32, true, 1};
  no_sinks.n_stored = 5000;
  no_sinks.qpos.assign(1, 4999);
  worst = max_of(worst, run(no_sinks));
  Scenario big{"ring S=2 W=100 block 16", 16, 2, 256, 2, 100, true, 16};
  big.n_stored = 777;
  big.qpos = range(761, 777);
  worst = max_of(worst, run(big));
  report("ring (wrapped)", worst);
}

TEST(attention, prefill_block_with_mixed_visibility) {
  double worst = 0;
  // First block: queries 0..11 see everything, then lose keys to the window; sinks stay.
  Scenario first{"block 0..11 S=4 W=8", 4, 2, 64, 4, 8, true, 12};
  first.n_stored = 12;
  first.qpos = range(0, 12);
  worst = max_of(worst, run(first));
  // Later blocks, after the ring wrapped.
  for (int64_t end : {24, 36, 113}) {
    Scenario later{"later block S=4 W=8", 4, 2, 64, 4, 8, true, 12};
    later.n_stored = end;
    later.qpos = range(end - 12, end);
    worst = max_of(worst, run(later));
  }
  // A partial block (fewer than max_block queries) in the middle of a ring.
  Scenario partial{"partial block", 4, 4, 80, 0, 20, true, 10};
  partial.n_stored = 505;
  partial.qpos = range(500, 505);
  worst = max_of(worst, run(partial));
  // Full cache, long prefill chunk.
  Scenario full{"full chunk", 4, 1, 128, 0, 0};
  full.n_stored = 300;
  full.qpos = range(200, 300);
  worst = max_of(worst, run(full));
  report("prefill blocks", worst);
}

TEST(attention, online_softmax_rescales_when_later_keys_score_higher) {
  double worst = 0;
  for (int64_t D : {8, 64}) {
    Scenario s{"growing scores", 2, 1, D};
    s.n_stored = 400;
    s.qpos.assign(1, 399);
    s.growing_scores = true;
    worst = max_of(worst, run(s));
    Scenario peaky{"peaky", 4, 2, D};
    peaky.n_stored = 300;
    peaky.qpos = {150, 299};
    peaky.q_std = 8.0f;
    worst = max_of(worst, run(peaky));
  }
  report("rescaling / peaky", worst);
}
