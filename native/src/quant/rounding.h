// Rounding helpers shared by the weight quantizers. They reproduce ggml's reference behaviour
// bit for bit: the quantizers' output is compared byte for byte with ggml's.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace edgellm {

// Below this a group's largest magnitude counts as all zero (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, by adding 1.5 * 2^23: the sum's low mantissa bits are the
// integer. Valid for |v| <= 2^22 - 1, which every caller's scaled value is.
inline int nearest_int(float v) {
  const float biased = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  return (bits & 0x007fffff) - 0x00400000;
}

// The value of largest magnitude among x[0..n) (the first one on a tie, 0 for all-zero or NaN
// input), with its magnitude in *amax: what every ggml quantizer scales a group by.
inline float signed_absmax(const float* x, int n, float* amax) {
  float max = 0.0f;
  *amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > *amax) {
      *amax = ax;
      max = x[i];
    }
  }
  return max;
}

// Index of the value of the ascending code book `values` (n entries) nearest to x; a tie goes
// to the larger value, as in ggml's best_index_int8.
inline int nearest_code_index(int n, const int8_t* values, float x) {
  if (x <= values[0]) return 0;
  if (x >= values[n - 1]) return n - 1;
  int lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < values[mid]) hi = mid;
    else lo = mid;
  }
  return x - values[hi - 1] < values[hi] - x ? hi - 1 : hi;
}

}  // namespace edgellm
