// The GEMMs of the 32-weight-block formats with a minimum or a non-linear code book (Q4_1, Q5_0,
// Q5_1, IQ4_NL) and the Q8_1 activation quantizer, in every fast table, on the shapes that reach
// the tiles' edges: row counts and sub-ranges that are not a multiple of the row tile (the GEMV
// takes 4 rows a quarter of the range apart), 1..8, 13 and 64 columns, padded X columns, strided
// Y, wide rows, and codes at the ends of their ranges (the int16 partial sums of the NEON tiles).
//
// The expected value is computed here from the block codes in double: per block
// d_w * d_x * sum(c_w * c_x) (+ m_w * s_x for Q4_1 / Q5_1), as ggml's vec_dot_<type>_q8_<x>
// defines it. Weights and activations are random bytes (every code and every fifth-bit pattern
// occurs), not quantized floats, so nothing here depends on a quantizer.
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kTypes[] = {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL};
constexpr int64_t kCols[] = {1, 2, 3, 4, 5, 6, 7, 8, 13, 64};

// Relative to sum over blocks of |d_w d_x| sum |c_w c_x| + |m_w s_x| (the magnitude of the
// terms, as test_gemm.cpp). The kernels sum one float per block per output (k / 32 terms).
constexpr double kRtol = 2e-6;

enum class Codes { Random, Max, Min };

// One 32-weight block decoded to its integer codes c (w = d * c + m).
struct WeightBlock {
  double d, m;
  int c[kQK];
};

WeightBlock decode_weights(DType t, const uint8_t* p) {
  WeightBlock b{};
  uint16_t d, m = 0;
  std::memcpy(&d, p, 2);
  const bool has_min = t == DType::Q4_1 || t == DType::Q5_1;
  if (has_min) std::memcpy(&m, p + 2, 2);
  b.d = half_to_float(d);
  b.m = has_min ? half_to_float(m) : 0.0;
  const bool five_bit = t == DType::Q5_0 || t == DType::Q5_1;
  uint32_t qh = 0;
  const uint8_t* qs = p + (has_min ? 4 : 2);
  if (five_bit) {
    std::memcpy(&qh, qs, 4);
    qs += 4;
  }
  for (int j = 0; j < kQK; ++j) {
    const int nibble = j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4;
    const int q = nibble | (int)((qh >> j) & 1) << 4;
    switch (t) {
      case DType::Q4_1: case DType::Q5_1: b.c[j] = q; break;
      case DType::Q5_0: b.c[j] = q - 16; break;
      default: b.c[j] = kValuesIq4nl[nibble]; break;  // IQ4_NL
    }
  }
  return b;
}

// Q8_0 or Q8_1 block: d, s (Q8_1 only) and the codes.
struct ActBlock {
  double d, s;
  const int8_t* qs;
};

ActBlock decode_activations(DType act, const uint8_t* p) {
  uint16_t d, s = 0;
  std::memcpy(&d, p, 2);
  if (act == DType::Q8_1) std::memcpy(&s, p + 2, 2);
  return {half_to_float(d), act == DType::Q8_1 ? half_to_float(s) : 0.0,
          reinterpret_cast<const int8_t*>(p + (act == DType::Q8_1 ? 4 : 2))};
}

uint16_t random_half(float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  const float v = u(test::rng());
  return float_to_half(test::rng()() & 1 ? v : -v);
}

struct Problem {
  DType type, act;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
};

// rows x k weights and ncols activation columns with padding between rows and columns (odd
// byte counts, so blocks sit at every alignment). Codes::Max / Min: every weight code is the
// largest / smallest of its format and every activation code +127 / -127, the ends of the
// NEON tiles' int16 partial sums.
Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols, Codes codes = Codes::Random) {
  const DType act = dtype_activation(type);
  Problem p{type, act, rows, k, ncols, dtype_row_bytes(type, k) + 7, dtype_row_bytes(act, k) + 21, {}, {}};
  const size_t wb = dtype_block_bytes(type), xb = dtype_block_bytes(act);
  const bool has_min = type == DType::Q4_1 || type == DType::Q5_1;
  p.w.resize(p.w_row_bytes * rows);
  for (uint8_t& byte : p.w) byte = (uint8_t)test::rng()();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < k / kQK; ++b) {
      uint8_t* blk = p.w.data() + r * p.w_row_bytes + b * wb;
      const uint16_t d = random_half(1e-3f, 2e-2f), m = random_half(0.0f, 0.1f);
      std::memcpy(blk, &d, 2);
      if (has_min) std::memcpy(blk + 2, &m, 2);
      if (codes == Codes::Random) continue;
      // Nibble 15 / 0 with the fifth bit set / clear; IQ4_NL's code book has -127 at 0, 113 at 15.
      const size_t header = has_min ? 4 : 2;
      std::memset(blk + header, codes == Codes::Max ? 0xFF : 0x00, wb - header);
    }
  p.x.resize(p.x_col_bytes * ncols);
  std::uniform_int_distribution<int> code(-127, 127);
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t b = 0; b < k / kQK; ++b) {
      uint8_t* blk = p.x.data() + c * p.x_col_bytes + b * xb;
      const uint16_t d = random_half(1e-3f, 2e-2f);
      int8_t* qs = reinterpret_cast<int8_t*>(blk + (act == DType::Q8_1 ? 4 : 2));
      int sum = 0;
      for (int j = 0; j < kQK; ++j) {
        qs[j] = (int8_t)(codes == Codes::Random ? code(test::rng()) : codes == Codes::Max ? 127 : -127);
        sum += qs[j];
      }
      std::memcpy(blk, &d, 2);
      if (act == DType::Q8_1) {
        const uint16_t s = float_to_half(half_to_float(d) * (float)sum);
        std::memcpy(blk + 2, &s, 2);
      }
    }
  // Padding stays random: a kernel that reads past k / 32 blocks changes the result.
  return p;
}

// y[c][r] and the magnitude of its terms.
void expected(const Problem& p, int64_t r, int64_t c, double* want, double* magnitude) {
  const uint8_t* wrow = p.w.data() + r * p.w_row_bytes;
  const uint8_t* xcol = p.x.data() + c * p.x_col_bytes;
  double sum = 0, mag = 0;
  for (int64_t b = 0; b < p.k / kQK; ++b) {
    const WeightBlock w = decode_weights(p.type, wrow + b * dtype_block_bytes(p.type));
    const ActBlock x = decode_activations(p.act, xcol + b * dtype_block_bytes(p.act));
    int64_t isum = 0, iabs = 0;
    for (int j = 0; j < kQK; ++j) {
      isum += (int64_t)w.c[j] * x.qs[j];
      iabs += std::abs(w.c[j] * x.qs[j]);
    }
    sum += w.d * x.d * (double)isum + w.m * x.s;
    mag += std::fabs(w.d * x.d) * (double)iabs + std::fabs(w.m * x.s);
  }
  *want = sum;
  *magnitude = mag;
}

std::string where(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c) {
  return std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
         " k=" + std::to_string(p.k) + " ncols=" + std::to_string(p.ncols) + " range=[" + std::to_string(r0) +
         "," + std::to_string(r1) + ") col " + std::to_string(c);
}

// The fast tables that have a GEMM for t. A null entry is test_dispatch's failure to report
// (fast_tables_have_their_own_kernels); this file says once which tables it did not run.
std::vector<const KernelTable*> tables_with(DType t) {
  std::vector<const KernelTable*> out;
  for (const KernelTable* k : runnable_kernel_tables()) {
    if (k == &kReferenceKernels) continue;
    if (k->gemm_for(t)) {
      out.push_back(k);
    } else {
      static std::set<std::string> said;
      const std::string what = std::string(k->name) + " has no " + dtype_name(t) + " GEMM";
      if (said.insert(what).second) std::printf("  (test_gemm_block32: %s yet; not run here)\n", what.c_str());
    }
  }
  return out;
}

// Rows [r0, r1) of columns [0, ncols) with y columns `stride` floats apart match the expected
// values, and no other y is written.
void check(const Problem& p, int64_t r0, int64_t r1, int64_t stride) {
  for (const KernelTable* t : tables_with(p.type)) {
    std::vector<float> y(stride * p.ncols + 5, NAN);
    const GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data(), p.x_col_bytes, p.ncols, y.data(), stride};
    t->gemm_for(p.type)(a, r0, r1);
    for (int64_t c = 0; c < p.ncols; ++c) {
      int outside = 0;
      for (int64_t r = 0; r < stride; ++r) {
        const float got = y[c * stride + r];
        if (r < r0 || r >= r1) {
          if (!std::isnan(got)) ++outside;
          continue;
        }
        double want, mag;
        expected(p, r, c, &want, &mag);
        const double diff = std::fabs(got - want);
        if (!(diff <= kRtol * mag + 1e-30)) {
          char buf[200];
          std::snprintf(buf, sizeof buf, ": row %lld got %.9g, want %.9g (|diff| %.3g > tol %.3g)", (long long)r,
                        (double)got, want, diff, kRtol * mag);
          CHECK_MSG(false, where(*t, p, r0, r1, c) + buf);
          return;
        }
      }
      CHECK_MSG(outside == 0, where(*t, p, r0, r1, c) + ": wrote " + std::to_string(outside) + " values outside [r0, r1)");
    }
    for (size_t i = stride * p.ncols; i < y.size(); ++i) CHECK_MSG(std::isnan(y[i]), where(*t, p, r0, r1, -1) + ": wrote past the last column");
  }
}

}  // namespace

TEST(gemm, block32_row_counts_not_a_multiple_of_the_tile) {
  for (DType type : kTypes)
    for (int64_t rows : {1, 2, 3, 5, 6, 7, 9, 33})
      for (int64_t ncols : kCols) check(make_problem(type, rows, 256, ncols), 0, rows, rows);
}

TEST(gemm, block32_row_sub_ranges_and_strided_y) {
  for (DType type : kTypes)
    for (int64_t ncols : kCols) {
      const Problem p = make_problem(type, 37, 96, ncols);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{5, 30}, {1, 2}, {29, 37}, {3, 10}, {0, 37}})
        check(p, r0, r1, p.rows + 3);
    }
}

TEST(gemm, block32_single_block_rows) {
  for (DType type : kTypes)
    for (int64_t ncols : kCols) check(make_problem(type, 4, 32, ncols), 0, 4, 4);
}

TEST(gemm, block32_wide_rows) {
  for (DType type : kTypes)
    for (int64_t ncols : {1, 3, 8, 64}) check(make_problem(type, 6, 14336, ncols), 0, 6, 6);
}

// All codes at the top or bottom of their range against x codes of +-127: the largest block
// sums a tile accumulates (int16 partial sums of the plain NEON tiles must not wrap).
TEST(gemm, block32_extreme_codes) {
  for (DType type : kTypes)
    for (Codes codes : {Codes::Max, Codes::Min})
      for (int64_t ncols : {1, 4, 5}) check(make_problem(type, 5, 128, ncols, codes), 0, 5, 5);
}

// ggml's quantize_row_q8_1_ref, byte for byte: d = amax / 127 (f16), codes round(x / d) with
// halves away from zero, s = f16(d * sum of codes) with the f32 d.
TEST(gemm, quantize_row_q8_1_is_bytewise_the_reference_format) {
  const int64_t n = 32 * 9;
  std::vector<float> x(n);
  test::fill_normal(x.data(), n, 1.0f);
  // Block 1: all zero (d = 0, s = 0). Block 2: amax 127 so d = 1 and x * id = x exactly: halves
  // must round away from zero (2.5 -> 3, -0.5 -> -1), not to even. Block 3: one large value.
  for (int j = 0; j < 32; ++j) x[32 + j] = 0.0f;
  for (int j = 0; j < 32; ++j) x[64 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f;
  for (int j = 0; j < 32; ++j) x[96 + j] = j == 7 ? -1e4f : 1e-3f * (float)j;
  std::vector<uint8_t> want(n / 32 * sizeof(block_q8_1));
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x.data() + 32 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    block_q8_1 blk;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      blk.qs[j] = (int8_t)std::round(xb[j] * id);
      sum += blk.qs[j];
    }
    blk.d = float_to_half(d);
    blk.s = float_to_half((float)sum * d);
    std::memcpy(want.data() + b * sizeof blk, &blk, sizeof blk);
  }
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (!t->quantize_row_q8_1) continue;  // test_dispatch reports null entries
    std::vector<uint8_t> got(want.size(), 0xEE);
    t->quantize_row_q8_1(x.data(), reinterpret_cast<block_q8_1*>(got.data()), n);
    for (size_t i = 0; i < got.size(); ++i)
      if (got[i] != want[i]) {
        CHECK_MSG(false, std::string(t->name) + " quantize_row_q8_1: byte " + std::to_string(i) + " (block " +
                             std::to_string(i / sizeof(block_q8_1)) + ") is " + std::to_string(got[i]) + ", want " +
                             std::to_string(want[i]));
        break;
      }
  }
}
