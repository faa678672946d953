// The weight quantizers give ggml's bytes on every machine, including the ARM builds under qemu
// where ggml cannot be run: fixed rows (exact in float, so the same input everywhere) quantized
// by each type must hash to the FNV-1a of ggml_quantize_chunk's output for the same rows.
// The hashes were taken from node-llama-cpp's libggml-base (llama.cpp v0.4.0, no importance
// matrix) with `edgellm_ggml_oracle quantize-rows TYPE 8 4352 rows.f32 out.bin` on the rows
// golden_rows() writes; test/quant-ggml-identity.test.ts compares the bytes themselves on x86.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "quant/quant.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr int64_t kRowLen = 4096 + 256;
constexpr int kKinds = 8;

// Every value is an integer of at most 22 bits times a power of two, so exact in float: the
// input does not depend on libm or the compiler.
std::vector<float> golden_rows() {
  std::vector<float> x((size_t)(kKinds * kRowLen));
  uint64_t s = 0x9E3779B97F4A7C15ull;
  auto next = [&]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(s >> 33);
  };
  auto uniform = [&]() { return (float)((int32_t)(next() & 0xFFFFF) - (1 << 19)); };  // [-2^19, 2^19)
  for (int k = 0; k < kKinds; ++k) {
    for (int64_t i = 0; i < kRowLen; ++i) {
      const float bell = (uniform() + uniform() + uniform() + uniform()) * 0x1p-21f;  // bell-shaped, sd ~0.58
      float v = 0;
      switch (k) {
        case 0: v = bell; break;                                        // normal-like
        case 1: v = bell * 0x1p-10f; break;                             // small scale
        case 2: v = (next() % 50 == 0) ? bell * 32 : bell; break;       // 2% outliers
        case 3: v = 0; break;                                           // all zero
        case 4: v = 0.37f; break;                                       // constant
        case 5: v = bell < 0 ? -bell : bell; break;                     // one-signed
        case 6: v = (float)((int)(next() % 9) - 4); break;              // integers: ties
        case 7: v = (i % 16 == 5) ? bell : 0; break;                    // sparse
      }
      x[(size_t)(k * kRowLen + i)] = v;
    }
  }
  return x;
}

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

struct GgmlHash {
  DType type;
  uint64_t fnv;
};

// FNV-1a 64 of ggml_quantize_chunk(type, golden_rows(), 8 rows of 4352).
constexpr GgmlHash kGgml[] = {
    {DType::Q4_0, 0x0b44dcc815f2ff31ull}, {DType::Q4_1, 0x004ee3e4db404e96ull},
    {DType::Q5_0, 0x9442f0107a8826d4ull}, {DType::Q5_1, 0x8ac9233fba1eca18ull},
    {DType::Q8_0, 0x09a28cc5eb5521a5ull}, {DType::Q2_K, 0x029915ce558bbc9full},
    {DType::Q3_K, 0x673bf8e105d3c212ull}, {DType::Q4_K, 0x14222132b2fc9f10ull},
    {DType::Q5_K, 0x0773d76529dcc7efull}, {DType::Q6_K, 0x3d6aedb573049ebfull},
    {DType::IQ4_NL, 0xf38382128c26cf7aull}, {DType::IQ4_XS, 0xc0c027e039e9e820ull},
};

}  // namespace

TEST(quant, every_weight_quantizer_writes_ggml_bytes_for_the_golden_rows) {
  const std::vector<float> x = golden_rows();
  for (const GgmlHash& g : kGgml) {
    const size_t row_bytes = dtype_row_bytes(g.type, kRowLen);
    std::vector<uint8_t> q(row_bytes * kKinds);
    for (int k = 0; k < kKinds; ++k) quantize_row(g.type, x.data() + k * kRowLen, q.data() + k * row_bytes, kRowLen);
    const uint64_t h = fnv1a(q.data(), q.size());
    char msg[160];
    std::snprintf(msg, sizeof msg, "%s: FNV-1a %016llx, ggml's is %016llx", dtype_name(g.type), (unsigned long long)h,
                  (unsigned long long)g.fnv);
    CHECK_MSG(h == g.fnv, msg);
  }
}
