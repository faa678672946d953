// The K-quant GEMMs (Q4_K, Q5_K, Q6_K x Q8_K) and the Q8_K activation quantizer of every fast
// table, held to the reference table on the shapes that reach the avx2 tiling's edges (which
// test_gemm's grid does not all reach): the decode tiling's 4 rows a quarter of the range apart
// with every column count of the few-column tile (1..8) and its leftover rows, the 8-column
// tiles over 4 adjacent rows with each tail (9..16) and 64 columns, k = 256 * n with n odd, row
// sub-ranges, a window of columns inside X, padded rows and strided outputs.
// Weights are random valid blocks (quant_blocks.h); results are compared relative to the
// magnitude of their terms, as in test_gemm.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kKTypes[] = {DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr double kRtol = 2e-6;  // as test_gemm: f32 reordering stays below ~2e-7 of the terms

// rows x k weights (rows padded to w_row_bytes) and ncols Q8_K columns (padded to x_col_bytes),
// with per-output term magnitudes sum_i (|w_i - off_i| + |off_i|) |x_i| (off: the minimum part).
struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
  std::vector<double> magnitude;  // [ncols][rows]
};

Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols) {
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 24, dtype_row_bytes(DType::Q8_K, k) + 40, {}, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  std::vector<float> wf(rows * k), woff(rows * k), xf(ncols * k), col(k);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * p.w_row_bytes;
    test::random_row(type, row, k);
    dequantize_row(type, row, wf.data() + r * k, k);
    test::offset_part(type, row, k, woff.data() + r * k);
  }
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  for (int64_t c = 0; c < ncols; ++c) {
    test::fill_normal(col.data(), k, 1.0f);
    auto* xq = reinterpret_cast<block_q8_K*>(p.x.data() + c * p.x_col_bytes);
    quantize_row_q8_K_ref(col.data(), xq, k);
    dequantize_row_q8_K(xq, xf.data() + c * k, k);
  }
  p.magnitude.resize(ncols * rows);
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i) {
        const double w = wf[r * k + i], off = woff[r * k + i];
        s += (std::fabs(w - off) + std::fabs(off)) * std::fabs((double)xf[c * k + i]);
      }
      p.magnitude[c * rows + r] = s;
    }
  return p;
}

// y of one table for rows [r0, r1) of columns [c0, c0 + ncols), columns `stride` apart; what the
// kernel must not write stays NaN.
std::vector<float> run(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t ncols,
                       int64_t stride) {
  std::vector<float> y(stride * ncols, NAN);
  GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data() + c0 * p.x_col_bytes, p.x_col_bytes, ncols, y.data(), stride};
  t.gemm_for(p.type)(a, r0, r1);
  return y;
}

// Every fast table against the reference on rows [r0, r1) of columns [c0, c0 + ncols).
void check_all_tables(const Problem& p, int64_t r0, int64_t r1, int64_t c0 = 0, int64_t ncols = -1) {
  if (ncols < 0) ncols = p.ncols;
  const int64_t stride = p.rows + 3;
  const std::vector<float> want = run(kReferenceKernels, p, r0, r1, c0, ncols, stride);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (t == &kReferenceKernels) continue;
    const std::string where = std::string(t->name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
                              " k=" + std::to_string(p.k) + " columns [" + std::to_string(c0) + "," +
                              std::to_string(c0 + ncols) + ") rows [" + std::to_string(r0) + "," +
                              std::to_string(r1) + ")";
    if (!t->gemm_for(p.type)) {
      CHECK_MSG(false, where + ": no GEMM (null entry)");
      continue;
    }
    const std::vector<float> got = run(*t, p, r0, r1, c0, ncols, stride);
    int bad = 0, outside = 0;
    std::string first;
    for (int64_t c = 0; c < ncols; ++c)
      for (int64_t r = 0; r < stride; ++r) {
        const float g = got[c * stride + r];
        if (r < r0 || r >= r1) {
          outside += !std::isnan(g);
          continue;
        }
        const double tol = kRtol * p.magnitude[(c0 + c) * p.rows + r] + 1e-30;
        const double want_v = want[c * stride + r];
        if (!(std::fabs(g - want_v) <= tol) && bad++ == 0) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "row %lld col %lld: got %.9g, want %.9g (tol %.3g)", (long long)r,
                        (long long)(c0 + c), (double)g, want_v, tol);
          first = buf;
        }
      }
    CHECK_MSG(bad == 0, where + ": " + std::to_string(bad) + " wrong outputs, first " + first);
    CHECK_MSG(outside == 0, where + ": wrote " + std::to_string(outside) + " values outside the row range");
  }
}

}  // namespace

TEST(gemm, kquant_gemv_and_few_columns_on_odd_superblock_counts) {
  for (DType type : kKTypes)
    for (int64_t n : {1, 3, 17})
      for (int64_t rows : {1, 3, 4, 5, 9, 34}) {
        const Problem p = make_problem(type, rows, kQKK * n, 8);
        for (int64_t ncols = 1; ncols <= 8; ++ncols) check_all_tables(p, 0, rows, 8 - ncols, ncols);
      }
}

TEST(gemm, kquant_column_tails_after_full_tiles_and_64_columns) {
  for (DType type : kKTypes) {
    const Problem p = make_problem(type, 7, kQKK * 3, 64);
    for (int64_t ncols = 9; ncols <= 16; ++ncols) check_all_tables(p, 0, 7, 64 - ncols, ncols);
    check_all_tables(p, 0, 7, 0, 64);
    const Problem tall = make_problem(type, 37, kQKK * 5, 64);
    check_all_tables(tall, 0, 37);
  }
}

TEST(gemm, kquant_row_sub_ranges_write_only_their_rows) {
  for (DType type : kKTypes) {
    const Problem p = make_problem(type, 41, kQKK * 3, 13);
    for (int64_t ncols : {1, 2, 5, 8, 13})
      for (auto range : {std::pair<int64_t, int64_t>{5, 38}, {1, 2}, {37, 41}, {8, 16}})
        check_all_tables(p, range.first, range.second, 13 - ncols, ncols);
  }
}

// Several columns of Q4_K / Q6_K go to the avx2 tile of 16 rows in the vector lanes
// (gemm_kquants_rows.cpp) for whole tiles, the rest to the row tiles: ranges of 1, 2 and 3 tiles
// with 0..15 rows left over, starting on and off a multiple of 16, with every column count
// around its column pairs and thresholds.
TEST(gemm, kquant_sixteen_row_tiles_with_leftover_rows_and_columns) {
  for (DType type : kKTypes) {
    const Problem p = make_problem(type, 53, kQKK * 3, 17);
    for (int64_t ncols : {2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17})
      for (auto range : {std::pair<int64_t, int64_t>{0, 16}, {0, 32}, {3, 51}, {16, 31}, {1, 53}, {37, 53}})
        check_all_tables(p, range.first, range.second, 17 - ncols, ncols);
  }
}

// Wide rows (Llama FFN down projection k = 14336 = 56 super-blocks): the per-super-block f32
// accumulation stays within the tolerance.
TEST(gemm, kquant_wide_rows_match) {
  for (DType type : kKTypes) {
    const Problem p = make_problem(type, 5, 14336, 9);
    check_all_tables(p, 0, 5, 0, 1);
    check_all_tables(p, 0, 5, 0, 4);
    check_all_tables(p, 0, 5, 0, 9);
  }
}

TEST(gemm, quantize_row_q8_k_matches_reference_bytes_on_edge_blocks) {
  const int64_t nb = 12;
  std::vector<float> x(nb * kQKK);
  test::fill_normal(x.data(), (int64_t)x.size(), 3.0f);
  float* blk[nb];
  for (int64_t b = 0; b < nb; ++b) blk[b] = x.data() + b * kQKK;
  std::fill(blk[1], blk[1] + kQKK, 0.0f);  // all zero: an all-zero block
  blk[2][7] = 50.0f;                       // equal largest magnitudes: the first one sets the sign
  blk[2][100] = -50.0f;
  blk[3][7] = -50.0f;
  blk[3][100] = 50.0f;
  for (int j = 0; j < kQKK; ++j)  // iscale exactly 1: x.5 rounds to even, -127 at the max
    blk[4][j] = j == 0 ? -127.0f : (float)((j % 255) - 127) + ((j % 2) ? 0.5f : 0.0f);
  for (int j = 0; j < kQKK; ++j) blk[5][j] *= 1e-30f;  // tiny and subnormal magnitudes
  for (int j = 0; j < kQKK; ++j) blk[6][j] *= 1e30f;
  for (int j = 0; j < kQKK; ++j) blk[7][j] = (j % 3) ? 0.0f : -0.0f;  // only signed zeros
  blk[8][3] = NAN;  // NaN is ignored by the max and becomes 0
  blk[9][5] = INFINITY;
  for (int j = 0; j < kQKK; ++j) blk[10][j] = (j % 2) ? -1.0f : 1.0f;  // all the same magnitude: the first wins
  for (int j = 0; j < kQKK; ++j) blk[11][j] = (float)j / 256.0f - 0.25f;  // max positive at the end
  std::vector<block_q8_K> want(nb);
  quantize_row_q8_K_ref(x.data(), want.data(), nb * kQKK);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (!t->quantize_row_q8_k) {
      CHECK_MSG(false, std::string(t->name) + " has no quantize_row_q8_k (null entry)");
      continue;
    }
    std::vector<block_q8_K> got(nb);
    std::memset(got.data(), 0xCD, nb * sizeof(block_q8_K));
    t->quantize_row_q8_k(x.data(), got.data(), nb * kQKK);
    for (int64_t b = 0; b < nb; ++b)
      CHECK_MSG(std::memcmp(&got[b], &want[b], sizeof(block_q8_K)) == 0,
                std::string(t->name) + ": quantize_row_q8_k block " + std::to_string(b) + " differs from the reference bytes");
  }
  // The spec itself, on the block with iscale 1: -125.5 -> -126 and -123.5 -> -124 (to even).
  CHECK_EQ((int)want[4].qs[0], -127);
  CHECK_EQ((int)want[4].qs[1], -126);
  CHECK_EQ((int)want[4].qs[3], -124);
  CHECK(want[2].d < 0 && want[3].d > 0);
}
