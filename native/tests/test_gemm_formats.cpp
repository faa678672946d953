// Edge shapes of the 32-weight formats (Q4_1, Q5_0, Q5_1, IQ4_NL) and the super-block ones
// without an AVX-512 kernel (Q2_K, Q3_K, IQ4_XS) that test_gemm.cpp does not reach: odd block
// counts (a lone last block after the block pairs) under every column tail of the 2-row GEMM
// tile, rows that leave 1-3 rows after the 4-row decode tiles, sub-ranges with column windows
// taken from the middle of X. Every table against the reference table, compared as test_gemm.cpp
// does: relative to the term magnitude sum |w_i x_i| (minimum parts counted separately).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kTypes[] = {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL,
                            DType::Q2_K, DType::Q3_K, DType::IQ4_XS};

// As test_gemm.cpp: reordered f32 sums move results by <= ~2e-7 of the term magnitude; one code
// off by one moves them by ~1/k of it.
constexpr double kRtol = 2e-6;

struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
  std::vector<double> magnitude;  // [c][r]: sum_i (|w - off| + |off|) |x|
};

// Random valid weight rows and reference-quantized activation columns, both padded.
Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols) {
  const DType act = dtype_activation(type);
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 8, test::activation_row_bytes(act, k) + 20, {}, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  std::vector<float> wf(rows * k), woff(rows * k), xf(ncols * k), col(k);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * p.w_row_bytes;
    test::random_row(type, row, k);
    dequantize_row(type, row, wf.data() + r * k, k);
    test::offset_part(type, row, k, woff.data() + r * k);
  }
  for (int64_t c = 0; c < ncols; ++c) {
    test::fill_normal(col.data(), k, 1.0f);
    test::quantize_activation(act, col.data(), p.x.data() + c * p.x_col_bytes, k);
    dequantize_row(act, p.x.data() + c * p.x_col_bytes, xf.data() + c * k, k);
  }
  p.magnitude.assign(ncols * rows, 0.0);
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < k; ++i) {
        const double w = wf[r * k + i], off = woff[r * k + i];
        p.magnitude[c * rows + r] += (std::fabs(w - off) + std::fabs(off)) * std::fabs((double)xf[c * k + i]);
      }
  return p;
}

// y of rows [r0, r1) and columns [c0, c0 + ncols) at y_col_stride `stride`, NaN elsewhere.
std::vector<float> run(GemmFn fn, const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t ncols, int64_t stride) {
  std::vector<float> y((size_t)(stride * ncols), NAN);
  GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data() + c0 * p.x_col_bytes, p.x_col_bytes, ncols, y.data(), stride};
  fn(a, r0, r1);
  return y;
}

std::string where(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c) {
  return std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
         " k=" + std::to_string(p.k) + " range=[" + std::to_string(r0) + "," + std::to_string(r1) + ") col " +
         std::to_string(c);
}

// Every fast table computes rows [r0, r1) of columns [c0, c0 + ncols) as the reference does and
// writes nothing else.
void check_all_tables(const Problem& p, int64_t r0, int64_t r1, int64_t c0 = 0, int64_t ncols = -1) {
  if (ncols < 0) ncols = p.ncols - c0;
  const int64_t stride = p.rows + 5;
  const GemmFn ref_fn = kReferenceKernels.gemm_for(p.type);
  CHECK_MSG(ref_fn != nullptr, std::string("reference has no GEMM for ") + dtype_name(p.type));
  if (!ref_fn) return;
  const std::vector<float> want = run(ref_fn, p, r0, r1, c0, ncols, stride);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (t == &kReferenceKernels) continue;
    const GemmFn fn = t->gemm_for(p.type);
    CHECK_MSG(fn != nullptr, std::string(t->name) + " has no GEMM for " + dtype_name(p.type));
    if (!fn) continue;
    const std::vector<float> got = run(fn, p, r0, r1, c0, ncols, stride);
    for (int64_t c = 0; c < ncols; ++c) {
      int bad = 0, outside = 0;
      std::string first;
      for (int64_t r = 0; r < stride; ++r) {
        const float g = got[c * stride + r], w = want[c * stride + r];
        if (r < r0 || r >= r1) {
          outside += !std::isnan(g);
          continue;
        }
        const double tol = kRtol * p.magnitude[(c0 + c) * p.rows + r] + 1e-30;
        if (!(std::fabs((double)g - (double)w) <= tol) && bad++ == 0) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "row %lld: got %.9g, want %.9g (tol %.3g)", (long long)r, (double)g,
                        (double)w, tol);
          first = buf;
        }
      }
      CHECK_MSG(bad == 0, where(*t, p, r0, r1, c0 + c) + ": " + std::to_string(bad) + " wrong, first " + first);
      CHECK_MSG(outside == 0, where(*t, p, r0, r1, c0 + c) + ": wrote " + std::to_string(outside) +
                                  " values outside [r0, r1)");
    }
  }
}

int64_t block_k(DType t) { return dtype_block_elems(t); }

}  // namespace

// Odd block counts leave a lone last block after the 32-weight pairs (k = 256 * odd for the
// super-block formats); rows 1, 3, 5, 7, 33 leave rows after the 2-row and 4-row tiles.
TEST(gemm, other_formats_odd_blocks_and_rows) {
  for (DType t : kTypes)
    for (int64_t blocks : {3, 5})
      for (int64_t rows : {1, 3, 5, 7, 33})
        for (int64_t ncols : {1, 2, 3, 4, 5, 8, 13})
          check_all_tables(make_problem(t, rows, blocks * block_k(t), ncols), 0, rows);
}

TEST(gemm, other_formats_row_sub_ranges) {
  for (DType t : kTypes)
    for (int64_t ncols : {1, 3, 4, 13}) {
      const Problem p = make_problem(t, 37, 3 * block_k(t), ncols);
      check_all_tables(p, 5, 30);
      check_all_tables(p, 1, 2);
      check_all_tables(p, 29, 37);
      if (ncols > 2) check_all_tables(p, 3, 34, 1, ncols - 2);  // a column window inside X
    }
}

// Wide rows with an odd block count (4896 = 153 blocks of 32; 4864 = 19 super-blocks) under
// column tails: the prefetches run past many blocks, the last pair or block is the odd one.
TEST(gemm, other_formats_wide_odd_rows_under_column_tails) {
  for (DType t : kTypes)
    for (int64_t ncols : {1, 3, 7})
      check_all_tables(make_problem(t, 6, block_k(t) == kQK ? 4896 : 4864, ncols), 0, 6);
}
