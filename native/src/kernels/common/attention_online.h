// ISA-neutral part of the fast attention kernels (avx2/attention.cpp, neon/attention.cpp): one
// pass over the visible keys per (query, head) task with an online softmax (flash-attention
// style). Keys are taken in tiles of kTile: scores for the tile, one rescale of the running sum
// and accumulator when the maximum grows, then the weighted V rows. Working memory is
// fixed-size on the stack (head_dim <= kMaxHeadDim).
//
// This header owns the task split, the visible ranges (sinks + window), the ring-slot stepping
// and the online-softmax bookkeeping; a fast path supplies the vector primitives as Ops:
//
//   struct Ops {
//     static constexpr int64_t kLanes;  // floats per vector: score tiles are padded to this
//     static constexpr size_t kAlign;   // alignment of the score and accumulator buffers
//     static float dot_f16(const float* q, const uint16_t* k, int64_t d);  // q . k, k in f16
//     static void axpy_f16(float* acc, float w, const uint16_t* v, int64_t d);  // acc += w * v
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

template <class Ops>
struct OnlineAttention {
  // Online-softmax state of one task.
  struct State {
    float max = -INFINITY;
    float sum = 0.0f;
    alignas(Ops::kAlign) float acc[kMaxHeadDim];
  };

  // Keys at positions [p0, p1) (all visible), folded into st.
  static void attend_range(const AttentionArgs& a, const float* q, int64_t hk, int64_t p0, int64_t p1, State& st) {
    const KvView& kv = a.kv;
    const int64_t d = a.head_dim, stride = a.n_head_kv * d;
    alignas(Ops::kAlign) float score[kTile];
    int64_t slot_of[kTile];
    for (int64_t t0 = p0; t0 < p1; t0 += kTile) {
      const int64_t n = p1 - t0 < kTile ? p1 - t0 : kTile;
      SlotWalker slots(kv, t0);  // positions in one tile are consecutive
      float tile_max = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t slot = slots.next();
        slot_of[j] = slot;
        score[j] = Ops::dot_f16(q, kv.k + slot * stride + hk * d, d) * a.scale;
        if (a.softcap > 0.0f) score[j] = a.softcap * std::tanh(score[j] / a.softcap);  // gemma2
        tile_max = std::fmax(tile_max, score[j]);
      }
      if (tile_max == -INFINITY) continue;  // nothing to add (also avoids -inf - -inf)
      const int64_t n_pad = (n + Ops::kLanes - 1) & ~(Ops::kLanes - 1);
      for (int64_t j = n; j < n_pad; ++j) score[j] = -INFINITY;  // exp -> 0
      if (tile_max > st.max) {
        const float corr = std::exp(st.max - tile_max);  // 0 on the first tile
        st.sum *= corr;
        Ops::scale_buf(st.acc, corr, d);
        st.max = tile_max;
      }
      st.sum += Ops::exp_sum(score, n_pad, st.max);
      for (int64_t j = 0; j < n; ++j) Ops::axpy_f16(st.acc, score[j], kv.v + slot_of[j] * stride + hk * d, d);
    }
  }

  // attention (kernels.h) for tasks [t0, t1).
  static void run(const AttentionArgs& a, int64_t t0, int64_t t1) {
    const int64_t d = a.head_dim;
    const int64_t group = a.n_head / a.n_head_kv;
    State st;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t qi = t / a.n_head, h = t % a.n_head, hk = h / group;
      const float* q = a.q + (qi * a.n_head + h) * d;
      float* out = a.out + (qi * a.n_head + h) * d;
      st.max = -INFINITY;
      st.sum = 0.0f;
      for (int64_t i = 0; i < kMaxHeadDim; ++i) st.acc[i] = 0.0f;
      for_each_visible_range(a.kv, a.pos[qi], [&](int64_t p0, int64_t p1) { attend_range(a, q, hk, p0, p1, st); });
      const float inv = st.sum > 0.0f ? 1.0f / st.sum : 0.0f;  // no visible key -> zeros
      for (int64_t i = 0; i < d; ++i) out[i] = st.acc[i] * inv;
    }
  }
};

}  // namespace
}  // namespace edgellm::common
