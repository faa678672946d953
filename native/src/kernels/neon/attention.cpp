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

  static float32x4_t load_f16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

  // q . k over d dims, k in f16. Never reads past k[d - 1].
  static float dot_f16(const float* q, const uint16_t* k, int64_t d) {
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
  static void axpy_f16(float* acc, float w, const uint16_t* v, int64_t d) {
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
