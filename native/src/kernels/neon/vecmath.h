// Vector math for the NEON fast paths (any ARMv8-A): exp, sigmoid, tanh over float32x4_t.
//
// exp(x) = 2^n * e^r with n = round(x / ln2) and |r| <= ln2/2; e^r is a degree-7 polynomial
// (Cephes-style minimax coefficients), max error about 1-2 ulp on normal results. 2^n is
// applied as two factors 2^(n>>1) * 2^(n - (n>>1)) so that every n in [-159, 129] builds normal
// floats: results overflow to +inf above ~88.72, fall through the subnormals to +0 below
// ~-103.97, and -inf gives exactly 0. NaN stays NaN (FMAX/FMIN propagate it).
#pragma once
#include <arm_neon.h>

namespace edgellm::neon {

inline float32x4_t exp_f32(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-110.0f)), vdupq_n_f32(89.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  // r = x - n*ln2 with ln2 split in two so n*ln2_hi is exact.
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t ni = vcvtq_s32_f32(n);  // n is integral already
  const int32x4_t n1 = vshrq_n_s32(ni, 1);
  const int32x4_t n2 = vsubq_s32(ni, n1);
  const int32x4_t bias = vdupq_n_s32(127);
  const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
  const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
  return vmulq_f32(vmulq_f32(p, s1), s2);
}

// 1 / (1 + e^-x), with a true division (the reciprocal estimate costs accuracy).
inline float32x4_t sigmoid_f32(float32x4_t x) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  return vdivq_f32(one, vaddq_f32(one, exp_f32(vnegq_f32(x))));
}

// tanh(x) = 2 * sigmoid(2x) - 1. Absolute error ~1e-7; relative error grows near 0, so callers
// that need 1 + tanh (GELU) should use sigmoid directly.
inline float32x4_t tanh_f32(float32x4_t x) {
  const float32x4_t two = vdupq_n_f32(2.0f);
  return vsubq_f32(vmulq_f32(two, sigmoid_f32(vmulq_f32(two, x))), vdupq_n_f32(1.0f));
}

}  // namespace edgellm::neon
