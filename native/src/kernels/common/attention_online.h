// ISA-neutral part of the fast attention kernels (avx2/attention.cpp, neon/attention.cpp): one
// pass over the visible keys per query and group of heads sharing a KV head, with an online
// softmax (flash-attention style). Keys are taken in tiles of kTile: scores for the tile, one
// rescale of the running sum and accumulator when the maximum grows, then the weighted V rows.
// The heads of a group take each K and V row in turn while it is in L1, so the cache is read
// from memory once per KV head (grouped-query attention: 4-8 query heads per KV head in most
// models, whose caches at long contexts outgrow a Pi's L2). Working memory is fixed-size on the
// stack (head_dim <= kMaxHeadDim, kMaxGroup heads at a time).
//
// This header owns the task split, the visible ranges (sinks + window), the ring-slot stepping
// and the online-softmax bookkeeping; a fast path supplies the vector primitives as Ops:
//
//   struct Ops {
//     static constexpr int64_t kLanes;  // floats per vector: score tiles are padded to this
//     static constexpr size_t kAlign;   // alignment of the score and accumulator buffers
//     // out[j] = scale * (q . k[j]) for j < n, the K rows in f16 (d dims each).
//     static void scores_f16(const float* q, const uint16_t* const* k, int64_t n, int64_t d,
//                            float scale, float* out);
//     // acc += sum_j p[j] * v[j] for j < n, the V rows in f16 (d dims each).
//     static void weighted_sum_f16(float* acc, const float* p, const uint16_t* const* v,
//                                  int64_t n, int64_t d);
//     static void scale_buf(float* acc, float s, int64_t d);  // acc *= s, d padded to kLanes
//     // score[j] = exp(score[j] - max) for j < n (n a multiple of kLanes); returns their sum.
//     static float exp_sum(float* score, int64_t n, float max);
//   };
//
// No intrinsics here; everything is in an anonymous namespace so each translation unit compiles
// its own copy with its own ISA flags (see common/gemm_tiling.h). The reference
// (reference/attention.cpp) keeps its own explicit visibility test and slot formula: it is the
// definition the tests hold these paths to.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"

namespace edgellm::common {
namespace {

constexpr int64_t kTile = 64;
constexpr int64_t kMaxHeadDim = 256;
// Query heads sharing a KV head that one pass serves (larger GQA groups go in several passes).
constexpr int64_t kMaxGroup = 8;

// The slots of consecutive positions p, p + 1, ... (the KvView layout in kernels.h): the first
// slot from the formula, then step and wrap past the end of the ring back to the first non-sink
// slot, without a division per key.
class SlotWalker {
 public:
  SlotWalker(const KvView& kv, int64_t p) : kv_(kv), pos_(p), slot_(p) {
    if (kv.ring && p >= kv.sinks) slot_ = kv.sinks + (p - kv.sinks) % (kv.capacity - kv.sinks);
  }
  // The slot of the current position; moves to the next one.
  int64_t next() {
    if (kv_.ring && pos_ >= kv_.sinks && slot_ == kv_.capacity) slot_ = kv_.sinks;
    ++pos_;
    return slot_++;
  }

 private:
  const KvView& kv_;
  int64_t pos_;
  int64_t slot_;
};

// Calls f(p0, p1) for the ranges of key positions [p0, p1) visible to a query at qp, in
// increasing order: [0, qp] without a window, else the sinks [0, min(S, qp + 1)) (when not
// empty) and the window [max(qp - W + 1, end of the sinks), qp].
template <class F>
inline void for_each_visible_range(const KvView& kv, int64_t qp, F&& f) {
  if (kv.window == 0) {
    f(0, qp + 1);
    return;
  }
  const int64_t sink_end = kv.sinks < qp + 1 ? kv.sinks : qp + 1;
  int64_t lo = qp - kv.window + 1;
  if (lo < sink_end) lo = sink_end;
  if (sink_end > 0) f(0, sink_end);
  f(lo, qp + 1);
}

// acc += sum_j p[j] * row j over d dims (j < n) through a fast path's Ops::weighted_pass<R>
// (8R dims per pass, the sums held in registers across the keys), then one dim at a time. Rows
// gives row j's dim i as rows.at(j, i).
template <class Ops, class Rows>
inline void weighted_sum_rows(float* acc, const float* p, Rows rows, int64_t n, int64_t d) {
  int64_t i = 0;
  while (i + 64 <= d) i = Ops::template weighted_pass<8>(acc, p, rows, n, i);
  while (i + 8 <= d) i = Ops::template weighted_pass<1>(acc, p, rows, n, i);
  for (; i < d; ++i) {
    float s = acc[i];
    for (int64_t j = 0; j < n; ++j) s += p[j] * rows.at(j, i);
    acc[i] = s;
  }
}

template <class Ops>
struct OnlineAttention {
  // Online-softmax state of one (query, head).
  struct State {
    float max = -INFINITY;
    float sum = 0.0f;
    alignas(Ops::kAlign) float acc[kMaxHeadDim];
  };

  // The query heads of one group: consecutive heads of one query that read the same KV head.
  struct Group {
    const float* q[kMaxGroup];
    State* st;
    int64_t n;  // 1..kMaxGroup
  };

  // Keys at positions [p0, p1) (all visible), folded into every head of g. A tile's K and V rows
  // serve all the group's heads one after another while they are in L1 (kTile rows of head_dim
  // f16: 8 KiB each at 64 dims): a long context's cache is read from L2/L3/DRAM once per KV head
  // instead of once per query head.
  static void attend_range(const AttentionArgs& a, const Group& g, int64_t hk, int64_t p0, int64_t p1) {
    const KvView& kv = a.kv;
    const int64_t d = a.head_dim, stride = a.n_head_kv * d;
    alignas(Ops::kAlign) float score[kMaxGroup][kTile];
    const uint16_t* krow[kTile];
    const uint16_t* vrow[kTile];
    for (int64_t t0 = p0; t0 < p1; t0 += kTile) {
      const int64_t n = p1 - t0 < kTile ? p1 - t0 : kTile;
      SlotWalker slots(kv, t0);  // positions in one tile are consecutive
      for (int64_t j = 0; j < n; ++j) {
        const int64_t slot = slots.next();
        krow[j] = kv.k + slot * stride + hk * d;
        vrow[j] = kv.v + slot * stride + hk * d;
      }
      // The next tile's rows, into cache while this one computes: one KV head's rows are
      // n_head_kv x head_dim apart in the cache, a stride the hardware prefetchers follow late.
      if (t0 + kTile < p1) {
        const int64_t m = p1 - t0 - kTile < kTile ? p1 - t0 - kTile : kTile;
        const int64_t row_bytes = d * (int64_t)sizeof(uint16_t);
        for (int64_t j = 0; j < m; ++j) {
          const int64_t slot = slots.next();
          const char* kp = reinterpret_cast<const char*>(kv.k + slot * stride + hk * d);
          const char* vp = reinterpret_cast<const char*>(kv.v + slot * stride + hk * d);
          for (int64_t off = 0; off < row_bytes; off += 64) {
            __builtin_prefetch(kp + off);
            __builtin_prefetch(vp + off);
          }
        }
      }
      float tile_max[kMaxGroup];
      for (int64_t h = 0; h < g.n; ++h) {
        Ops::scores_f16(g.q[h], krow, n, d, a.scale, score[h]);
        tile_max[h] = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          float& sc = score[h][j];
          if (a.softcap > 0.0f) sc = a.softcap * std::tanh(sc / a.softcap);  // gemma2
          if (sc > tile_max[h]) tile_max[h] = sc;  // (a NaN score never becomes the maximum)
        }
      }
      const int64_t n_pad = (n + Ops::kLanes - 1) & ~(Ops::kLanes - 1);
      bool active[kMaxGroup], any = false;
      for (int64_t h = 0; h < g.n; ++h) {
        State& st = g.st[h];
        for (int64_t j = n; j < n_pad; ++j) score[h][j] = -INFINITY;  // exp -> 0
        active[h] = tile_max[h] != -INFINITY;  // else nothing to add (also avoids -inf - -inf)
        if (!active[h]) continue;
        any = true;
        if (tile_max[h] > st.max) {
          const float corr = std::exp(st.max - tile_max[h]);  // 0 on the first tile
          st.sum *= corr;
          Ops::scale_buf(st.acc, corr, d);
          st.max = tile_max[h];
        }
        st.sum += Ops::exp_sum(score[h], n_pad, st.max);
      }
      if (!any) continue;
      for (int64_t h = 0; h < g.n; ++h)
        if (active[h]) Ops::weighted_sum_f16(g.st[h].acc, score[h], vrow, n, d);
    }
  }

  // attention (kernels.h) for tasks [t0, t1): the tasks of one query that share a KV head run
  // together (up to kMaxGroup at a time; a range may start or end inside a group).
  static void run(const AttentionArgs& a, int64_t t0, int64_t t1) {
    const int64_t d = a.head_dim;
    const int64_t group = a.n_head / a.n_head_kv;
    State st[kMaxGroup];
    for (int64_t t = t0; t < t1;) {
      const int64_t qi = t / a.n_head, h0 = t % a.n_head, hk = h0 / group;
      // Heads h0 .. the group's last head, within [t0, t1) and kMaxGroup.
      int64_t n = (hk + 1) * group - h0;
      if (n > t1 - t) n = t1 - t;
      if (n > kMaxGroup) n = kMaxGroup;
      Group g{{}, st, n};
      for (int64_t h = 0; h < n; ++h) {
        g.q[h] = a.q + (qi * a.n_head + h0 + h) * d;
        st[h].max = -INFINITY;
        st[h].sum = 0.0f;
        for (int64_t i = 0; i < kMaxHeadDim; ++i) st[h].acc[i] = 0.0f;
      }
      for_each_visible_range(a.kv, a.pos[qi], [&](int64_t p0, int64_t p1) { attend_range(a, g, hk, p0, p1); });
      for (int64_t h = 0; h < n; ++h) {
        float* out = a.out + (qi * a.n_head + h0 + h) * d;
        const float inv = st[h].sum > 0.0f ? 1.0f / st[h].sum : 0.0f;  // no visible key -> zeros
        for (int64_t i = 0; i < d; ++i) out[i] = st[h].acc[i] * inv;
      }
      t += n;
    }
  }
};

}  // namespace
}  // namespace edgellm::common
