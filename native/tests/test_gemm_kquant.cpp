// The GEMMs of the weight types with Q8_K activations (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) in
// every fast table against the reference, where the fast paths have edges of their own that
// test_gemm's shapes do not single out: the decode tile's four row streams with 1..3 rows left
// over and sub-ranges, column windows inside a 64-column activation matrix with strided outputs,
// and the largest codes times the largest activations of either sign (the plain-NEON GEMMs keep
// partial sums of code x activation products in int16 lanes, e.g. IQ4_XS 2 x 127 x 127 = 32258).
//
// Weights are random bytes (every code and scale bit pattern occurs) with sane f16 scales;
// activations are Q8_K blocks built directly from codes (constant blocks occur) with their bsums.
// Activation codes stay in [-127, 127]: the Q8_K quantizers (ggml's and every table's) never write
// -128 (the largest magnitude maps to -127), and the AVX2 kernels' sign trick relies on it.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kKTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS};

struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
};

// Q8_K columns with codes uniform in [xlo, xhi] and d in [0.5, 1.5] / 127; rows and columns padded
// (stride > size). Weights: test::random_row, or every byte `fill` with d = 1/256, dmin = 1/512.
Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols, int xlo = -127, int xhi = 127,
                     int fill = -1) {
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 24, dtype_row_bytes(DType::Q8_K, k) + 40, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  const int64_t nb = k / kQKK;
  const size_t bb = dtype_block_bytes(type);
  const test::ScaleFields f = test::scale_fields(type);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * p.w_row_bytes;
    if (fill < 0) {
      test::random_row(type, row, k);
      continue;
    }
    std::memset(row, fill, nb * bb);
    for (int64_t b = 0; b < nb; ++b)
      for (int i = 0; i < f.count; ++i) test::put_half(row + b * bb + f.offset[i], float_to_half(i ? 1.0f / 512 : 1.0f / 256));
  }
  std::uniform_int_distribution<int> code(xlo, xhi);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f);
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  for (int64_t c = 0; c < ncols; ++c) {
    auto* xb = reinterpret_cast<block_q8_K*>(p.x.data() + c * p.x_col_bytes);
    for (int64_t b = 0; b < nb; ++b) {
      xb[b].d = unit(test::rng()) / 127;
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int e = 0; e < 16; ++e) sum += xb[b].qs[16 * g + e] = (int8_t)code(test::rng());
        xb[b].bsums[g] = (int16_t)sum;
      }
    }
  }
  return p;
}

// The reference's y for all rows and columns ([c * rows + r]) and the scale of f32 rounding in
// each: sum_i (|w_i - m_i| + |m_i|) |x_i| with m_i the minimum part of weight i (as test_gemm).
struct Expected {
  std::vector<float> y;
  std::vector<double> magnitude;
};
Expected expected(const Problem& p) {
  Expected e{std::vector<float>(p.rows * p.ncols), std::vector<double>(p.rows * p.ncols, 0.0)};
  const GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data(), p.x_col_bytes, p.ncols, e.y.data(), p.rows};
  kReferenceKernels.gemm_for(p.type)(a, 0, p.rows);
  std::vector<float> w(p.k), off(p.k), x(p.k);
  for (int64_t r = 0; r < p.rows; ++r) {
    const uint8_t* row = p.w.data() + r * p.w_row_bytes;
    dequantize_row(p.type, row, w.data(), p.k);
    test::offset_part(p.type, row, p.k, off.data());
    for (int64_t c = 0; c < p.ncols; ++c) {
      dequantize_row(DType::Q8_K, p.x.data() + c * p.x_col_bytes, x.data(), p.k);
      double m = 0;
      for (int64_t i = 0; i < p.k; ++i)
        m += (std::fabs((double)w[i] - off[i]) + std::fabs((double)off[i])) * std::fabs((double)x[i]);
      e.magnitude[c * p.rows + r] = m;
    }
  }
  return e;
}

// As test_gemm: f32 reordering moves results by <= ~2e-7 of the magnitude; one code step in one
// weight of a 768-wide row by ~1e-3.
constexpr double kRtol = 2e-6;

std::string where(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t ncols) {
  return std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) + " k=" +
         std::to_string(p.k) + " range=[" + std::to_string(r0) + "," + std::to_string(r1) + ") cols=[" +
         std::to_string(c0) + "," + std::to_string(c0 + ncols) + ")";
}

// Runs every fast table on rows [r0, r1) and columns [c0, c0 + ncols) with outputs `stride` floats
// apart; checks each value and that nothing outside [r0, r1) is written.
void check(const Problem& p, const Expected& e, int64_t r0, int64_t r1, int64_t c0, int64_t ncols, int64_t stride) {
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (t == &kReferenceKernels) continue;
    const GemmFn fn = t->gemm_for(p.type);
    const std::string at = where(*t, p, r0, r1, c0, ncols);
    CHECK_MSG(fn != nullptr, at + ": no kernel");
    if (!fn) continue;
    std::vector<float> y(stride * ncols, NAN);
    const GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data() + c0 * p.x_col_bytes, p.x_col_bytes, ncols,
                     y.data(), stride};
    fn(a, r0, r1);
    int bad = 0;
    for (int64_t c = 0; c < ncols; ++c)
      for (int64_t r = 0; r < stride; ++r) {
        const float got = y[c * stride + r];
        if (r < r0 || r >= r1) {
          if (!std::isnan(got) && bad++ < 3) CHECK_MSG(false, at + ": wrote row " + std::to_string(r) + " outside the range");
          continue;
        }
        const double want = e.y[(c0 + c) * p.rows + r], tol = kRtol * e.magnitude[(c0 + c) * p.rows + r];
        if (!(std::fabs(got - want) <= tol + 1e-30) && bad++ < 3) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ": row %lld col %lld got %.9g want %.9g (tol %.3g)", (long long)r,
                        (long long)(c0 + c), (double)got, want, tol);
          CHECK_MSG(false, at + buf);
        }
      }
  }
}
void check(const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t ncols, int64_t stride) {
  check(p, expected(p), r0, r1, c0, ncols, stride);
}

}  // namespace

TEST(gemm, kquant_rows_not_a_multiple_of_the_tile_and_sub_ranges_match) {
  for (DType type : kKTypes)
    for (int64_t ncols : {1, 3, 4, 8}) {
      const Problem p = make_problem(type, 19, 512 + 256, ncols);
      const Expected e = expected(p);
      for (int64_t rows : {1, 2, 3, 5, 7}) check(make_problem(type, rows, 256, ncols), 0, rows, 0, ncols, rows);
      check(p, e, 1, 18, 0, ncols, 21);   // 17 rows: 4 decode streams of 4 + one left over
      check(p, e, 5, 6, 0, ncols, 19);    // one row
      check(p, e, 13, 19, 0, ncols, 40);  // the tail of the matrix, wide stride
    }
}

TEST(gemm, kquant_column_sub_ranges_and_strided_outputs_match) {
  for (DType type : kKTypes) {
    const Problem p = make_problem(type, 6, 768, 64);
    const Expected e = expected(p);
    check(p, e, 0, 6, 3, 13, 7);   // columns 3..15 of 64
    check(p, e, 2, 5, 51, 13, 9);  // the last 13
    check(p, e, 0, 6, 63, 1, 6);   // the last column alone (GEMV)
  }
}

// Every byte 0x00, 0xFF or 0x88 (the largest codes of each format, either sign for IQ4_XS and
// Q3_K/Q6_K's offsets, the largest scales) against constant activations of -127 or 127.
TEST(gemm, kquant_extreme_codes_and_activations_do_not_overflow) {
  for (DType type : kKTypes)
    for (uint8_t fill : {0x00, 0xFF, 0x88})
      for (int xv : {-127, 127}) {
        const Problem p = make_problem(type, 5, 768, 5, xv, xv, fill);
        check(p, 0, p.rows, 0, p.ncols, p.rows);
        // 16-row tiles with the rows in the lanes (avx2 Q4_K / Q6_K, several columns), whose
        // int16 sums hold 8 (Q4_K) or 4 (Q6_K) products.
        const Problem tall = make_problem(type, 35, 512, 8, xv, xv, fill);
        check(tall, 0, tall.rows, 0, tall.ncols, tall.rows);
      }
}
