// The AVX-512 VNNI K-quant GEMMs (kernels/avx512/gemm_k.cpp: Q4_K, Q5_K, Q6_K x Q8_K) on the
// shapes their tiling has edges at: k = 256 * n with n odd, row counts that are not a multiple of
// the 16-row tile, row sub-ranges, 1 to 9 columns (registers) and 16, 17, 63, 64 (groups of 8
// through y), strided y. Blocks are random bytes (every code, scale and min value, Q8_K codes down
// to -128) and the expected result is computed here from the block layouts in double, so these
// tests do not depend on any other kernel or quantizer. They call the avx512 table's entries, so
// the columns it hands to the avx2 kernels (1 and 2; Q6_K up to 8) are held to the same checks.
// x86-64 only: there is no avx512 table elsewhere.
#if defined(__x86_64__)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "test.h"

using namespace edgellm;

namespace {

// The avx512 table when this CPU runs it, else null after a loud SKIPPED line.
const KernelTable* avx512_table() {
  for (const KernelTable* t : runnable_kernel_tables())
    if (t->isa == Isa::Avx512) return t;
  std::fprintf(stderr, "SKIPPED: the AVX-512 K-quant GEMM tests (this CPU lacks AVX512F/BW/VL/VNNI or the OS does not save zmm state, so the avx512 table is not used here)\n");
  return nullptr;
}

// Uniform random bytes.
void fill_bytes(uint8_t* p, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)byte(test::rng());
}

uint16_t random_half(float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  return float_to_half(u(test::rng()));
}

// One problem: rows x k weights of type `type` (rows w_row_bytes apart, padded), ncols Q8_K columns.
struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
};

Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols) {
  const int64_t nb = k / kQKK;
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 24, nb * sizeof(block_q8_K) + 8, {}, {}};
  p.w.resize(p.w_row_bytes * rows);
  fill_bytes(p.w.data(), p.w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = p.w.data() + r * p.w_row_bytes + b * dtype_block_bytes(type);
      if (type == DType::Q6_K) {
        reinterpret_cast<block_q6_K*>(blk)->d = random_half(0.001f, 0.01f);
      } else {  // block_q4_K and block_q5_K both start with d, dmin
        auto* q = reinterpret_cast<block_q4_K*>(blk);
        q->d = random_half(0.001f, 0.01f);
        q->dmin = random_half(0.001f, 0.01f);
      }
    }
  p.x.resize(p.x_col_bytes * ncols);
  fill_bytes(p.x.data(), p.x.size());
  std::uniform_real_distribution<float> dx(0.005f, 0.02f);
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t b = 0; b < nb; ++b) {
      auto* x = reinterpret_cast<block_q8_K*>(p.x.data() + c * p.x_col_bytes) + b;
      x->d = dx(test::rng());
      for (int i = 0; i < kQKK / 16; ++i) {
        int s = 0;
        for (int e = 0; e < 16; ++e) s += x->qs[16 * i + e];
        x->bsums[i] = (int16_t)s;
      }
    }
  return p;
}

// Weight i (0..255) of a super-block as (scale, code, min term) with value d*sc*code - dmin*m
// (Q4_K, Q5_K) or d*sc*(code - 32) (Q6_K; m = 32*sc, dmin = d), read straight off the layouts.
struct Weight {
  double scale, code, min;
};

Weight weight(DType type, const uint8_t* blk, int i) {
  if (type == DType::Q6_K) {
    const auto* q = reinterpret_cast<const block_q6_K*>(blk);
    const int n = i / 128, w = i % 128, g = w / 32, l = w % 32;
    const uint8_t ql = q->ql[64 * n + l + (g & 1) * 32];
    const int code = (g < 2 ? ql & 0xF : ql >> 4) | (((q->qh[32 * n + l] >> (2 * g)) & 3) << 4);
    const double d = half_to_float(q->d) * q->scales[i / 16];
    return {d, (double)code, d * 32};
  }
  const auto* q = reinterpret_cast<const block_q4_K*>(blk);  // d, dmin, scales: same in Q5_K
  const int j = i / 32, l = i % 32;
  uint8_t sc, m;
  get_scale_min_k4(j, q->scales, &sc, &m);
  int code;
  if (type == DType::Q4_K) {
    const uint8_t b = q->qs[32 * (j / 2) + l];
    code = j % 2 == 0 ? b & 0xF : b >> 4;
  } else {
    const auto* q5 = reinterpret_cast<const block_q5_K*>(blk);
    const uint8_t b = q5->qs[32 * (j / 2) + l];
    code = (j % 2 == 0 ? b & 0xF : b >> 4) | (((q5->qh[l] >> j) & 1) << 4);
  }
  return {(double)half_to_float(q->d) * sc, (double)code, (double)half_to_float(q->dmin) * m};
}

// y[c][r] in double, and the magnitude of the terms the kernel sums (sum of |scale*code*x| +
// |min*x|, the bound on its rounding error).
void expected(const Problem& p, int64_t r, int64_t c, double* y, double* magnitude) {
  const int64_t nb = p.k / kQKK;
  double sum = 0, mag = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = p.w.data() + r * p.w_row_bytes + b * dtype_block_bytes(p.type);
    const auto* x = reinterpret_cast<const block_q8_K*>(p.x.data() + c * p.x_col_bytes) + b;
    for (int i = 0; i < kQKK; ++i) {
      const Weight w = weight(p.type, blk, i);
      const double xi = (double)x->d * x->qs[i];
      sum += (w.scale * w.code - w.min) * xi;
      mag += std::fabs(w.scale * w.code * xi) + std::fabs(w.min * xi);
    }
  }
  *y = sum;
  *magnitude = mag;
}

GemmFn gemm_of(const KernelTable& t, DType type) {
  return type == DType::Q4_K ? t.gemm_q4_k : type == DType::Q5_K ? t.gemm_q5_k : t.gemm_q6_k;
}

// Integer sums are exact; the f32 steps (one convert and FMA per super-block and term) leave
// ~1e-7 of the magnitude. One code off by one in a row of 2816 moves y by ~1e-4 of it.
constexpr double kRtol = 1e-5;

// Runs rows [r0, r1) of columns [0, ncols) with y columns `stride` floats apart and checks every
// value against expected(), and that nothing outside [r0, r1) was written.
void check(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1) {
  const int64_t stride = p.rows + 5;
  std::vector<float> y(stride * p.ncols, NAN);
  const GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data(), p.x_col_bytes, p.ncols, y.data(), stride};
  gemm_of(t, p.type)(a, r0, r1);
  const std::string where = std::string(dtype_name(p.type)) + " rows=" + std::to_string(p.rows) +
                            " k=" + std::to_string(p.k) + " ncols=" + std::to_string(p.ncols) + " range=[" +
                            std::to_string(r0) + "," + std::to_string(r1) + ")";
  int bad = 0;
  for (int64_t c = 0; c < p.ncols; ++c)
    for (int64_t r = 0; r < stride; ++r) {
      const float got = y[c * stride + r];
      if (r < r0 || r >= r1) {
        if (!std::isnan(got) && bad++ < 3) CHECK_MSG(false, where + ": wrote row " + std::to_string(r) + " of column " + std::to_string(c) + " outside the range");
        continue;
      }
      double want, mag;
      expected(p, r, c, &want, &mag);
      const double diff = std::fabs(got - want);
      if (!(diff <= kRtol * mag) && bad++ < 3) {
        char buf[200];
        std::snprintf(buf, sizeof buf, ": row %lld col %lld: got %.9g, want %.9g (|diff| %.3g > tol %.3g)",
                      (long long)r, (long long)c, (double)got, want, diff, kRtol * mag);
        CHECK_MSG(false, where + buf);
      }
    }
}

constexpr DType kTypes[] = {DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr int64_t kCols[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 63, 64};

}  // namespace

TEST(gemm, avx512_k_quants_one_super_block_every_column_count) {
  const KernelTable* t = avx512_table();
  if (!t) return;
  for (DType type : kTypes)
    for (int64_t ncols : kCols) check(*t, make_problem(type, 17, 256, ncols), 0, 17);
}

TEST(gemm, avx512_k_quants_odd_super_block_counts_and_partial_tiles) {
  const KernelTable* t = avx512_table();
  if (!t) return;
  for (DType type : kTypes)
    for (int64_t k : {768, 2816})
      for (int64_t rows : {1, 15, 16, 37})
        for (int64_t ncols : {1, 3, 8, 9, 17, 64}) check(*t, make_problem(type, rows, k, ncols), 0, rows);
}

// Sub-ranges: tiles start at r0, the last one is partial, and the prefetch of the next tile
// crosses into rows the call must not write.
TEST(gemm, avx512_k_quants_row_sub_ranges) {
  const KernelTable* t = avx512_table();
  if (!t) return;
  for (DType type : kTypes)
    for (int64_t ncols : {1, 2, 7, 16, 63}) {
      const Problem p = make_problem(type, 50, 1280, ncols);
      check(*t, p, 3, 37);
      check(*t, p, 16, 48);
      check(*t, p, 49, 50);
    }
}

#endif  // __x86_64__
