// The kernel bench runs end to end on a tiny working set and reports sane numbers (this is
// not a timed test: it only keeps the bench code exercised).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/kernel_bench.h"
#include "test.h"

using namespace edgellm;

TEST(matmul, kernel_bench_reports_positive_finite_bandwidth) {
  KernelBenchOptions o;
  o.threads = {1, 2, 2};
  o.shapes = {{64, 64}, {33, 96}};
  o.min_seconds = 0.001;
  o.working_set_bytes = 1 << 20;
  const std::vector<KernelBenchRow> rows = run_kernel_bench(o, kReferenceKernels);
  CHECK_EQ(rows.size(), (size_t)(2 + 2 * 2));  // duplicate thread count measured once
  int gemv = 0;
  for (const KernelBenchRow& r : rows) {
    CHECK_MSG(std::isfinite(r.gbps) && r.gbps > 0, r.name + ": gbps " + std::to_string(r.gbps));
    CHECK_MSG(std::isfinite(r.peak_gbps) && r.peak_gbps > 0, r.name + ": peak_gbps " + std::to_string(r.peak_gbps));
    CHECK(std::isfinite(r.ratio) && r.ratio > 0);
    CHECK(r.seconds > 0);
    CHECK(r.isa == kReferenceKernels.name);
    CHECK(r.threads == 1 || r.threads == 2);
    if (r.name == "gemv_q4_0") {
      ++gemv;
      CHECK((r.rows == 64 && r.cols == 64) || (r.rows == 33 && r.cols == 96));
    } else {
      CHECK(r.name == "read_bandwidth");
    }
  }
  CHECK_EQ(gemv, 4);
}

TEST(matmul, kernel_bench_rejects_bad_shapes) {
  KernelBenchOptions o;
  o.threads = {1};
  o.shapes = {{64, 48}};
  o.working_set_bytes = 1 << 20;
  bool threw = false;
  try {
    run_kernel_bench(o, kReferenceKernels);
  } catch (const std::invalid_argument& e) {
    threw = std::strstr(e.what(), "64x48") != nullptr;
  }
  CHECK(threw);
}

TEST(matmul, kernel_bench_default_working_set_is_at_least_a_gib_or_a_quarter_of_ram) {
  const size_t ws = default_kernel_bench_working_set_bytes();
  const size_t ram = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
  CHECK(ws <= ram / 4);
  CHECK(ws >= std::min(size_t(1) << 30, ram / 4));
}

TEST(matmul, kernel_bench_reports_each_type_after_the_read_bandwidth) {
  KernelBenchOptions o;
  o.threads = {1};
  o.shapes = {{17, 512}};
  o.min_seconds = 0.001;
  o.working_set_bytes = 1 << 20;
  o.types = {DType::IQ4_XS, DType::Q4_1, DType::Q3_K};
  const std::vector<KernelBenchRow> rows = run_kernel_bench(o, kReferenceKernels);
  CHECK_EQ(rows.size(), (size_t)4);
  if (rows.size() != 4) return;
  CHECK(rows[0].name == "read_bandwidth");
  CHECK(rows[1].name == "gemv_iq4_xs");
  CHECK(rows[2].name == "gemv_q4_1");
  CHECK(rows[3].name == "gemv_q3_k");
  for (const KernelBenchRow& r : rows) {
    CHECK_MSG(std::isfinite(r.gbps) && r.gbps > 0, r.name + ": gbps " + std::to_string(r.gbps));
    CHECK(std::isfinite(r.ratio) && r.ratio > 0);
  }
}

TEST(matmul, kernel_bench_rejects_cols_that_are_not_whole_super_blocks) {
  KernelBenchOptions o;
  o.threads = {1};
  o.shapes = {{64, 96}};  // whole Q4_1 blocks, not whole IQ4_XS super-blocks
  o.working_set_bytes = 1 << 20;
  o.types = {DType::Q4_1, DType::IQ4_XS};
  std::string what;
  try {
    run_kernel_bench(o, kReferenceKernels);
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK_MSG(what.find("64x96") != std::string::npos && what.find("256") != std::string::npos &&
                what.find("IQ4_XS") != std::string::npos,
            "error was: " + what);
}
