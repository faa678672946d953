// matmul(): splitting rows across the pool and columns into groups of kMaxGemmCols gives the
// same Y as one reference kernel call over everything, for every weight type (kWeightTypes,
// random valid blocks from quant_blocks.h) with X quantized to its activation format.
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "runtime/matmul.h"
#include "runtime/thread_pool.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

struct Problem {
  DType t;
  int64_t rows, k, ncols;
  std::vector<uint8_t> w;
  std::vector<float> x;
};

Problem make_problem(DType t, int64_t rows, int64_t k, int64_t ncols) {
  Problem p{t, rows, k, ncols, {}, {}};
  const size_t row_bytes = dtype_row_bytes(t, k);
  p.w.resize(row_bytes * (size_t)rows);
  for (int64_t r = 0; r < rows; ++r) test::random_row(t, p.w.data() + (size_t)r * row_bytes, k);
  p.x.resize((size_t)(k * ncols));
  test::fill_normal(p.x.data(), k * ncols, 1.0f);
  return p;
}

// Y from one call of the reference kernel over all rows and all columns.
std::vector<float> reference_y(const Problem& p) {
  std::vector<float> y((size_t)(p.rows * p.ncols));
  std::vector<uint8_t> xq;
  GemmArgs a{};
  a.w = p.w.data();
  a.w_row_bytes = dtype_row_bytes(p.t, p.k);
  a.k = p.k;
  a.ncols = p.ncols;
  a.y = y.data();
  a.y_col_stride = p.rows;
  const DType act = dtype_activation(p.t);
  a.x_col_bytes = test::activation_row_bytes(act, p.k);
  xq.resize(a.x_col_bytes * (size_t)p.ncols);
  for (int64_t c = 0; c < p.ncols; ++c)
    test::quantize_activation(act, p.x.data() + c * p.k, xq.data() + (size_t)c * a.x_col_bytes, p.k);
  a.x = xq.data();
  kReferenceKernels.gemm_for(p.t)(a, 0, p.rows);
  return y;
}

std::string describe(const Problem& p, int threads, const KernelTable& kt) {
  return std::string(dtype_name(p.t)) + " rows=" + std::to_string(p.rows) + " k=" + std::to_string(p.k) +
         " ncols=" + std::to_string(p.ncols) + " threads=" + std::to_string(threads) + " kernels=" + kt.name;
}

// The shapes under test: all of rows x ncols for a small k, and the long k (FFN down
// projections) where rows * k * ncols stays small enough for the scalar reference under qemu.
// The smallest k is one block of the type (32, or 256 for the super-block formats).
std::vector<std::vector<int64_t>> shapes(DType t) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t k : {std::max<int64_t>(32, dtype_block_elems(t)), (int64_t)11008, (int64_t)14336})
    for (int64_t rows : {1, 5, 33, 1001})
      for (int64_t ncols : {1, 2, 64, 65, 130}) {
        if (k == 14336 && rows > 5) continue;  // few rows for the longest k
        if (k > 256 && rows * k * ncols > 3000000 && !(ncols == 1)) continue;
        out.push_back({rows, k, ncols});
      }
  return out;
}

template <class F>
bool throws_invalid(F f, const char* needle, std::string* got) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    *got = e.what();
    return std::strstr(e.what(), needle) != nullptr;
  }
  *got = "(no exception)";
  return false;
}

}  // namespace

TEST(matmul, pool_sizes_match_one_reference_call_exactly) {
  std::unique_ptr<ThreadPool> pools[] = {std::make_unique<ThreadPool>(1), std::make_unique<ThreadPool>(2),
                                         std::make_unique<ThreadPool>(3)};
  MatmulScratch scratch;
  for (DType t : kWeightTypes)
    for (const auto& s : shapes(t)) {
      const Problem p = make_problem(t, s[0], s[1], s[2]);
      const std::vector<float> want = reference_y(p);
      for (auto& pool : pools) {
        std::vector<float> y(want.size(), -12345.0f);
        matmul(*pool, kReferenceKernels, t, p.w.data(), p.rows, p.k, p.x.data(), p.ncols, y.data(), scratch);
        CHECK_MSG(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0,
                  describe(p, pool->size(), kReferenceKernels) + ": Y differs from the single reference call");
      }
    }
}

TEST(matmul, every_kernel_table_through_the_pool_matches_reference) {
  // Fast tables may sum in another order, so they agree within a tolerance; this checks that
  // matmul hands each table correct strides and column groups.
  ThreadPool pool(3);
  MatmulScratch scratch;
  for (const KernelTable* kt : runnable_kernel_tables())
    for (DType t : kWeightTypes) {
      if (!kt->gemm_for(t)) {
        test::fail(__FILE__, __LINE__, std::string(kt->name) + " has no GEMM for " + dtype_name(t));
        continue;
      }
      const int64_t k0 = std::max<int64_t>(64, dtype_block_elems(t));
      for (const auto& s : std::vector<std::vector<int64_t>>{{33, k0, 130}, {1001, 256, 2}, {5, 11008, 65}}) {
        const Problem p = make_problem(t, s[0], s[1], s[2]);
        const std::vector<float> want = reference_y(p);
        std::vector<float> y(want.size(), -12345.0f);
        matmul(pool, *kt, t, p.w.data(), p.rows, p.k, p.x.data(), p.ncols, y.data(), scratch);
        std::string why;
        if (!test::near_all(y.data(), want.data(), (int64_t)y.size(), 1e-4, 1e-4, &why))
          test::fail(__FILE__, __LINE__, describe(p, pool.size(), *kt) + ": " + why);
      }
    }
}

TEST(matmul, scratch_is_not_reallocated_for_the_same_size) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  const Problem p = make_problem(DType::Q4_0, 64, 256, 3);
  std::vector<float> y((size_t)(p.rows * p.ncols));
  matmul(pool, kReferenceKernels, p.t, p.w.data(), p.rows, p.k, p.x.data(), p.ncols, y.data(), scratch);
  const uint8_t* first = scratch.xq.data();
  for (int i = 0; i < 3; ++i)
    matmul(pool, kReferenceKernels, p.t, p.w.data(), p.rows, p.k, p.x.data(), p.ncols, y.data(), scratch);
  matmul(pool, kReferenceKernels, p.t, p.w.data(), p.rows, p.k, p.x.data(), 1, y.data(), scratch);  // smaller
  matmul(pool, kReferenceKernels, p.t, p.w.data(), p.rows, p.k, p.x.data(), p.ncols, y.data(), scratch);
  CHECK(scratch.xq.data() == first);
}

// same_input reuses the previous call's quantized X only when it quantized this X (pointer, k,
// columns) to this format with this table. The test breaks the caller's promise on purpose (X
// changes in place) so that a reuse shows in the result.
TEST(matmul, same_input_reuses_the_quantized_x_only_for_the_same_input) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  Problem p = make_problem(DType::Q4_0, 64, 512, 3);
  const std::vector<float> before = reference_y(p);
  auto run = [&](const Problem& q, const float* x, int64_t ncols, bool same) {
    std::vector<float> y((size_t)(q.rows * ncols));
    matmul(pool, kReferenceKernels, q.t, q.w.data(), q.rows, q.k, x, ncols, y.data(), scratch, same);
    return y;
  };
  CHECK(run(p, p.x.data(), p.ncols, false) == before);
  const std::vector<float> orig = p.x;
  for (float& v : p.x) v = -2.0f * v;
  CHECK(run(p, p.x.data(), p.ncols, true) == before);  // reused: the old X's result
  const std::vector<float> after = reference_y(p);
  CHECK(run(p, p.x.data(), p.ncols, false) == after);  // without same_input: quantized again
  CHECK(run(p, orig.data(), p.ncols, true) == before);  // another pointer
  CHECK(run(p, p.x.data(), p.ncols, true) == after);
  // Another column count (the third column's bytes left from orig), another activation format
  // (Q4_K: Q8_K): quantized again.
  Problem two = p;
  two.ncols = 2;
  run(p, orig.data(), 3, false);
  CHECK(run(p, p.x.data(), 2, false) == reference_y(two));
  CHECK(run(p, p.x.data(), 3, true) == after);
  Problem k4 = make_problem(DType::Q4_K, 64, 512, 3);
  k4.x = p.x;
  CHECK(run(k4, p.x.data(), 3, true) == reference_y(k4));
  // A matmul that reads X as floats (F32/F16 weights) in between: X may have changed before it
  // (a new layer's normed input in the same buffer), and it quantizes nothing, so a same_input
  // call after it must not take the older quantization (attn_q F16 before a Q4_0 attn_k).
  Problem f = make_problem(DType::F16, 64, 512, 3);
  run(p, p.x.data(), 3, false);                        // caches the quantization of this X
  for (float& v : p.x) v = 0.5f * v + 1.0f;            // the buffer's next contents
  f.x = p.x;
  CHECK(run(f, p.x.data(), 3, false) == reference_y(f));
  CHECK(run(p, p.x.data(), 3, true) == reference_y(p));  // quantized again, not the older X's
}

TEST(matmul, empty_rows_or_columns_do_nothing) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  float y = 7.0f;
  matmul(pool, kReferenceKernels, DType::Q4_0, nullptr, 0, 64, nullptr, 1, &y, scratch);
  matmul(pool, kReferenceKernels, DType::F32, nullptr, 4, 64, nullptr, 0, nullptr, scratch);
  CHECK(y == 7.0f);
}

TEST(matmul, rejects_invalid_arguments_with_the_reason) {
  ThreadPool pool(2);
  MatmulScratch scratch;
  std::vector<uint8_t> w(4096);
  std::vector<float> x(256), y(256);
  auto call = [&](DType t, int64_t rows, int64_t k, int64_t ncols, const void* wp, const float* xp, float* yp) {
    return [&, t, rows, k, ncols, wp, xp, yp] { matmul(pool, kReferenceKernels, t, wp, rows, k, xp, ncols, yp, scratch); };
  };
  std::string got;
  CHECK_MSG(throws_invalid(call(DType::Q4_0, 2, 48, 1, w.data(), x.data(), y.data()), "k = 48 is not a multiple of 32", &got), got);
  CHECK_MSG(throws_invalid(call(DType::Q8_0, 2, 33, 1, w.data(), x.data(), y.data()), "Q8_0", &got), got);
  CHECK_MSG(throws_invalid(call(DType::F32, -1, 32, 1, w.data(), x.data(), y.data()), "rows must be >= 0", &got), got);
  CHECK_MSG(throws_invalid(call(DType::F32, 2, 0, 1, w.data(), x.data(), y.data()), "k must be >= 1", &got), got);
  CHECK_MSG(throws_invalid(call(DType::F16, 2, 32, -3, w.data(), x.data(), y.data()), "ncols must be >= 0", &got), got);
  CHECK_MSG(throws_invalid(call(DType(4), 2, 32, 1, w.data(), x.data(), y.data()), "unsupported weight type 4", &got), got);
  CHECK_MSG(throws_invalid(call(DType::BF16, 2, 32, 1, nullptr, x.data(), y.data()), "w is null", &got), got);
  CHECK_MSG(throws_invalid(call(DType::BF16, 2, 32, 1, w.data(), nullptr, y.data()), "x is null", &got), got);
  CHECK_MSG(throws_invalid(call(DType::BF16, 2, 32, 1, w.data(), x.data(), nullptr), "y is null", &got), got);
  KernelTable missing = kReferenceKernels;
  missing.gemm_bf16 = nullptr;
  bool threw = false;
  try {
    matmul(pool, missing, DType::BF16, w.data(), 2, 32, x.data(), 1, y.data(), scratch);
  } catch (const std::invalid_argument& e) {
    threw = std::strstr(e.what(), "no GEMM for BF16") != nullptr;
  }
  CHECK(threw);
  // Super-block formats need k a multiple of 256; Q8_1 / Q8_K are activation formats.
  CHECK_MSG(throws_invalid(call(DType::Q4_K, 2, 96, 1, w.data(), x.data(), y.data()),
                           "k = 96 is not a multiple of 256, which Q4_K weights require", &got), got);
  CHECK_MSG(throws_invalid(call(DType::Q8_K, 2, 256, 1, w.data(), x.data(), y.data()), "unsupported weight type 15", &got), got);
  CHECK_MSG(throws_invalid(call(DType::Q8_1, 2, 32, 1, w.data(), x.data(), y.data()), "unsupported weight type 9", &got), got);
  missing = kReferenceKernels;
  missing.quantize_row_q8_k = nullptr;
  threw = false;
  try {
    matmul(pool, missing, DType::Q6_K, w.data(), 2, 256, x.data(), 1, y.data(), scratch);
  } catch (const std::invalid_argument& e) {
    threw = std::strstr(e.what(), "no quantizer for Q8_K activations") != nullptr;
  }
  CHECK(threw);
  // Float weights take any k.
  matmul(pool, kReferenceKernels, DType::F32, w.data(), 2, 33, x.data(), 1, y.data(), scratch);
}

TEST(matmul, rows_per_chunk_is_a_multiple_of_4_within_bounds) {
  CHECK_EQ(matmul_rows_per_chunk(1001, 2304, 1), (int64_t)1001);  // one chunk on one thread
  CHECK_EQ(matmul_rows_per_chunk(3, 2304, 4), (int64_t)3);
  for (int threads : {2, 3, 4})
    for (int64_t rows : {5, 33, 1001, 2048, 14336})
      for (size_t row_bytes : {(size_t)36, (size_t)2304, (size_t)8192, (size_t)57344}) {
        const int64_t r = matmul_rows_per_chunk(rows, row_bytes, threads);
        CHECK(r >= 1);
        CHECK(r <= rows);
        CHECK(r == rows || r % 4 == 0);
        CHECK(r == rows || r < 16 || (size_t)r * row_bytes <= 256 * 1024 + 15 * row_bytes);
        // 2 columns: whole 16-row tiles from 16 rows up.
        const int64_t r2 = matmul_rows_per_chunk(rows, row_bytes, threads, 2);
        CHECK(r2 >= 1 && r2 <= rows);
        CHECK(r2 == rows || r2 % (r2 >= 16 ? 16 : 4) == 0);
        // GEMM chunks: multiples of 16 rows (whole register tiles), at most 1 MiB unless 16 rows are more.
        const int64_t g = matmul_rows_per_chunk(rows, row_bytes, threads, 64);
        CHECK(g >= 1 && g <= rows);
        CHECK(g == rows || g % 16 == 0);
        CHECK(g == rows || g == 16 || (size_t)g * row_bytes <= 1024 * 1024);
      }
}
