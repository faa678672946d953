// Reference dequantizers and the Q8_1 / Q8_K activation quantizers against values worked out by
// hand from ggml's block layouts (quant/blocks.h): each test builds blocks byte by byte and
// checks the weights the layout puts at chosen positions, neighbours included, so a wrong
// nibble order, bit position or sub-block index shows. Then every kernel table's Q8_1 / Q8_K
// quantizer against the reference bytes.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "test.h"

using namespace edgellm;

namespace {

// f16 bit patterns of the scales used below.
constexpr uint16_t kHalf0_25 = 0x3400, kHalf0_5 = 0x3800, kHalf1 = 0x3C00, kHalf2 = 0x4000, kHalfMinus1 = 0xBC00;

template <class Block>
Block zero_block() {
  Block b;
  std::memset(&b, 0, sizeof b);
  return b;
}

// y[i] == want exactly, with the position in the message.
void expect_at(const std::vector<float>& y, int i, float want, const char* type) {
  CHECK_MSG(y[i] == want, std::string(type) + " weight " + std::to_string(i) + ": got " + std::to_string(y[i]) +
                              ", want " + std::to_string(want));
}

}  // namespace

TEST(quant, dequantize_q4_1_is_d_times_nibble_plus_m) {
  block_q4_1 b = zero_block<block_q4_1>();
  b.d = kHalf0_5;
  b.m = kHalfMinus1;
  b.qs[0] = 0x3A;   // weight 0: 10, weight 16: 3
  b.qs[15] = 0xF0;  // weight 15: 0, weight 31: 15
  std::vector<float> y(32);
  dequantize_row_q4_1(&b, y.data(), 32);
  expect_at(y, 0, 4.0f, "Q4_1");    // 10 * 0.5 - 1
  expect_at(y, 16, 0.5f, "Q4_1");   // 3 * 0.5 - 1
  expect_at(y, 1, -1.0f, "Q4_1");   // code 0: the minimum
  expect_at(y, 15, -1.0f, "Q4_1");
  expect_at(y, 31, 6.5f, "Q4_1");   // 15 * 0.5 - 1
}

TEST(quant, dequantize_q5_0_takes_the_fifth_bit_of_weight_j_from_bit_j_of_qh) {
  block_q5_0 b = zero_block<block_q5_0>();
  b.d = kHalf0_25;
  b.qs[0] = 0x21;   // weight 0 low bits 1, weight 16 low bits 2
  b.qs[15] = 0xF0;  // weight 15 low bits 0, weight 31 low bits 15
  b.qh[0] = 0x01;   // bit 0: weight 0
  b.qh[1] = 0x80;   // bit 15: weight 15
  b.qh[2] = 0x01;   // bit 16: weight 16
  b.qh[3] = 0x80;   // bit 31: weight 31
  std::vector<float> y(32);
  dequantize_row_q5_0(&b, y.data(), 32);
  expect_at(y, 0, 0.25f, "Q5_0");   // (1 + 16 - 16) * 0.25
  expect_at(y, 16, 0.5f, "Q5_0");   // (2 + 16 - 16) * 0.25
  expect_at(y, 1, -4.0f, "Q5_0");   // (0 - 16) * 0.25
  expect_at(y, 15, 0.0f, "Q5_0");   // (0 + 16 - 16)
  expect_at(y, 31, 3.75f, "Q5_0");  // (15 + 16 - 16) * 0.25
  expect_at(y, 17, -4.0f, "Q5_0");
}

TEST(quant, dequantize_q5_1_is_d_times_five_bit_code_plus_m) {
  block_q5_1 b = zero_block<block_q5_1>();
  b.d = kHalf1;
  b.m = kHalf0_5;
  b.qs[2] = 0x7C;  // weight 2: 12, weight 18: 7
  b.qh[2] = 0x04;  // bit 18
  std::vector<float> y(32);
  dequantize_row_q5_1(&b, y.data(), 32);
  expect_at(y, 2, 12.5f, "Q5_1");   // 12 + 0.5
  expect_at(y, 18, 23.5f, "Q5_1");  // 7 + 16 + 0.5
  expect_at(y, 3, 0.5f, "Q5_1");
  expect_at(y, 19, 0.5f, "Q5_1");
}

TEST(quant, dequantize_iq4_nl_looks_codes_up_in_the_code_book) {
  block_iq4_nl b = zero_block<block_iq4_nl>();
  b.d = kHalf0_5;
  b.qs[0] = 0x0F;  // weight 0: index 15 (113), weight 16: index 0 (-127)
  b.qs[7] = 0x98;  // weight 7: index 8 (1), weight 23: index 9 (13)
  std::vector<float> y(32);
  dequantize_row_iq4_nl(&b, y.data(), 32);
  expect_at(y, 0, 56.5f, "IQ4_NL");
  expect_at(y, 16, -63.5f, "IQ4_NL");
  expect_at(y, 7, 0.5f, "IQ4_NL");
  expect_at(y, 23, 6.5f, "IQ4_NL");
  expect_at(y, 1, -63.5f, "IQ4_NL");  // nibble 0
}

TEST(quant, dequantize_q8_1_and_q8_k_are_d_times_code) {
  block_q8_1 a = zero_block<block_q8_1>();
  a.d = kHalf2;
  a.s = 0x7C00;  // s plays no part in the values
  a.qs[5] = -3;
  a.qs[31] = 127;
  std::vector<float> y(256);
  dequantize_row_q8_1(&a, y.data(), 32);
  expect_at(y, 5, -6.0f, "Q8_1");
  expect_at(y, 31, 254.0f, "Q8_1");
  expect_at(y, 4, 0.0f, "Q8_1");
  block_q8_K k = zero_block<block_q8_K>();
  k.d = 0.5f;
  k.qs[3] = -100;
  k.qs[255] = 7;
  k.bsums[0] = 999;  // bsums play no part in the values
  dequantize_row_q8_K(&k, y.data(), 256);
  expect_at(y, 3, -50.0f, "Q8_K");
  expect_at(y, 255, 3.5f, "Q8_K");
  expect_at(y, 0, 0.0f, "Q8_K");
}

// Q2_K: weight j is in sub-block j / 16 (scales[s] = sc | m << 4); in each 128-weight half,
// weight 32*s + l sits at bits 2s of qs[32*half + l].
TEST(quant, dequantize_q2_k_is_d_sc_q_minus_dmin_m_with_2_bit_planes) {
  block_q2_K b = zero_block<block_q2_K>();
  b.d = kHalf1;
  b.dmin = kHalf0_5;
  b.scales[0] = 0x21;  // sc 1, m 2
  b.scales[4] = 0x52;  // sc 2, m 5
  b.scales[5] = 0x3F;  // sc 15, m 3
  b.scales[6] = 0x13;  // sc 3, m 1
  b.scales[9] = 0x04;  // sc 4, m 0
  b.qs[0] = 0xE4;      // weights 0, 32, 64, 96: 0, 1, 2, 3
  b.qs[16] = 0x30;     // weight 80 (s 2, l 16): 3
  b.qs[48] = 0x02;     // weight 144 (half 1, s 0, l 16): 2
  std::vector<float> y(256);
  dequantize_row_q2_K(&b, y.data(), 256);
  expect_at(y, 0, -1.0f, "Q2_K");   // 1*0 - 0.5*2
  expect_at(y, 32, 0.0f, "Q2_K");   // sub-block 2: sc 0, m 0
  expect_at(y, 64, 1.5f, "Q2_K");   // 2*2 - 0.5*5
  expect_at(y, 96, 8.5f, "Q2_K");   // 3*3 - 0.5*1
  expect_at(y, 80, 43.5f, "Q2_K");  // 15*3 - 0.5*3
  expect_at(y, 81, -1.5f, "Q2_K");  // code 0 in sub-block 5
  expect_at(y, 144, 8.0f, "Q2_K");  // 4*2 - 0
  expect_at(y, 1, -1.0f, "Q2_K");
}

// Q3_K: scale s = (nibble s/8 of byte s%8 | bits 2*(s/4) of byte 8 + s%4 << 4) - 32; the third
// bit of weight 128*half + 32*s + l is bit 4*half + s of hmask[l], code - 4 when clear.
TEST(quant, dequantize_q3_k_unpacks_6_bit_scales_and_the_high_bit_mask) {
  block_q3_K b = zero_block<block_q3_K>();
  b.d = kHalf0_5;
  b.scales[0] = 0x01;   // scale 0 low 1
  b.scales[8] = 0x02;   // scale 0 high 2: 33 -> +1
  b.scales[5] = 0xA0;   // scale 13 low 10, high 0: 10 -> -22
  b.scales[6] = 0x0F;   // scale 6 low 15
  b.scales[10] = 0x0C;  // scale 6 high 3: 63 -> +31
  b.qs[0] = 0x03;       // weight 0: low bits 3
  b.hmask[0] = 0x01;    // weight 0: high bit set
  b.qs[48] = 0x20;      // weight 208 (half 1, s 2, l 16): low bits 2, hmask[16] bit 6 clear
  b.qs[4] = 0x40;       // weight 100 (half 0, s 3, l 4): low bits 1
  b.hmask[4] = 0x08;    // weight 100: high bit set
  std::vector<float> y(256);
  dequantize_row_q3_K(&b, y.data(), 256);
  expect_at(y, 0, 1.5f, "Q3_K");     // 0.5 * 1 * 3
  expect_at(y, 16, 64.0f, "Q3_K");   // scale 1 is 0 - 32, code 0 - 4: 0.5 * -32 * -4
  expect_at(y, 208, 22.0f, "Q3_K");  // 0.5 * -22 * (2 - 4)
  expect_at(y, 100, 15.5f, "Q3_K");  // 0.5 * 31 * 1
  expect_at(y, 101, -62.0f, "Q3_K"); // 0.5 * 31 * (0 - 4)
  expect_at(y, 1, -2.0f, "Q3_K");    // 0.5 * 1 * (0 - 4)
}

// Q4_K: get_scale_min_k4 for the scales; weight 64c + l is the low nibble of qs[32c + l] and
// weight 64c + 32 + l the high nibble.
TEST(quant, dequantize_q4_k_is_d_sc_q_minus_dmin_m_per_32) {
  block_q4_K b = zero_block<block_q4_K>();
  b.d = kHalf1;
  b.dmin = kHalf0_25;
  b.scales[0] = 0x05;  // sub-block 0: sc 5
  b.scales[4] = 0x03;  // sub-block 0: m 3
  b.scales[9] = 0x72;  // sub-block 5: sc low 2, m low 7
  b.scales[1] = 0xC0;  // sub-block 5: sc high 3 (sub-block 1 sc 0)
  b.scales[5] = 0x40;  // sub-block 5: m high 1 (sub-block 1 m 0)
  b.qs[0] = 0x09;      // weight 0: 9, weight 32: 0
  b.qs[67] = 0xE0;     // weight 163 (chunk 2, high nibble, l 3): 14
  std::vector<float> y(256);
  dequantize_row_q4_K(&b, y.data(), 256);
  expect_at(y, 0, 44.25f, "Q4_K");     // 5*9 - 0.25*3
  expect_at(y, 1, -0.75f, "Q4_K");     // 5*0 - 0.25*3
  expect_at(y, 32, 0.0f, "Q4_K");      // sub-block 1: sc 0, m 0
  expect_at(y, 163, 694.25f, "Q4_K");  // sc 50, m 23: 50*14 - 0.25*23
  expect_at(y, 164, -5.75f, "Q4_K");   // sub-block 5, code 0: -0.25*23
  expect_at(y, 131, 0.0f, "Q4_K");     // the low nibble of qs[67]: sub-block 4, sc 0, m 0
}

TEST(quant, dequantize_q5_k_adds_the_fifth_bit_from_qh) {
  block_q5_K b = zero_block<block_q5_K>();
  b.d = kHalf0_5;
  b.dmin = kHalf1;
  b.scales[0] = 0x02;   // sub-block 0: sc 2
  b.scales[4] = 0x01;   // sub-block 0: m 1
  b.scales[11] = 0x13;  // sub-block 7: sc low 3, m low 1
  b.scales[3] = 0x40;   // sub-block 7: sc high 1 -> 19 (sub-block 3 sc 0)
  b.qs[0] = 0x03;       // weight 0: low bits 3
  b.qh[0] = 0x01;       // weight 0: fifth bit (bit 0 of qh[0])
  b.qs[127] = 0x50;     // weight 255 (chunk 3, high nibble, l 31): low bits 5
  b.qh[31] = 0x80;      // weight 255: fifth bit (bit 7 of qh[31])
  std::vector<float> y(256);
  dequantize_row_q5_K(&b, y.data(), 256);
  expect_at(y, 0, 18.0f, "Q5_K");     // 0.5*2*19 - 1*1
  expect_at(y, 64, 0.0f, "Q5_K");     // sub-block 2: sc 0, m 0; qh bit 2 clear
  expect_at(y, 1, -1.0f, "Q5_K");     // 0.5*2*0 - 1
  expect_at(y, 255, 198.5f, "Q5_K");  // 0.5*19*21 - 1*1
  expect_at(y, 254, -1.0f, "Q5_K");
}

// Q6_K: weight 128*half + 32*g + l: low 4 bits in ql[64*half + l + 32*(g%2)] (high nibble for
// g >= 2), high 2 bits at bits 2g of qh[32*half + l]; w = d * scales[j/16] * (q - 32).
TEST(quant, dequantize_q6_k_is_d_sc_times_six_bit_code_minus_32) {
  block_q6_K b = zero_block<block_q6_K>();
  b.d = kHalf0_5;
  b.scales[0] = -3;
  b.scales[10] = 127;
  b.scales[11] = 1;
  b.scales[15] = 2;
  b.ql[0] = 0x05;    // weight 0: low 5
  b.qh[0] = 0x02;    // weight 0: high 2 -> 37
  b.ql[127] = 0xF0;  // weight 255 (half 1, g 3, l 31): low 15
  b.qh[63] = 0xC0;   // weight 255: high 3 -> 63
  std::vector<float> y(256);
  dequantize_row_q6_K(&b, y.data(), 256);
  expect_at(y, 0, -7.5f, "Q6_K");      // 0.5 * -3 * 5
  expect_at(y, 1, 48.0f, "Q6_K");      // 0.5 * -3 * -32
  expect_at(y, 255, 31.0f, "Q6_K");    // 0.5 * 2 * 31
  expect_at(y, 168, -2032.0f, "Q6_K"); // sub-block 10: 0.5 * 127 * -32
  expect_at(y, 191, -16.0f, "Q6_K");   // the low nibble of ql[127] (g 1): 0.5 * 1 * (0 - 32)
  expect_at(y, 247, -32.0f, "Q6_K");   // sub-block 15, code 0 - 32: 0.5 * 2 * -32
}

// IQ4_XS: sub-block scale s = (nibble s%2 of scales_l[s/2] | bits 2s of scales_h << 4) - 32;
// each 32 weights as an IQ4_NL block.
TEST(quant, dequantize_iq4_xs_is_d_times_scale_times_code_book_value) {
  block_iq4_xs b = zero_block<block_iq4_xs>();
  b.d = kHalf0_25;
  b.scales_l[0] = 0x01;  // sub-block 0 low 1
  b.scales_l[1] = 0xF0;  // sub-block 3 low 15
  b.scales_h = 0x00C2;   // sub-block 0 high 2 (33 -> +1), sub-block 3 high 3 (63 -> +31)
  b.qs[0] = 0x0F;        // weight 0: 113, weight 16: -127
  b.qs[49] = 0x90;       // weight 113 (sub-block 3, high nibble of byte 1): 13
  std::vector<float> y(256);
  dequantize_row_iq4_xs(&b, y.data(), 256);
  expect_at(y, 0, 28.25f, "IQ4_XS");    // 0.25 * 1 * 113
  expect_at(y, 16, -31.75f, "IQ4_XS");  // 0.25 * 1 * -127
  expect_at(y, 113, 100.75f, "IQ4_XS"); // 0.25 * 31 * 13
  expect_at(y, 97, -984.25f, "IQ4_XS"); // low nibble of qs[49]: 0.25 * 31 * -127
  expect_at(y, 224, 1016.0f, "IQ4_XS"); // sub-block 7 scale 0 - 32: 0.25 * -32 * -127
}

TEST(quant, dequantize_row_handles_every_weight_and_activation_type) {
  std::vector<uint8_t> row(dtype_row_bytes(DType::Q8_K, 512), 0);
  std::vector<float> y(512);
  for (DType t : kWeightTypes) dequantize_row(t, row.data(), y.data(), 512);
  dequantize_row(DType::Q8_1, row.data(), y.data(), 512);
  dequantize_row(DType::Q8_K, row.data(), y.data(), 512);
  for (float v : y) CHECK(v == 0.0f);
}

// ---- Q8_1 / Q8_K activation quantizers ----------------------------------------------------------

TEST(quant, q8_1_is_q8_0_plus_s_equal_to_d_times_the_code_sum) {
  std::vector<float> x(64, 0.0f);
  x[0] = 127.0f;   // block 0: d = 1
  x[1] = 2.5f;     // ties round away from zero: 3
  x[2] = -2.5f;    // -3
  x[3] = 0.5f;     // 1
  x[4] = -0.4f;    // 0
  x[31] = -126.5f; // -127
  x[32] = -254.0f; // block 1: d = 2
  x[33] = 5.0f;    // 2.5 -> 3
  x[34] = 3.0f;    // 1.5 -> 2
  x[48] = 101.0f;  // 50.5 -> 51
  block_q8_1 b[2];
  quantize_row_q8_1_ref(x.data(), b, 64);
  CHECK_EQ(b[0].d, kHalf1);
  CHECK_EQ((int)b[0].qs[0], 127);
  CHECK_EQ((int)b[0].qs[1], 3);
  CHECK_EQ((int)b[0].qs[2], -3);
  CHECK_EQ((int)b[0].qs[3], 1);
  CHECK_EQ((int)b[0].qs[4], 0);
  CHECK_EQ((int)b[0].qs[31], -127);
  CHECK_EQ(b[0].s, kHalf1);  // sum 1
  CHECK_EQ(b[1].d, kHalf2);
  CHECK_EQ((int)b[1].qs[0], -127);
  CHECK_EQ((int)b[1].qs[1], 3);
  CHECK_EQ((int)b[1].qs[2], 2);
  CHECK_EQ((int)b[1].qs[16], 51);
  CHECK_EQ(b[1].s, 0xD870);  // sum -71, s = -142 = -1.109375 * 2^7
  for (int j : {5, 15, 17, 30}) CHECK_EQ((int)b[0].qs[j] + (int)b[1].qs[j], 0);
}

TEST(quant, q8_1_all_zero_block_is_zero) {
  std::vector<float> x(32, 0.0f);
  block_q8_1 b;
  std::memset(&b, 0x55, sizeof b);
  quantize_row_q8_1_ref(x.data(), &b, 32);
  CHECK_EQ(b.d, 0);
  CHECK_EQ(b.s, 0);
  for (int j = 0; j < 32; ++j) CHECK_EQ((int)b.qs[j], 0);
}

// Q8_K: iscale = -127 / (signed value of largest magnitude), codes round half to even, d = 1 /
// iscale in f32, bsums = sums of 16 codes.
TEST(quant, q8_k_maps_the_signed_max_to_minus_127_rounds_half_even_and_sums_each_16) {
  std::vector<float> x(4 * 256, 0.0f);
  // Block 0: max -127 -> iscale 1, d 1.
  x[0] = -127.0f;
  x[1] = 2.5f;   // tie -> 2
  x[2] = -2.5f;  // tie -> -2
  x[3] = 3.5f;   // tie -> 4
  x[4] = 0.5f;   // tie -> 0
  x[5] = 1.5f;   // tie -> 2
  x[17] = 127.0f;
  x[18] = -0.49f;
  x[255] = 5.5f;  // tie -> 6
  // Block 1: max +4 -> iscale -31.75, d = 1 / -31.75.
  x[256 + 100] = 4.0f;
  x[256 + 0] = 2.0f;    // -63.5: tie -> -64
  x[256 + 1] = -1.0f;   // 31.75 -> 32
  x[256 + 16] = -3.0f;  // 95.25 -> 95
  // Block 2: all zero. Block 3: zeros and a NaN: no finite magnitude, the same zero block.
  x[3 * 256 + 9] = std::numeric_limits<float>::quiet_NaN();
  std::vector<block_q8_K> b(4);
  std::memset(b.data(), 0x55, b.size() * sizeof(block_q8_K));
  quantize_row_q8_K_ref(x.data(), b.data(), 4 * 256);

  CHECK(b[0].d == 1.0f);
  const int want0[] = {-127, 2, -2, 4, 0, 2};
  for (int j = 0; j < 6; ++j) CHECK_EQ((int)b[0].qs[j], want0[j]);
  CHECK_EQ((int)b[0].qs[17], 127);
  CHECK_EQ((int)b[0].qs[18], 0);
  CHECK_EQ((int)b[0].qs[255], 6);
  CHECK_EQ((int)b[0].bsums[0], -121);  // -127 + 2 - 2 + 4 + 0 + 2
  CHECK_EQ((int)b[0].bsums[1], 127);
  CHECK_EQ((int)b[0].bsums[15], 6);
  for (int g = 2; g < 15; ++g) CHECK_EQ((int)b[0].bsums[g], 0);

  CHECK(b[1].d == 1.0f / (-127.0f / 4.0f));
  CHECK(b[1].d < 0.0f);
  CHECK_EQ((int)b[1].qs[100], -127);
  CHECK_EQ((int)b[1].qs[0], -64);
  CHECK_EQ((int)b[1].qs[1], 32);
  CHECK_EQ((int)b[1].qs[16], 95);
  CHECK_EQ((int)b[1].bsums[0], -32);   // -64 + 32
  CHECK_EQ((int)b[1].bsums[1], 95);
  CHECK_EQ((int)b[1].bsums[6], -127);  // weight 100 is in group 6

  for (int i = 2; i < 4; ++i) {
    CHECK(b[i].d == 0.0f);
    int nonzero = 0;
    for (int j = 0; j < 256; ++j) nonzero += b[i].qs[j] != 0;
    for (int g = 0; g < 16; ++g) nonzero += b[i].bsums[g] != 0;
    CHECK_EQ(nonzero, 0);
  }
}

namespace {

// Activation rows for the byte comparison: ties at exact scales, zeros, huge and tiny
// magnitudes, an overflowing f16 d (Q8_1), and random data; a multiple of 256 long.
std::vector<float> activation_cases() {
  std::vector<float> x;
  auto block = [&](int n, auto gen) {
    for (int j = 0; j < n; ++j) x.push_back(gen(j));
  };
  std::uniform_int_distribution<int> small(-127, 126);
  for (int rep = 0; rep < 4; ++rep) block(256, [&](int j) { return j == 3 ? -127.0f : (float)small(test::rng()) + 0.5f; });
  for (int rep = 0; rep < 4; ++rep) block(256, [&](int j) { return j == 0 ? 127.0f : (float)small(test::rng()) + 0.5f; });
  block(256, [](int) { return 0.0f; });
  block(256, [](int j) { return j == 200 ? -1.0f : 0.0f; });
  block(256, [](int j) { return (j % 2 ? 1.0f : -1.0f) * 1e30f * (float)(j + 1); });
  block(256, [](int j) { return (j % 2 ? 1.0f : -1.0f) * 1e-30f * (float)(j + 1); });
  block(256, [](int j) { return 65504.0f * 200.0f * (float)(j - 128); });
  block(256, [](int j) { return 1e-6f * (float)(j - 128); });
  std::vector<float> r(256 * 24);
  test::fill_normal(r.data(), (int64_t)r.size(), 3.0f);
  x.insert(x.end(), r.begin(), r.end());
  test::fill_uniform(r.data(), (int64_t)r.size(), -1e4f, 1e4f);
  x.insert(x.end(), r.begin(), r.end());
  return x;
}

template <class Block>
std::string first_block_difference(const std::vector<Block>& got, const std::vector<Block>& want) {
  for (size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(Block)) != 0) {
      const uint8_t* g = reinterpret_cast<const uint8_t*>(&got[i]);
      const uint8_t* w = reinterpret_cast<const uint8_t*>(&want[i]);
      size_t at = 0;
      while (g[at] == w[at]) ++at;
      return "block " + std::to_string(i) + " byte " + std::to_string(at) + ": " + std::to_string(g[at]) +
             " != " + std::to_string(w[at]);
    }
  return "";
}

}  // namespace

TEST(quant, every_table_quantizes_q8_1_activations_to_the_reference_bytes) {
  const std::vector<float> x = activation_cases();
  const int64_t n = (int64_t)x.size();
  std::vector<block_q8_1> want(n / kQK);
  quantize_row_q8_1_ref(x.data(), want.data(), n);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (!t->quantize_row_q8_1) {
      CHECK_MSG(false, std::string(t->name) + ".quantize_row_q8_1 is null");
      continue;
    }
    std::vector<block_q8_1> got(n / kQK);
    t->quantize_row_q8_1(x.data(), got.data(), n);
    const std::string diff = first_block_difference(got, want);
    CHECK_MSG(diff.empty(), std::string(t->name) + " Q8_1: " + diff);
    // A single block at an odd offset.
    std::vector<block_q8_1> one(1), one_ref(1);
    t->quantize_row_q8_1(x.data() + 7 * kQK, one.data(), kQK);
    quantize_row_q8_1_ref(x.data() + 7 * kQK, one_ref.data(), kQK);
    CHECK_MSG(first_block_difference(one, one_ref).empty(), std::string(t->name) + " Q8_1 single block");
  }
}

TEST(quant, every_table_quantizes_q8_k_activations_to_the_reference_bytes) {
  const std::vector<float> x = activation_cases();
  const int64_t n = (int64_t)x.size();
  std::vector<block_q8_K> want(n / kQKK);
  quantize_row_q8_K_ref(x.data(), want.data(), n);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (!t->quantize_row_q8_k) {
      CHECK_MSG(false, std::string(t->name) + ".quantize_row_q8_k is null");
      continue;
    }
    std::vector<block_q8_K> got(n / kQKK);
    std::memset(got.data(), 0x55, got.size() * sizeof(block_q8_K));
    t->quantize_row_q8_k(x.data(), got.data(), n);
    const std::string diff = first_block_difference(got, want);
    CHECK_MSG(diff.empty(), std::string(t->name) + " Q8_K: " + diff);
  }
}
