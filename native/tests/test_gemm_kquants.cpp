// The K-quant GEMMs (Q4_K, Q5_K, Q6_K x Q8_K) and the Q8_K activation quantizer of every table
// that has them, on the shapes that reach the fast paths' tiling edges: k = 256 * n with n odd,
// row counts that are not a multiple of the 4-row tiles, sub-ranges, every column count of the
// few-column tile (1..8), the column tails after 8-column tiles (9..16) and 64 columns, padded
// rows and strided outputs.
//
// The weights are random bytes (every code, scale and min value occurs) with sane f16 scales, so
// no weight quantizer is needed; the expected result is the exact dot product of the dequantized
// weights and activations in double, which is what the integer-per-super-block definition
// computes before f32 rounding. Results are compared relative to sum |w_i x_i|, as in test_gemm.
#include <algorithm>
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

constexpr DType kKTypes[] = {DType::Q4_K, DType::Q5_K, DType::Q6_K};
constexpr double kRtol = 2e-6;  // as test_gemm: f32 reordering stays below ~2e-7 of sum |w x|

// ---- the formats, written out from their definitions in quant/blocks.h ----------------------

// ggml's quantize_row_q8_K_ref: x * (-127 / max) with max the first value of largest magnitude,
// rounded half to even by the 1.5 * 2^23 trick, at most 127, bsums of 16; all zero when max is 0.
void q8k_spec(const float* x, block_q8_K* y, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, x += kQKK) {
    block_q8_K& out = y[b];
    float amax = 0, max = 0;
    for (int j = 0; j < kQKK; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    std::memset(&out, 0, sizeof out);
    if (amax == 0) continue;
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) {
      const float v = iscale * x[j] + 12582912.0f;
      int32_t bits;
      std::memcpy(&bits, &v, 4);
      const int q = (bits & 0x007FFFFF) - 0x00400000;
      out.qs[j] = (int8_t)(q < 127 ? q : 127);
    }
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out.qs[16 * g + j];
      out.bsums[g] = (int16_t)sum;
    }
    out.d = 1.0f / iscale;
  }
}

// Weight i of one super-block as a double (exact: f16 scale x small integers).
double weight(DType t, const uint8_t* blk, int i) {
  switch (t) {
    case DType::Q4_K:
    case DType::Q5_K: {
      const bool q5 = t == DType::Q5_K;
      const auto* b4 = reinterpret_cast<const block_q4_K*>(blk);
      const auto* b5 = reinterpret_cast<const block_q5_K*>(blk);
      const uint8_t* scales = q5 ? b5->scales : b4->scales;
      const uint8_t* qs = q5 ? b5->qs : b4->qs;
      const int s = i / 32, l = i % 32;  // sub-block s: chunk s / 2, low nibbles for even s
      uint8_t sc, m;
      get_scale_min_k4(s, scales, &sc, &m);
      int q = (s % 2 == 0) ? qs[32 * (s / 2) + l] & 0xF : qs[32 * (s / 2) + l] >> 4;
      if (q5) q += ((b5->qh[l] >> s) & 1) << 4;
      const double d = half_to_float(q5 ? b5->d : b4->d), dmin = half_to_float(q5 ? b5->dmin : b4->dmin);
      return d * sc * q - dmin * m;
    }
    case DType::Q6_K: {
      const auto* b = reinterpret_cast<const block_q6_K*>(blk);
      const int n = i / 128, t = (i % 128) / 32, l = i % 32;
      const uint8_t lb = b->ql[64 * n + 32 * (t % 2) + l];
      const int q = (t < 2 ? lb & 0xF : lb >> 4) | ((b->qh[32 * n + l] >> (2 * t)) & 3) << 4;
      return (double)half_to_float(b->d) * b->scales[i / 16] * (q - 32);
    }
    default: return NAN;
  }
}

// Random super-blocks: random code, scale and min bytes; f16 scales of either sign in [2^-10, 2^-6).
void fill_random_blocks(DType t, uint8_t* row, int64_t k) {
  const size_t bytes = dtype_block_bytes(t);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> mag(1.0f / 1024, 1.0f / 64);
  for (int64_t b = 0; b < k / kQKK; ++b) {
    uint8_t* blk = row + b * bytes;
    for (size_t i = 0; i < bytes; ++i) blk[i] = (uint8_t)byte(test::rng());
    auto scale = [&] { return float_to_half(byte(test::rng()) < 128 ? mag(test::rng()) : -mag(test::rng())); };
    if (t == DType::Q6_K) {
      reinterpret_cast<block_q6_K*>(blk)->d = scale();
    } else if (t == DType::Q4_K) {
      reinterpret_cast<block_q4_K*>(blk)->d = scale();
      reinterpret_cast<block_q4_K*>(blk)->dmin = scale();
    } else {
      reinterpret_cast<block_q5_K*>(blk)->d = scale();
      reinterpret_cast<block_q5_K*>(blk)->dmin = scale();
    }
  }
}

// ---- problems ------------------------------------------------------------------------------

// rows x k weights (rows padded to w_row_bytes) and ncols Q8_K columns (padded to x_col_bytes),
// with their values as doubles.
struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
  std::vector<double> wd, xd;  // [rows][k], [ncols][k]
};

Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols) {
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 24, dtype_row_bytes(DType::Q8_K, k) + 40, {}, {}, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  p.wd.resize(rows * k);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = p.w.data() + r * p.w_row_bytes;
    fill_random_blocks(type, row, k);
    for (int64_t i = 0; i < k; ++i)
      p.wd[r * k + i] = weight(type, row + (i / kQKK) * dtype_block_bytes(type), (int)(i % kQKK));
  }
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  p.xd.resize(ncols * k);
  std::vector<float> xf(k);
  for (int64_t c = 0; c < ncols; ++c) {
    test::fill_normal(xf.data(), k, 1.0f);
    auto* xq = reinterpret_cast<block_q8_K*>(p.x.data() + c * p.x_col_bytes);
    q8k_spec(xf.data(), xq, k);
    for (int64_t i = 0; i < k; ++i) p.xd[c * k + i] = (double)xq[i / kQKK].d * xq[i / kQKK].qs[i % kQKK];
  }
  return p;
}

GemmFn gemm_of(const KernelTable& t, DType type) { return t.gemm_for(type); }

// The tables with a GEMM for `type`. A missing one is test_dispatch's failure; it is named here
// so that a table no test covers never goes unnoticed.
std::vector<const KernelTable*> tables_with(DType type) {
  static std::set<std::pair<const KernelTable*, DType>> reported;
  std::vector<const KernelTable*> out;
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (gemm_of(*t, type))
      out.push_back(t);
    else if (reported.insert({t, type}).second)
      std::printf("    (table %s has no %s GEMM yet: not checked here)\n", t->name, dtype_name(type));
  }
  return out;
}

// Runs one table on rows [r0, r1) of columns [c0, c0 + ncols) with y columns `stride` apart and
// checks every output against the exact dot product, and that nothing else was written.
void check(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c0, int64_t ncols,
           int64_t stride) {
  std::vector<float> y(stride * ncols, NAN);
  GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data() + c0 * p.x_col_bytes, p.x_col_bytes, ncols, y.data(), stride};
  gemm_of(t, p.type)(a, r0, r1);
  int bad = 0, outside = 0;
  std::string first;
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t r = 0; r < stride; ++r) {
      const float got = y[c * stride + r];
      if (r < r0 || r >= r1) {
        outside += !std::isnan(got);
        continue;
      }
      double want = 0, mag = 0;
      for (int64_t i = 0; i < p.k; ++i) {
        const double prod = p.wd[r * p.k + i] * p.xd[(c0 + c) * p.k + i];
        want += prod;
        mag += std::fabs(prod);
      }
      if (!(std::fabs(got - want) <= kRtol * mag + 1e-30)) {
        if (bad++ == 0) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "row %lld col %lld: got %.9g, want %.9g (tol %.3g)", (long long)r,
                        (long long)(c0 + c), (double)got, want, kRtol * mag);
          first = buf;
        }
      }
    }
  const std::string where = std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
                            " k=" + std::to_string(p.k) + " ncols=" + std::to_string(ncols) + " range=[" +
                            std::to_string(r0) + "," + std::to_string(r1) + ")";
  CHECK_MSG(bad == 0, where + ": " + std::to_string(bad) + " wrong outputs, first " + first);
  CHECK_MSG(outside == 0, where + ": wrote " + std::to_string(outside) + " values outside [r0, r1)");
}

void check_all_tables(const Problem& p, int64_t r0, int64_t r1, int64_t c0 = 0, int64_t ncols = -1) {
  if (ncols < 0) ncols = p.ncols;
  for (const KernelTable* t : tables_with(p.type)) check(*t, p, r0, r1, c0, ncols, p.rows + 3);
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

TEST(gemm, quantize_row_q8_k_matches_ggml_bytes) {
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
  q8k_spec(x.data(), want.data(), nb * kQKK);
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (!t->quantize_row_q8_k) {
      std::printf("    (table %s has no quantize_row_q8_k yet: not checked here)\n", t->name);
      continue;
    }
    std::vector<block_q8_K> got(nb);
    std::memset(got.data(), 0xCD, nb * sizeof(block_q8_K));
    t->quantize_row_q8_k(x.data(), got.data(), nb * kQKK);
    for (int64_t b = 0; b < nb; ++b)
      CHECK_MSG(std::memcmp(&got[b], &want[b], sizeof(block_q8_K)) == 0,
                std::string(t->name) + ": quantize_row_q8_k block " + std::to_string(b) + " differs from ggml's bytes");
  }
  // The spec itself, on the block with iscale 1: -125.5 -> -126 and -123.5 -> -124 (to even).
  CHECK_EQ((int)want[4].qs[0], -127);
  CHECK_EQ((int)want[4].qs[1], -126);
  CHECK_EQ((int)want[4].qs[3], -124);
  CHECK(want[2].d < 0 && want[3].d > 0);
}
