// NEON attention (any ARMv8-A; f16 K/V widened with FCVTL): one pass over the visible keys per
// (query, head) task with an online softmax (flash-attention style). Keys are taken in tiles of
// kTile: scores for the tile, one rescale of the running sum and accumulator when the maximum
// grows, then the weighted V rows. Working memory is fixed-size on the stack
// (head_dim <= kMaxHeadDim).
#include <arm_neon.h>

#include <cmath>

#include "kernels/neon/neon.h"
#include "kernels/neon/vecmath.h"
#include "quant/fp16.h"

namespace edgellm::neon {

namespace {

constexpr int64_t kTile = 64;
constexpr int64_t kMaxHeadDim = 256;

inline float32x4_t load_f16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// q . k over d dims, k in f16. Never reads past k[d - 1].
inline float dot_f16(const float* q, const uint16_t* k, int64_t d) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const float16x8_t kh = vreinterpretq_f16_u16(vld1q_u16(k + i));
    acc0 = vfmaq_f32(acc0, vld1q_f32(q + i), vcvt_f32_f16(vget_low_f16(kh)));
    acc1 = vfmaq_f32(acc1, vld1q_f32(q + i + 4), vcvt_high_f32_f16(kh));
  }
  if (i + 4 <= d) {
    acc0 = vfmaq_f32(acc0, vld1q_f32(q + i), load_f16x4(k + i));
    i += 4;
  }
  float s = vaddvq_f32(vaddq_f32(acc0, acc1));
  for (; i < d; ++i) s += q[i] * half_to_float(k[i]);
  return s;
}

// acc += w * v over d dims, v in f16.
inline void axpy_f16(float* acc, float w, const uint16_t* v, int64_t d) {
  const float32x4_t vw = vdupq_n_f32(w);
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const float16x8_t vh = vreinterpretq_f16_u16(vld1q_u16(v + i));
    vst1q_f32(acc + i, vfmaq_f32(vld1q_f32(acc + i), vw, vcvt_f32_f16(vget_low_f16(vh))));
    vst1q_f32(acc + i + 4, vfmaq_f32(vld1q_f32(acc + i + 4), vw, vcvt_high_f32_f16(vh)));
  }
  if (i + 4 <= d) {
    vst1q_f32(acc + i, vfmaq_f32(vld1q_f32(acc + i), vw, load_f16x4(v + i)));
    i += 4;
  }
  for (; i < d; ++i) acc[i] += w * half_to_float(v[i]);
}

// acc holds d floats in a buffer padded to a multiple of 4.
inline void scale_buf(float* acc, float s, int64_t d) {
  for (int64_t i = 0; i < d; i += 4) vst1q_f32(acc + i, vmulq_n_f32(vld1q_f32(acc + i), s));
}

// Online-softmax state of one task.
struct Online {
  float max = -INFINITY;
  float sum = 0.0f;
  alignas(16) float acc[kMaxHeadDim];
};

// Keys at positions [p0, p1) (all visible), folded into st.
void attend_range(const AttentionArgs& a, const float* q, int64_t hk, int64_t p0, int64_t p1, Online& st) {
  const KvView& kv = a.kv;
  const int64_t d = a.head_dim, stride = a.n_head_kv * d;
  const int64_t ring_len = kv.capacity - kv.sinks;
  alignas(16) float score[kTile];
  int64_t slot_of[kTile];
  for (int64_t t0 = p0; t0 < p1; t0 += kTile) {
    const int64_t n = p1 - t0 < kTile ? p1 - t0 : kTile;
    // Slot of the first key, then step and wrap (positions in one tile are consecutive).
    int64_t slot = t0;
    if (kv.ring && t0 >= kv.sinks) slot = kv.sinks + (t0 - kv.sinks) % ring_len;
    float tile_max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      if (kv.ring && t0 + j >= kv.sinks && slot == kv.capacity) slot = kv.sinks;
      slot_of[j] = slot;
      score[j] = dot_f16(q, kv.k + slot * stride + hk * d, d) * a.scale;
      tile_max = std::fmax(tile_max, score[j]);
      ++slot;
    }
    if (tile_max == -INFINITY) continue;  // nothing to add (also avoids -inf - -inf)
    const int64_t n4 = (n + 3) & ~int64_t(3);
    for (int64_t j = n; j < n4; ++j) score[j] = -INFINITY;  // exp -> 0
    if (tile_max > st.max) {
      const float corr = std::exp(st.max - tile_max);  // 0 on the first tile
      st.sum *= corr;
      scale_buf(st.acc, corr, d);
      st.max = tile_max;
    }
    const float32x4_t vm = vdupq_n_f32(st.max);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    for (int64_t j = 0; j < n4; j += 4) {
      const float32x4_t p = exp_f32(vsubq_f32(vld1q_f32(score + j), vm));
      vst1q_f32(score + j, p);
      vsum = vaddq_f32(vsum, p);
    }
    st.sum += vaddvq_f32(vsum);
    for (int64_t j = 0; j < n; ++j) axpy_f16(st.acc, score[j], kv.v + slot_of[j] * stride + hk * d, d);
  }
}

}  // namespace

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) {
  const KvView& kv = a.kv;
  const int64_t d = a.head_dim;
  const int64_t group = a.n_head / a.n_head_kv;
  Online st;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t qi = t / a.n_head, h = t % a.n_head, hk = h / group;
    const int64_t qp = a.pos[qi];
    const float* q = a.q + (qi * a.n_head + h) * d;
    float* out = a.out + (qi * a.n_head + h) * d;
    st.max = -INFINITY;
    st.sum = 0.0f;
    for (int64_t i = 0; i < kMaxHeadDim; ++i) st.acc[i] = 0.0f;
    // Visible positions: the sinks [0, min(S, qp+1)) and the window [max(qp-W+1, ..), qp].
    if (kv.window == 0) {
      attend_range(a, q, hk, 0, qp + 1, st);
    } else {
      const int64_t sink_end = kv.sinks < qp + 1 ? kv.sinks : qp + 1;
      int64_t lo = qp - kv.window + 1;
      if (lo < sink_end) lo = sink_end;
      if (sink_end > 0) attend_range(a, q, hk, 0, sink_end, st);
      attend_range(a, q, hk, lo, qp + 1, st);
    }
    const float inv = st.sum > 0.0f ? 1.0f / st.sum : 0.0f;  // no visible key -> zeros
    for (int64_t i = 0; i < d; ++i) out[i] = st.acc[i] * inv;
  }
}

}  // namespace edgellm::neon
