// Quantizers and f16/bf16 conversions: the reference pins ggml's byte-level rules, and every
// kernel table's quantize_row_q8_0 / f32_to_f16 / f16_to_f32 produce the reference's bytes.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "test.h"

using namespace edgellm;

namespace {

std::vector<float> zeros(int64_t n) { return std::vector<float>(n, 0.0f); }

bool same_bytes(const void* a, const void* b, size_t n) { return std::memcmp(a, b, n) == 0; }

// The first index where two Q8_0 rows differ, as text for a failure message.
std::string first_q8_difference(const block_q8_0* a, const block_q8_0* b, int64_t nb, const float* x) {
  for (int64_t i = 0; i < nb; ++i) {
    if (a[i].d != b[i].d)
      return "block " + std::to_string(i) + ": d " + std::to_string(a[i].d) + " != " + std::to_string(b[i].d);
    for (int j = 0; j < kQK; ++j)
      if (a[i].qs[j] != b[i].qs[j]) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "block %lld q[%d]: %d != %d (x=%.9g)", (long long)i, j, a[i].qs[j],
                      b[i].qs[j], (double)x[i * kQK + j]);
        return buf;
      }
  }
  return "";
}

}  // namespace

// ---- Q4_0 reference: ggml's rule -----------------------------------------------------------

TEST(quant, q4_0_scale_is_signed_max_over_minus_eight_and_nibbles_truncate_x_over_d_plus_8_5) {
  std::vector<float> x = zeros(32);
  x[0] = 1.0f;    // d = -4 / -8 = 0.5, id = 2: 2 + 8.5 = 10.5 -> 10
  x[1] = -4.0f;   // the largest magnitude: -8 + 8.5 -> 0
  x[2] = 3.75f;   // 7.5 + 8.5 = 16 -> clamped to 15
  x[3] = 0.25f;   // 0.5 + 8.5 = 9 -> 9
  x[4] = -0.25f;  // -0.5 + 8.5 = 8 -> 8
  x[5] = 0.2f;    // 0.4 + 8.5 = 8.9 -> 8 (truncation, not rounding)
  x[6] = -1.3f;   // -2.6 + 8.5 = 5.9 -> 5
  x[16] = 2.0f;   // 12, high nibble of byte 0
  x[17] = -3.0f;  // -6 + 8.5 = 2.5 -> 2, high nibble of byte 1
  block_q4_0 b;
  quantize_row_q4_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0x3800);  // 0.5
  const uint8_t want[16] = {0xCA, 0x20, 0x8F, 0x89, 0x88, 0x88, 0x85, 0x88,
                            0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
  for (int j = 0; j < 16; ++j) CHECK_EQ((int)b.qs[j], (int)want[j]);
}

TEST(quant, q4_0_positive_max_gives_negative_scale_and_the_first_max_magnitude_wins) {
  std::vector<float> x = zeros(32);
  x[0] = 1.0f;    // d = 8 / -8 = -1, id = -1: -1 + 8.5 -> 7
  x[3] = 8.0f;    // first of the two largest magnitudes -> nibble 0
  x[10] = -8.0f;  // 8 + 8.5 = 16.5 -> clamped to 15
  block_q4_0 b;
  quantize_row_q4_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0xBC00);  // -1
  CHECK_EQ(b.qs[0] & 0x0F, 7);
  CHECK_EQ(b.qs[3] & 0x0F, 0);
  CHECK_EQ(b.qs[10] & 0x0F, 15);
  CHECK_EQ(b.qs[1], 0x88);

  // The same magnitudes in the other order: now -8 comes first and the scale is +1.
  x[3] = -8.0f;
  x[10] = 8.0f;
  quantize_row_q4_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0x3C00);
  CHECK_EQ(b.qs[0] & 0x0F, 9);
  CHECK_EQ(b.qs[3] & 0x0F, 0);
  CHECK_EQ(b.qs[10] & 0x0F, 15);
}

TEST(quant, q4_0_all_zero_block_has_negative_zero_scale_and_nibbles_eight) {
  std::vector<float> x = zeros(64);
  block_q4_0 b[2];
  quantize_row_q4_0_ref(x.data(), b, 64);
  for (const block_q4_0& blk : b) {
    // 0 / -8 is -0.0: ggml writes the f16 bits 0x8000, which is a zero scale.
    CHECK_EQ(blk.d, 0x8000);
    CHECK_EQ(half_to_float(blk.d), 0.0f);
    for (int j = 0; j < 16; ++j) CHECK_EQ(blk.qs[j], 0x88);
  }
}

// ---- Q8_0 reference --------------------------------------------------------------------------

TEST(quant, q8_0_scale_is_max_abs_over_127_and_ties_round_away_from_zero) {
  std::vector<float> x = zeros(32);
  x[0] = 127.0f;  // d = 1, id = 1
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  x[4] = -0.5f;
  x[5] = 1.4999999f;
  x[6] = -126.5f;
  x[7] = 3.5f;
  block_q8_0 b;
  quantize_row_q8_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0x3C00);
  const int want[8] = {127, 3, -3, 1, -1, 1, -127, 4};
  for (int j = 0; j < 8; ++j) CHECK_EQ((int)b.qs[j], want[j]);
  for (int j = 8; j < 32; ++j) CHECK_EQ((int)b.qs[j], 0);

  x = zeros(32);
  x[9] = -254.0f;  // d = 2, id = 0.5
  x[0] = 5.0f;     // 2.5 -> 3
  x[1] = -1.0f;    // -0.5 -> -1
  x[2] = 3.0f;     // 1.5 -> 2
  quantize_row_q8_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0x4000);
  CHECK_EQ((int)b.qs[0], 3);
  CHECK_EQ((int)b.qs[1], -1);
  CHECK_EQ((int)b.qs[2], 2);
  CHECK_EQ((int)b.qs[9], -127);
}

TEST(quant, q8_0_all_zero_block_has_zero_scale_and_zero_values) {
  std::vector<float> x = zeros(32);
  block_q8_0 b;
  std::memset(&b, 0x55, sizeof b);
  quantize_row_q8_0_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0);
  for (int j = 0; j < 32; ++j) CHECK_EQ((int)b.qs[j], 0);
}

TEST(quant, dequantize_round_trips_within_half_a_step) {
  const int64_t n = 32 * 64;
  std::vector<float> x(n), y(n);
  test::fill_normal(x.data(), n, 1.0f);
  std::vector<block_q8_0> q8(n / 32);
  quantize_row_q8_0_ref(x.data(), q8.data(), n);
  dequantize_row_q8_0(q8.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float d = half_to_float(q8[i / 32].d);
    // half a step, plus the f16 rounding of d times |q| <= 127
    CHECK(std::fabs(x[i] - y[i]) <= 0.5f * d + 127.0f * d * 0x1p-11f);
  }
  std::vector<block_q4_0> q4(n / 32);
  quantize_row_q4_0_ref(x.data(), q4.data(), n);
  dequantize_row_q4_0(q4.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const float d = std::fabs(half_to_float(q4[i / 32].d));
    // values on the clamped side (x/d >= 7.5) may be off by up to one step
    CHECK(std::fabs(x[i] - y[i]) <= 1.0f * d + 8.0f * d * 0x1p-11f);
  }
  // Re-quantizing the dequantized Q4_0 values gives the same blocks.
  std::vector<block_q4_0> q4b(n / 32);
  quantize_row_q4_0_ref(y.data(), q4b.data(), n);
  CHECK(same_bytes(q4.data(), q4b.data(), q4.size() * sizeof(block_q4_0)));
}

// ---- f16 / bf16 scalar conversions ----------------------------------------------------------

TEST(quant, half_to_float_to_half_is_the_identity_on_all_65536_halves) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float((uint16_t)h);
    const uint16_t back = float_to_half(f);
    const bool is_nan = (h & 0x7FFF) > 0x7C00;
    if (is_nan) {
      if (!std::isnan(f) || back != ((h & 0x8000) | 0x7E00)) ++bad;
    } else if (back != h) {
      ++bad;
    }
  }
  CHECK_EQ(bad, 0);
  // Spot values: the largest finite half, the smallest subnormal, infinity, signed zero.
  CHECK_EQ(half_to_float(0x7BFF), 65504.0f);
  CHECK_EQ(half_to_float(0x0001), 0x1p-24f);
  CHECK_EQ(half_to_float(0x7C00), std::numeric_limits<float>::infinity());
  CHECK(std::signbit(half_to_float(0x8000)));
}

TEST(quant, float_to_half_rounds_to_nearest_even) {
  CHECK_EQ(float_to_half(1.0f + 0x1p-11f), 0x3C00);              // tie -> even (down)
  CHECK_EQ(float_to_half(1.0f + 3 * 0x1p-11f), 0x3C02);          // tie -> even (up)
  CHECK_EQ(float_to_half(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);   // above the tie
  CHECK_EQ(float_to_half(65504.0f), 0x7BFF);
  CHECK_EQ(float_to_half(65519.0f), 0x7BFF);
  CHECK_EQ(float_to_half(65520.0f), 0x7C00);                     // tie at max -> infinity
  CHECK_EQ(float_to_half(0x1p-24f), 0x0001);
  CHECK_EQ(float_to_half(0x1p-25f), 0x0000);                     // subnormal tie -> even (zero)
  CHECK_EQ(float_to_half(0x1p-25f + 0x1p-40f), 0x0001);
  CHECK_EQ(float_to_half(3 * 0x1p-25f), 0x0002);                 // subnormal tie -> even (up)
  CHECK_EQ(float_to_half(-0.0f), 0x8000);
  CHECK_EQ(float_to_half(1e-30f), 0x0000);
  CHECK_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7C00);
  CHECK_EQ(float_to_half(-std::numeric_limits<float>::infinity()), 0xFC00);
  CHECK_EQ(float_to_half(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
}

TEST(quant, bf16_conversions_round_to_nearest_even_and_round_trip) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_float((uint16_t)h);
    const uint16_t back = float_to_bf16(f);
    const bool is_nan = (h & 0x7FFF) > 0x7F80;
    if (is_nan ? !(std::isnan(f) && (back & 0x7FFF) > 0x7F80 && (back & 0x8000) == (h & 0x8000)) : back != h) ++bad;
  }
  CHECK_EQ(bad, 0);
  CHECK_EQ(float_to_bf16(1.0f + 0x1p-8f), 0x3F80);      // tie -> even (down)
  CHECK_EQ(float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);  // tie -> even (up)
  CHECK_EQ(float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
}

// ---- every table agrees with the reference bit for bit ---------------------------------------

namespace {

// Blocks that exercise the quantizer's corners: exact .5 ties (d a power of two), zeros,
// huge and tiny magnitudes, mixed scales, and plain random data.
std::vector<float> q8_activation_cases() {
  std::vector<float> x;
  auto block = [&](auto gen) {
    for (int j = 0; j < kQK; ++j) x.push_back(gen(j));
  };
  std::uniform_int_distribution<int> small(-127, 126);
  // amax 127 -> d = 1: x = m + 0.5 are exact ties.
  for (int rep = 0; rep < 8; ++rep)
    block([&](int j) { return j == 0 ? 127.0f : (float)small(test::rng()) + 0.5f; });
  // amax 31.75 -> d = 0.25 exactly: ties at (m + 0.5) / 4.
  for (int rep = 0; rep < 8; ++rep)
    block([&](int j) { return j == 5 ? -31.75f : ((float)small(test::rng()) + 0.5f) * 0.25f; });
  block([](int) { return 0.0f; });
  block([](int j) { return j == 7 ? 1.0f : 0.0f; });
  block([](int j) { return j % 3 == 0 ? -0.0f : 1e-3f * (float)j; });
  block([](int j) { return (j % 2 ? 1.0f : -1.0f) * 1e30f * (float)(j + 1); });
  block([](int j) { return (j % 2 ? 1.0f : -1.0f) * 1e-30f * (float)(j + 1); });
  block([](int j) { return j == 0 ? 1e20f : 1e-20f * (float)j; });
  block([](int j) { return 65504.0f * 200.0f * (float)(j - 16); });  // d overflows f16
  block([](int j) { return 1e-6f * (float)(j - 16); });              // d is a subnormal half
  std::vector<float> r(kQK * 64);
  test::fill_normal(r.data(), (int64_t)r.size(), 3.0f);
  x.insert(x.end(), r.begin(), r.end());
  test::fill_uniform(r.data(), (int64_t)r.size(), -1e4f, 1e4f);
  x.insert(x.end(), r.begin(), r.end());
  return x;
}

// f32 values for the f16 conversion: every half's exact value, the midpoints between adjacent
// halves (ties), random bit patterns (all classes incl. NaN payloads), and a few specials.
std::vector<float> f16_conversion_cases() {
  std::vector<float> x;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float((uint16_t)h);
    x.push_back(f);
    if ((h & 0x7FFF) < 0x7C00) {
      const float next = half_to_float((uint16_t)(h + 1));
      if (!std::isnan(next) && !std::isinf(next)) x.push_back(f + (next - f) * 0.5f);
    }
  }
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 100000; ++i) x.push_back(bits_to_f32(bits(test::rng())));
  for (uint32_t u : {0x7F800001u, 0xFF800001u, 0x7FC00000u, 0x7FFFFFFFu, 0x7F800000u, 0x00000001u,
                     0x80000001u, 0x477FF000u, 0x477FEFFFu, 0x33000000u, 0x33000001u})
    x.push_back(bits_to_f32(u));
  x.push_back(1.0f);  // length not a multiple of 8 exercises the tails
  return x;
}

}  // namespace

TEST(quant, every_table_quantizes_q8_0_activations_to_the_reference_bytes) {
  const std::vector<float> x = q8_activation_cases();
  const int64_t n = (int64_t)x.size();
  std::vector<block_q8_0> want(n / kQK);
  quantize_row_q8_0_ref(x.data(), want.data(), n);
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<block_q8_0> got(n / kQK);
    t->quantize_row_q8_0(x.data(), got.data(), n);
    const std::string diff = first_q8_difference(got.data(), want.data(), n / kQK, x.data());
    CHECK_MSG(diff.empty(), std::string(t->name) + ": " + diff);
    // Also on a single block, at an odd offset into the row.
    block_q8_0 one, one_ref;
    t->quantize_row_q8_0(x.data() + 3 * kQK, &one, kQK);
    quantize_row_q8_0_ref(x.data() + 3 * kQK, &one_ref, kQK);
    CHECK_MSG(same_bytes(&one, &one_ref, sizeof one), t->name);
  }
}

TEST(quant, every_table_converts_f32_to_f16_like_the_scalar_conversion) {
  const std::vector<float> x = f16_conversion_cases();
  const int64_t n = (int64_t)x.size();
  std::vector<uint16_t> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = float_to_half(x[i]);
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<uint16_t> got(n, 0xDEAD);
    t->f32_to_f16(x.data(), got.data(), n);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; ++i)
      if (got[i] != want[i]) bad = i;
    if (bad >= 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s: x=0x%08x -> 0x%04x, want 0x%04x", t->name, f32_to_bits(x[bad]),
                    got[bad], want[bad]);
      CHECK_MSG(false, buf);
    }
  }
}

TEST(quant, every_table_converts_all_65536_halves_to_f32_like_the_scalar_conversion) {
  std::vector<uint16_t> h(65536 + 3);
  for (size_t i = 0; i < h.size(); ++i) h[i] = (uint16_t)i;
  const int64_t n = (int64_t)h.size();
  for (const KernelTable* t : runnable_kernel_tables()) {
    std::vector<float> got(n);
    t->f16_to_f32(h.data(), got.data(), n);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; ++i)
      if (f32_to_bits(got[i]) != f32_to_bits(half_to_float(h[i]))) bad = i;
    if (bad >= 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s: h=0x%04x -> 0x%08x, want 0x%08x", t->name, h[bad],
                    f32_to_bits(got[bad]), f32_to_bits(half_to_float(h[bad])));
      CHECK_MSG(false, buf);
    }
  }
}
