// Edges of the 32-weight-block GEMM tiles (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) beyond
// test_gemm.cpp's shapes, every fast table against the reference: row counts and sub-ranges
// that leave every remainder of the 4-row tiles (the GEMV takes 4 rows a quarter of the range
// apart, then single rows), 1..8, 13 and 64 columns with y columns strided, and codes at the
// ends of their ranges against activation codes of +-127 (the int16 partial sums of the plain
// NEON tiles must not wrap). (test_dequantize.cpp holds every table's quantize_row_q8_1 to the
// reference bytes.)
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::IQ4_NL};
constexpr int64_t kCols[] = {1, 2, 3, 4, 5, 6, 7, 8, 13, 64};

// Relative to the magnitude of the terms, as test_gemm.cpp (kRtol there).
constexpr double kRtol = 2e-6;

// Codes::High / Low: every weight code at the top / bottom of its format's range and every
// activation code +127 / -127.
enum class Codes { Random, High, Low };

struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
  std::vector<float> wf, woff, xf;  // as f32: weights, their minimum parts, activations
};

// What every code byte of a weight block becomes: all bits set gives the largest code of the
// nibble and 5-bit formats (Q4 15, Q5 31, IQ4_NL's 113), all clear the smallest (0, IQ4_NL's
// -127); Q8_0's ends are 127 and -128.
uint8_t code_byte(DType t, Codes c) {
  if (t == DType::Q8_0) return c == Codes::High ? 0x7F : 0x80;
  return c == Codes::High ? 0xFF : 0x00;
}

Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols, Codes codes = Codes::Random) {
  const DType act = dtype_activation(type);
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 7, test::activation_row_bytes(act, k) + 21,
            {}, {}, {}, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  p.wf.resize(rows * k);
  p.woff.resize(rows * k);
  const test::ScaleFields f = test::scale_fields(type);
  const size_t header = f.offset[f.count - 1] + 2, block = dtype_block_bytes(type);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * p.w_row_bytes;
    test::random_row(type, row, k);
    if (codes != Codes::Random)
      for (int64_t b = 0; b < k / kQK; ++b) std::memset(row + b * block + header, code_byte(type, codes), block - header);
    dequantize_row(type, row, p.wf.data() + r * k, k);
    test::offset_part(type, row, k, p.woff.data() + r * k);
  }
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  p.xf.resize(ncols * k);
  std::vector<float> col(k);
  for (int64_t c = 0; c < ncols; ++c) {
    test::fill_normal(col.data(), k, 1.0f);
    // Equal values in a block quantize to +-127 each.
    if (codes != Codes::Random)
      for (float& v : col) v = codes == Codes::High ? 1.0f : -1.0f;
    uint8_t* dst = p.x.data() + c * p.x_col_bytes;
    test::quantize_activation(act, col.data(), dst, k);
    dequantize_row(act, dst, p.xf.data() + c * k, k);
  }
  return p;
}

double term_magnitude(const Problem& p, int64_t r, int64_t c) {
  double s = 0;
  for (int64_t i = 0; i < p.k; ++i) {
    const double w = p.wf[r * p.k + i], off = p.woff[r * p.k + i];
    s += (std::fabs(w - off) + std::fabs(off)) * std::fabs((double)p.xf[c * p.k + i]);
  }
  return s;
}

std::vector<float> run(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t stride) {
  std::vector<float> y(stride * p.ncols, NAN);
  const GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data(), p.x_col_bytes, p.ncols, y.data(), stride};
  t.gemm_for(p.type)(a, r0, r1);
  return y;
}

std::string where(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c) {
  return std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
         " k=" + std::to_string(p.k) + " ncols=" + std::to_string(p.ncols) + " range=[" + std::to_string(r0) +
         "," + std::to_string(r1) + ") col " + std::to_string(c);
}

// Rows [r0, r1) of every column match the reference within kRtol of the term magnitude, and no
// other y (y columns `stride` floats apart) is written. test_gemm.cpp fails for null entries.
void check(const Problem& p, int64_t r0, int64_t r1, int64_t stride) {
  const std::vector<float> want = run(kReferenceKernels, p, r0, r1, stride);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (t == &kReferenceKernels || !t->gemm_for(p.type)) continue;
    const std::vector<float> got = run(*t, p, r0, r1, stride);
    for (int64_t c = 0; c < p.ncols; ++c) {
      int outside = 0;
      for (int64_t r = 0; r < stride; ++r) {
        const float g = got[c * stride + r], w = want[c * stride + r];
        if (r < r0 || r >= r1) {
          if (!std::isnan(g)) ++outside;
          continue;
        }
        const double tol = kRtol * term_magnitude(p, r, c) + 1e-30;
        if (!(std::fabs((double)g - w) <= tol)) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ": row %lld got %.9g, want %.9g (|diff| %.3g > tol %.3g)", (long long)r,
                        (double)g, (double)w, std::fabs((double)g - w), tol);
          CHECK_MSG(false, where(*t, p, r0, r1, c) + buf);
          return;
        }
      }
      CHECK_MSG(outside == 0, where(*t, p, r0, r1, c) + ": wrote " + std::to_string(outside) + " values outside [r0, r1)");
    }
  }
}

}  // namespace

// 4q + 0..3 rows: the GEMV's 4-row groups (rows a quarter of the range apart) and single-row
// tail, the GEMM's 4-row tiles and row tail.
TEST(gemm, block32_row_counts_leaving_every_tile_remainder) {
  for (DType type : kTypes)
    for (int64_t rows : {1, 2, 3, 4, 5, 6, 9, 11})
      for (int64_t ncols : kCols) check(make_problem(type, rows, 256, ncols), 0, rows, rows + 2);
}

TEST(gemm, block32_row_sub_ranges_with_strided_y) {
  for (DType type : kTypes)
    for (int64_t ncols : kCols) {
      const Problem p = make_problem(type, 37, 96, ncols);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{5, 30}, {1, 2}, {29, 37}, {3, 10}, {8, 17}})
        check(p, r0, r1, p.rows + 3);
    }
}

TEST(gemm, block32_wide_rows) {
  for (DType type : kTypes)
    for (int64_t ncols : {1, 3, 8}) check(make_problem(type, 6, 14336, ncols), 0, 6, 6);
}

// The largest block sums a tile accumulates, both signs.
TEST(gemm, block32_codes_at_the_ends_of_their_ranges) {
  for (DType type : kTypes)
    for (Codes w : {Codes::High, Codes::Low})
      for (int64_t ncols : {1, 4, 5}) {
        Problem p = make_problem(type, 5, 128, ncols, w);
        check(p, 0, 5, 5);
        // The same weights against activations of the other sign.
        const Problem q = make_problem(type, 5, 128, ncols, w == Codes::High ? Codes::Low : Codes::High);
        p.x = q.x;
        p.xf = q.xf;
        check(p, 0, 5, 5);
      }
}
