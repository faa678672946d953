// NEON attention (any ARMv8-A): the online-softmax pass of common/attention_online.h over these
// vector primitives (4 floats per vector; f16 K/V widened with FCVTL).
#include <arm_neon.h>

#include <cstddef>

#include "kernels/common/attention_online.h"
#include "kernels/neon/neon.h"
#include "kernels/neon/vecmath.h"
#include "quant/fp16.h"

namespace edgellm::neon {

namespace {

struct Ops {
  static constexpr int64_t kLanes = 4;
  static constexpr size_t kAlign = 16;

  // Key / value rows as the cache stores them (f16, one pointer per key): 8 dims at i of row j
  // widened to two float vectors, and one dim.
  struct F16Rows {
    const uint16_t* const* r;
    void load8(int64_t j, int64_t i, float32x4_t& lo, float32x4_t& hi) const {
      const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(r[j] + i));
      lo = vcvt_f32_f16(vget_low_f16(h));
      hi = vcvt_high_f32_f16(h);
    }
    float at(int64_t j, int64_t i) const { return half_to_float(r[j][i]); }
  };

  // out[j] = scale * (q . row j) for j < n: 4 keys at a time, two accumulators each (8
  // independent FMA chains instead of one latency-bound chain per key), reduced together.
  template <class Rows>
  static void scores(const float* q, Rows k, int64_t n, int64_t d, float scale, float* out) {
    const int64_t d8 = d & ~(int64_t)7;
    for (int64_t j = 0; j < n; j += 4) {
      const int64_t m = n - j < 4 ? n - j : 4;  // a last group of 1-3 keys repeats key j
      int64_t key[4];
      for (int64_t u = 0; u < 4; ++u) key[u] = j + (u < m ? u : 0);
      float32x4_t lo[4], hi[4];
      for (int u = 0; u < 4; ++u) lo[u] = hi[u] = vdupq_n_f32(0.0f);
      for (int64_t i = 0; i < d8; i += 8) {
        const float32x4_t q0 = vld1q_f32(q + i), q1 = vld1q_f32(q + i + 4);
        for (int u = 0; u < 4; ++u) {
          float32x4_t k0, k1;
          k.load8(key[u], i, k0, k1);
          lo[u] = vfmaq_f32(lo[u], q0, k0);
          hi[u] = vfmaq_f32(hi[u], q1, k1);
        }
      }
      // Pairwise adds: lane u of r is key j + u's sum.
      float32x4_t s[4];
      for (int u = 0; u < 4; ++u) s[u] = vaddq_f32(lo[u], hi[u]);
      float t[4];
      vst1q_f32(t, vpaddq_f32(vpaddq_f32(s[0], s[1]), vpaddq_f32(s[2], s[3])));
      for (int64_t u = 0; u < m; ++u) {
        for (int64_t i = d8; i < d; ++i) t[u] += q[i] * k.at(j + u, i);
        out[j + u] = t[u] * scale;
      }
    }
  }

  // acc[i .. i + 8R) += sum_j p[j] row j [i ..]: 2R registers of the sum stay in registers across
  // the keys (2R independent FMA chains), read and written once per call.
  template <int R, class Rows>
  static int64_t weighted_pass(float* acc, const float* p, Rows v, int64_t n, int64_t i) {
    float32x4_t r[2 * R];
    for (int u = 0; u < 2 * R; ++u) r[u] = vld1q_f32(acc + i + 4 * u);
    for (int64_t j = 0; j < n; ++j) {
      const float w = p[j];
      for (int u = 0; u < R; ++u) {
        float32x4_t v0, v1;
        v.load8(j, i + 8 * u, v0, v1);
        r[2 * u] = vfmaq_n_f32(r[2 * u], v0, w);
        r[2 * u + 1] = vfmaq_n_f32(r[2 * u + 1], v1, w);
      }
    }
    for (int u = 0; u < 2 * R; ++u) vst1q_f32(acc + i + 4 * u, r[u]);
    return i + 8 * R;
  }


  static void scores_f16(const float* q, const uint16_t* const* k, int64_t n, int64_t d, float scale, float* out) {
    scores(q, F16Rows{k}, n, d, scale, out);
  }
  static void weighted_sum_f16(float* acc, const float* p, const uint16_t* const* v, int64_t n, int64_t d) {
    common::weighted_sum_rows<Ops>(acc, p, F16Rows{v}, n, d);
  }

  // acc holds d floats in a buffer padded to a multiple of kLanes.
  static void scale_buf(float* acc, float s, int64_t d) {
    for (int64_t i = 0; i < d; i += 4) vst1q_f32(acc + i, vmulq_n_f32(vld1q_f32(acc + i), s));
  }

  // score[j] = exp(score[j] - max) for j < n (a multiple of kLanes, score aligned); their sum.
  static float exp_sum(float* score, int64_t n, float max) {
    const float32x4_t vm = vdupq_n_f32(max);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    for (int64_t j = 0; j < n; j += 4) {
      const float32x4_t p = exp_f32(vsubq_f32(vld1q_f32(score + j), vm));
      vst1q_f32(score + j, p);
      vsum = vaddq_f32(vsum, p);
    }
    return vaddvq_f32(vsum);
  }
};

}  // namespace

void attention(const AttentionArgs& a, int64_t t0, int64_t t1) { common::OnlineAttention<Ops>::run(a, t0, t1); }

}  // namespace edgellm::neon
