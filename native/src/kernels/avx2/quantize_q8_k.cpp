// Activations -> Q8_K (the K-quant GEMMs' X), byte-identical with quantize_row_q8_K_ref
// (ggml's quantize_row_q8_K_ref) for every input, NaN and infinities included: the same scalar
// scale, the same f32 products (no FMA), the same rounding trick and the same int8 conversion.
#include <immintrin.h>

#include <cstring>

#include "kernels/avx2/avx2.h"

namespace edgellm::avx2 {

namespace {

constexpr int kVecs = kQKK / 8;  // 32 vectors of 8 floats per block

// max |x| over one block, ignoring NaN as the reference's `|x| > amax` scan does (max_ps returns
// its second operand when either is NaN, and that operand is the running maximum).
inline float block_amax(const float* x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int v = 0; v < kVecs; ++v) m = _mm256_max_ps(_mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 8 * v)), m);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// The first x[j] with |x[j]| == amax (> 0): the reference keeps the first of equal magnitudes, so
// +a before -a gives a positive max and the opposite order a negative one.
inline float first_with_magnitude(const float* x, float amax) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 target = _mm256_set1_ps(amax);
  for (int v = 0; v < kVecs; ++v) {
    const __m256 ax = _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 8 * v));
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(ax, target, _CMP_EQ_OQ));
    if (mask) return x[8 * v + __builtin_ctz((unsigned)mask)];
  }
  return 0.0f;  // unreachable: amax is one of the magnitudes
}

// ggml's nearest_int: f + 1.5 * 2^23 puts round-half-to-even(f) in the low mantissa bits (for
// |f| < 2^22; beyond that both compute the same bits), then min(127, .).
inline __m256i round_clamp(__m256 f) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256i mantissa = _mm256_set1_epi32(0x007FFFFF);
  const __m256i bias = _mm256_set1_epi32(0x00400000);
  const __m256i bits = _mm256_castps_si256(_mm256_add_ps(f, magic));
  return _mm256_min_epi32(_mm256_sub_epi32(_mm256_and_si256(bits, mantissa), bias), _mm256_set1_epi32(127));
}

}  // namespace

void quantize_row_q8_k(const float* x, block_q8_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  const __m256i low_byte = _mm256_set1_epi32(0xFF);
  // packus interleaves the 128-bit lanes; this restores element order.
  const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQKK;
    block_q8_K& out = y[i];
    const float amax = block_amax(xb);
    if (amax == 0.0f) {
      std::memset(&out, 0, sizeof out);
      continue;
    }
    const float iscale = -127.0f / first_with_magnitude(xb, amax);
    const __m256 vscale = _mm256_set1_ps(iscale);
    // Per 32 codes: 4 x 8 int32 -> their low bytes (the int -> int8 conversion of the reference),
    // and the 4-code partial sums of the bytes for the bsums.
    __m256i part[8];
    for (int g = 0; g < 8; ++g) {
      __m256i q[4];
      for (int v = 0; v < 4; ++v)
        q[v] = _mm256_and_si256(round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xb + 32 * g + 8 * v), vscale)), low_byte);
      const __m256i bytes = _mm256_permutevar8x32_epi32(
          _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3])), unshuffle);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.qs + 32 * g), bytes);
      // Low 128 bits: 4 sums of 4 codes of group 2g of 16; high: of group 2g+1.
      part[g] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, bytes), ones16);
    }
    // Two rounds of hadd leave groups [0,2,4,6] in the low half and [1,3,5,7] in the high half of
    // parts 0-3 (likewise 8-15 from parts 4-7); interleaving the halves restores the order.
    const __m256i s0 = _mm256_hadd_epi32(_mm256_hadd_epi32(part[0], part[1]), _mm256_hadd_epi32(part[2], part[3]));
    const __m256i s1 = _mm256_hadd_epi32(_mm256_hadd_epi32(part[4], part[5]), _mm256_hadd_epi32(part[6], part[7]));
    const __m256i sums = _mm256_packs_epi32(s0, s1);  // even groups low, odd groups high; |sum| <= 2048
    const __m128i even = _mm256_castsi256_si128(sums), odd = _mm256_extracti128_si256(sums, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.bsums), _mm_unpacklo_epi16(even, odd));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out.bsums + 8), _mm_unpackhi_epi16(even, odd));
    out.d = 1.0f / iscale;
  }
}

}  // namespace edgellm::avx2
