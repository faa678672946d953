// NEON element-wise and normalization ops (any ARMv8-A). Tails (n % 4) are copied through a
// 4-float buffer so every element takes the same vector code path.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "kernels/neon/neon.h"
#include "kernels/neon/vecmath.h"

namespace edgellm::neon {

// Loads/stores the last n (< 4) floats through a padded buffer; pad fills the unused lanes.
static inline float32x4_t load_tail(const float* x, int64_t n, float pad) {
  float buf[4] = {pad, pad, pad, pad};
  std::memcpy(buf, x, (size_t)n * sizeof(float));
  return vld1q_f32(buf);
}
static inline void store_tail(float* y, float32x4_t v, int64_t n) {
  float buf[4];
  vst1q_f32(buf, v);
  std::memcpy(y, buf, (size_t)n * sizeof(float));
}

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + 4);
    acc0 = vfmaq_f32(acc0, a, a);
    acc1 = vfmaq_f32(acc1, b, b);
  }
  for (; i + 4 <= n; i += 4) {
    const float32x4_t a = vld1q_f32(x + i);
    acc0 = vfmaq_f32(acc0, a, a);
  }
  if (i < n) {
    const float32x4_t a = load_tail(x + i, n - i, 0.0f);
    acc1 = vfmaq_f32(acc1, a, a);
  }
  const double ss = vaddvq_f32(vaddq_f32(acc0, acc1));
  const float scale = 1.0f / std::sqrt((float)(ss / (double)n) + eps);
  const float32x4_t vs = vdupq_n_f32(scale);
  for (i = 0; i + 4 <= n; i += 4) {
    float32x4_t v = vmulq_f32(vld1q_f32(x + i), vs);
    if (w) v = vmulq_f32(v, vld1q_f32(w + i));
    vst1q_f32(y + i, v);
  }
  for (; i < n; ++i) y[i] = w ? x[i] * scale * w[i] : x[i] * scale;
}

// Products and sums are rounded in the reference's order (no FMA), so results are bit-exact.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs, RopeMode mode) {
  const int64_t half = n_rot / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    int64_t i = 0;
    if (mode == RopeMode::Normal) {
      for (; i + 4 <= half; i += 4) {  // 4 adjacent pairs, deinterleaved by vld2
        const float32x4x2_t ab = vld2q_f32(v + 2 * i);
        const float32x4x2_t sc = vld2q_f32(cs + 2 * i);
        float32x4x2_t r;
        r.val[0] = vsubq_f32(vmulq_f32(ab.val[0], sc.val[0]), vmulq_f32(ab.val[1], sc.val[1]));
        r.val[1] = vaddq_f32(vmulq_f32(ab.val[0], sc.val[1]), vmulq_f32(ab.val[1], sc.val[0]));
        vst2q_f32(v + 2 * i, r);
      }
    } else {
      for (; i + 4 <= half; i += 4) {  // pairs (v[i], v[half + i])
        const float32x4x2_t sc = vld2q_f32(cs + 2 * i);
        const float32x4_t a = vld1q_f32(v + i), b = vld1q_f32(v + half + i);
        vst1q_f32(v + i, vsubq_f32(vmulq_f32(a, sc.val[0]), vmulq_f32(b, sc.val[1])));
        vst1q_f32(v + half + i, vaddq_f32(vmulq_f32(a, sc.val[1]), vmulq_f32(b, sc.val[0])));
      }
    }
    for (; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const int64_t i0 = mode == RopeMode::Normal ? 2 * i : i;
      const int64_t i1 = mode == RopeMode::Normal ? 2 * i + 1 : i + half;
      const float a = v[i0], b = v[i1];
      v[i0] = a * c - b * s;
      v[i1] = a * s + b * c;
    }
  }
}

// Applies out = f(gate) * up over full vectors and a padded tail.
template <class F>
static inline void gated(const float* gate, const float* up, float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(f(vld1q_f32(gate + i)), vld1q_f32(up + i)));
  if (i < n)
    store_tail(out + i, vmulq_f32(f(load_tail(gate + i, n - i, 0.0f)), load_tail(up + i, n - i, 0.0f)), n - i);
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  gated(gate, up, out, n, [](float32x4_t g) {
    return vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), exp_f32(vnegq_f32(g))));
  });
}

// 0.5 * g * (1 + tanh(u)) == g * sigmoid(2u): the sigmoid form has no cancellation for g < 0.
void geglu(const float* gate, const float* up, float* out, int64_t n) {
  gated(gate, up, out, n, [](float32x4_t g) {
    const float32x4_t inner = vfmaq_f32(vdupq_n_f32(1.0f), vdupq_n_f32(0.044715f), vmulq_f32(g, g));
    const float32x4_t u2 = vmulq_f32(vmulq_f32(g, vdupq_n_f32(2.0f * 0.79788456080286535588f)), inner);
    return vmulq_f32(g, sigmoid_f32(u2));
  });
}

void softmax(float* x, int64_t n) {
  float32x4_t vmax = vdupq_n_f32(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(x + i));
  float max = vmaxvq_f32(vmax);
  for (; i < n; ++i) max = std::fmax(max, x[i]);
  const float32x4_t vm = vdupq_n_f32(max);
  // The sum in double: over a 32k-152k vocabulary a float sum drops the small terms (log-probs
  // ~1e-5 off); the two widening adds are cheap beside the exp.
  float64x2_t sum_lo = vdupq_n_f64(0.0), sum_hi = vdupq_n_f64(0.0);
  const auto add = [&](float32x4_t e) {
    sum_lo = vaddq_f64(sum_lo, vcvt_f64_f32(vget_low_f32(e)));
    sum_hi = vaddq_f64(sum_hi, vcvt_high_f64_f32(e));
  };
  for (i = 0; i + 4 <= n; i += 4) {
    const float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(x + i), vm));
    vst1q_f32(x + i, e);
    add(e);
  }
  if (i < n) {
    const float32x4_t e = exp_f32(vsubq_f32(load_tail(x + i, n - i, -INFINITY), vm));  // pad -> 0
    store_tail(x + i, e, n - i);
    add(e);
  }
  const float inv = (float)(1.0 / vaddvq_f64(vaddq_f64(sum_lo, sum_hi)));
  const float32x4_t vinv = vdupq_n_f32(inv);
  for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), vinv));
  for (; i < n; ++i) x[i] *= inv;
}

void add(const float* a, const float* b, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
  for (; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(const float* a, float s, float* out, int64_t n) {
  const float32x4_t vs = vdupq_n_f32(s);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vld1q_f32(a + i), vs));
  for (; i < n; ++i) out[i] = a[i] * s;
}

}  // namespace edgellm::neon
