// Single-thread decode GEMV throughput against the machine's single-thread read bandwidth.
//
// Streams a 14336 x 4096 Q4_0 matrix (33 MB) through kernels().gemm_q4_0 with ncols = 1, rotating
// over enough copies to cover >= 2 GB so no level of cache holds the weights, and alternates
// each pass with a plain AVX2 / NEON sum over a 2 GB buffer. Reports the best pass of each and
// their ratio (interleaving keeps both under the same background load).
//
// Not part of the CMake build. From the repository root, after building /tmp/build-gemm:
//   g++ -O2 -std=c++17 -mavx2 -Inative/src native/bench/gemv_bandwidth.cpp
//       /tmp/build-gemm/libedgellm_core.a -lpthread -o /tmp/gemv_bandwidth   (one line)
//   /tmp/gemv_bandwidth
// EDGELLM_KERNELS=reference|avx2|... picks the table as in the runtime.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "kernels/kernels.h"
#include "quant/quant.h"

using namespace edgellm;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kSweepBytes = size_t(2) << 30;

// GB/s of one pass of a 4-way unrolled vector sum over buf (the result is printed so the
// loads stay).
double read_pass(const uint8_t* buf, size_t n, uint64_t* sink) {
  const auto t0 = Clock::now();
#if defined(__AVX2__)
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(buf + i + 96)));
  }
  a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  *sink += (uint64_t)_mm256_extract_epi64(a0, 0);
#elif defined(__aarch64__)
  uint64x2_t a0 = vdupq_n_u64(0), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 64) {
    a0 = vaddq_u64(a0, vld1q_u64(reinterpret_cast<const uint64_t*>(buf + i)));
    a1 = vaddq_u64(a1, vld1q_u64(reinterpret_cast<const uint64_t*>(buf + i + 16)));
    a2 = vaddq_u64(a2, vld1q_u64(reinterpret_cast<const uint64_t*>(buf + i + 32)));
    a3 = vaddq_u64(a3, vld1q_u64(reinterpret_cast<const uint64_t*>(buf + i + 48)));
  }
  *sink += vgetq_lane_u64(vaddq_u64(vaddq_u64(a0, a1), vaddq_u64(a2, a3)), 0);
#else
  uint64_t s = 0;
  for (size_t i = 0; i < n; i += 8) s += *reinterpret_cast<const uint64_t*>(buf + i);
  *sink += s;
#endif
  return (double)n / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
}

}  // namespace

int main() {
  const KernelTable& t = kernels();
  const int64_t rows = 14336, k = 4096;
  const size_t row_bytes = dtype_row_bytes(DType::Q4_0, k);
  const size_t matrix_bytes = row_bytes * rows;
  const size_t copies = (kSweepBytes + matrix_bytes - 1) / matrix_bytes;

  // Random nibbles with a fixed normal scale (0.0078125): realistic work, no subnormals.
  std::vector<uint8_t> w(matrix_bytes * copies);
  uint32_t s = 1;
  for (size_t i = 0; i < w.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    w[i] = (uint8_t)(s >> 24);
  }
  for (size_t b = 0; b < w.size() / sizeof(block_q4_0); ++b) {
    w[b * sizeof(block_q4_0)] = 0x00;
    w[b * sizeof(block_q4_0) + 1] = 0x20;
  }
  std::vector<float> xf(k);
  for (int64_t i = 0; i < k; ++i) xf[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  std::vector<block_q8_0> xq(k / kQK);
  quantize_row_q8_0_ref(xf.data(), xq.data(), k);
  std::vector<float> y(rows);

  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(64, kSweepBytes));
  for (size_t i = 0; i < kSweepBytes; ++i) buf[i] = (uint8_t)(i * 7);

  std::printf("table %s, Q4_0 %lldx%lld (%.1f MB) x %zu copies\n", t.name, (long long)rows, (long long)k,
              matrix_bytes / 1e6, copies);
  double best_gemv = 0, best_read = 0;
  uint64_t sink = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t0 = Clock::now();
    for (size_t m = 0; m < copies; ++m) {
      const GemmArgs a{w.data() + m * matrix_bytes, row_bytes, k, xq.data(), sizeof(block_q8_0) * (k / kQK), 1,
                       y.data(), rows};
      t.gemm_q4_0(a, 0, rows);
    }
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    const double gemv = (double)(matrix_bytes * copies) / sec / 1e9;
    const double read = read_pass(buf, kSweepBytes, &sink);
    best_gemv = gemv > best_gemv ? gemv : best_gemv;
    best_read = read > best_read ? read : best_read;
    std::printf("pass %d: gemv %.2f GB/s (%.2f ms/matrix), read %.2f GB/s\n", pass, gemv, sec / copies * 1e3, read);
  }
  std::printf("best: gemv %.2f GB/s, read %.2f GB/s, ratio %.2f  (y[0]=%g, sink=%llu)\n", best_gemv, best_read,
              best_gemv / best_read, (double)y[0], (unsigned long long)(sink & 0xFF));
  std::free(buf);
  return 0;
}
