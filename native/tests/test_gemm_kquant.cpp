// The GEMMs of the weight types with Q8_K activations (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) and
// the Q8_K activation quantizer, in every fast table, on the shapes that reach the tiles' edges:
// k = 256 n with n odd, row counts that are not a multiple of the 4-row tiles, sub-ranges, 1..8,
// 13 and 64 columns, padded weight rows and activation columns, strided outputs; and on the
// largest codes times the largest activations (the int16 partial sums of the plain-NEON GEMMs).
//
// Weights are random bytes (every code and scale bit pattern occurs) with sane f16 scales;
// activations are random Q8_K blocks with their bsums. The expected values come from a plain
// decode of each format into ggml's integer codes and scales, summed as ggml's vec_dot does.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kKTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS};

// One super-block as ggml's integers: code q[e] (signed, as ggml's dequantizers use it), scale
// sc[s] and min m[s] of sub-block s (nsub of 256 / nsub weights), w[e] = d sc q - dm m.
struct SuperBlock {
  int q[kQKK];
  int sc[16], m[16];
  int nsub;
  double d, dm;
};

SuperBlock decode(DType t, const uint8_t* blk) {
  SuperBlock s{};
  switch (t) {
    case DType::Q2_K: {
      const auto& b = *reinterpret_cast<const block_q2_K*>(blk);
      s.nsub = 16;
      for (int i = 0; i < 16; ++i) s.sc[i] = b.scales[i] & 15, s.m[i] = b.scales[i] >> 4;
      for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
          for (int l = 0; l < 32; ++l) s.q[128 * n + 32 * j + l] = (b.qs[32 * n + l] >> (2 * j)) & 3;
      s.d = half_to_float(b.d), s.dm = half_to_float(b.dmin);
      break;
    }
    case DType::Q3_K: {
      const auto& b = *reinterpret_cast<const block_q3_K*>(blk);
      s.nsub = 16;
      for (int i = 0; i < 16; ++i) {
        const int low = i < 8 ? b.scales[i] & 15 : b.scales[i - 8] >> 4;
        const int high = (b.scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        s.sc[i] = (low | high << 4) - 32;
      }
      for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
          for (int l = 0; l < 32; ++l) {
            const bool hbit = (b.hmask[l] >> (4 * n + j)) & 1;
            s.q[128 * n + 32 * j + l] = ((b.qs[32 * n + l] >> (2 * j)) & 3) - (hbit ? 0 : 4);
          }
      s.d = half_to_float(b.d), s.dm = 0;
      break;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      const bool five = t == DType::Q5_K;
      const auto* b4 = reinterpret_cast<const block_q4_K*>(blk);
      const auto* b5 = reinterpret_cast<const block_q5_K*>(blk);
      const uint8_t* scales = five ? b5->scales : b4->scales;
      const uint8_t* qs = five ? b5->qs : b4->qs;
      s.nsub = 8;
      for (int i = 0; i < 8; ++i) {
        uint8_t sc, m;
        get_scale_min_k4(i, scales, &sc, &m);
        s.sc[i] = sc, s.m[i] = m;
      }
      for (int j = 0; j < 4; ++j)
        for (int l = 0; l < 32; ++l) {
          int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
          if (five) {
            lo += ((b5->qh[l] >> (2 * j)) & 1) << 4;
            hi += ((b5->qh[l] >> (2 * j + 1)) & 1) << 4;
          }
          s.q[64 * j + l] = lo;
          s.q[64 * j + 32 + l] = hi;
        }
      s.d = half_to_float(five ? b5->d : b4->d), s.dm = half_to_float(five ? b5->dmin : b4->dmin);
      break;
    }
    case DType::Q6_K: {
      const auto& b = *reinterpret_cast<const block_q6_K*>(blk);
      s.nsub = 16;
      for (int i = 0; i < 16; ++i) s.sc[i] = b.scales[i];
      for (int n = 0; n < 2; ++n) {
        const uint8_t* ql = b.ql + 64 * n;
        const uint8_t* qh = b.qh + 32 * n;
        for (int l = 0; l < 32; ++l) {
          s.q[128 * n + l] = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
          s.q[128 * n + 32 + l] = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          s.q[128 * n + 64 + l] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          s.q[128 * n + 96 + l] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        }
      }
      s.d = half_to_float(b.d), s.dm = 0;
      break;
    }
    case DType::IQ4_XS: {
      const auto& b = *reinterpret_cast<const block_iq4_xs*>(blk);
      s.nsub = 8;
      for (int i = 0; i < 8; ++i)
        s.sc[i] = (((b.scales_l[i / 2] >> (4 * (i % 2))) & 15) | (((b.scales_h >> (2 * i)) & 3) << 4)) - 32;
      for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 16; ++j) {
          s.q[32 * i + j] = kValuesIq4nl[b.qs[16 * i + j] & 15];
          s.q[32 * i + 16 + j] = kValuesIq4nl[b.qs[16 * i + j] >> 4];
        }
      s.d = half_to_float(b.d), s.dm = 0;
      break;
    }
    default: CHECK_MSG(false, std::string("not a Q8_K-activation type: ") + dtype_name(t));
  }
  return s;
}

// The f16 scale fields of a block (d, and dmin where the format has one).
void set_scales(DType t, uint8_t* blk, float d, float dmin) {
  const uint16_t hd = float_to_half(d), hm = float_to_half(dmin);
  switch (t) {
    case DType::Q2_K: reinterpret_cast<block_q2_K*>(blk)->d = hd, reinterpret_cast<block_q2_K*>(blk)->dmin = hm; break;
    case DType::Q3_K: reinterpret_cast<block_q3_K*>(blk)->d = hd; break;
    case DType::Q4_K: reinterpret_cast<block_q4_K*>(blk)->d = hd, reinterpret_cast<block_q4_K*>(blk)->dmin = hm; break;
    case DType::Q5_K: reinterpret_cast<block_q5_K*>(blk)->d = hd, reinterpret_cast<block_q5_K*>(blk)->dmin = hm; break;
    case DType::Q6_K: reinterpret_cast<block_q6_K*>(blk)->d = hd; break;
    case DType::IQ4_XS: reinterpret_cast<block_iq4_xs*>(blk)->d = hd; break;
    default: break;
  }
}

struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
};

// Random weight bytes with scales d in [0.5, 1.5] / 256 and dmin in [0, 1] / 256; Q8_K columns with
// codes in [xlo, xhi] and d in [0.5, 1.5] / 127. Rows and columns are padded (stride > size).
Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols, int xlo = -127, int xhi = 127) {
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 24, dtype_row_bytes(DType::Q8_K, k) + 40, {}, {}};
  std::uniform_int_distribution<int> byte(0, 255), code(xlo, xhi);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f), frac(0.0f, 1.0f);
  p.w.resize(p.w_row_bytes * rows);
  for (uint8_t& v : p.w) v = (uint8_t)byte(test::rng());
  const int64_t nb = k / kQKK;
  const size_t bb = dtype_block_bytes(type);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b)
      set_scales(type, p.w.data() + r * p.w_row_bytes + b * bb, unit(test::rng()) / 256, frac(test::rng()) / 256);
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

const block_q8_K* x_col(const Problem& p, int64_t c) {
  return reinterpret_cast<const block_q8_K*>(p.x.data() + c * p.x_col_bytes);
}

// y[c][r] as ggml's vec_dot sums it, in double, and sum |w_i x_i| (the scale of f32 rounding),
// for every row and column: [c * rows + r].
struct Expected {
  std::vector<double> y, magnitude;
};
Expected expected(const Problem& p) {
  Expected e{std::vector<double>(p.rows * p.ncols, 0.0), std::vector<double>(p.rows * p.ncols, 0.0)};
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t b = 0; b < p.k / kQKK; ++b) {
      const SuperBlock s = decode(p.type, p.w.data() + r * p.w_row_bytes + b * dtype_block_bytes(p.type));
      const int per = kQKK / s.nsub;
      for (int64_t c = 0; c < p.ncols; ++c) {
        const block_q8_K& x = x_col(p, c)[b];
        int64_t scaled = 0, mins = 0;
        double mag = 0;
        for (int sb = 0; sb < s.nsub; ++sb) {
          int64_t dot = 0, xsum = 0;
          for (int i = sb * per; i < (sb + 1) * per; ++i) {
            dot += s.q[i] * x.qs[i];
            xsum += x.qs[i];
            mag += std::fabs((s.d * s.sc[sb] * s.q[i] - s.dm * s.m[sb]) * x.qs[i]);
          }
          scaled += s.sc[sb] * dot;
          mins += s.m[sb] * xsum;
        }
        e.y[c * p.rows + r] += x.d * (s.d * (double)scaled - s.dm * (double)mins);
        e.magnitude[c * p.rows + r] += mag * x.d;
      }
    }
  return e;
}

// Relative to sum |w_i x_i|: f32 rounding of the per-super-block sums is ~1e-7 of it; one code
// step in one weight of a 1280-wide row is ~1e-3.
constexpr double kRtol = 1e-5;

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

TEST(gemm, kquant_gemv_and_gemm_match_the_integer_definition_at_odd_super_block_counts) {
  for (DType type : kKTypes)
    for (int64_t k : {256, 768, 1280})
      for (int64_t ncols : {1, 2, 3, 4, 5, 6, 7, 8, 13, 64}) {
        const Problem p = make_problem(type, 9, k, ncols);
        check(p, 0, p.rows, 0, ncols, p.rows + 3);
      }
}

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

// The largest codes against the largest activations of both signs: the plain-NEON GEMMs keep
// partial sums of code * activation products in int16 lanes (IQ4_XS: 2 x 127 x 128 = 32512).
TEST(gemm, kquant_extreme_codes_and_activations_do_not_overflow) {
  for (DType type : kKTypes)
    for (uint8_t fill : {0x00, 0xFF, 0x88})
      for (int xv : {-128, 127}) {
        Problem p = make_problem(type, 5, 768, 5, xv, xv);
        const int64_t nb = p.k / kQKK;
        for (int64_t r = 0; r < p.rows; ++r)
          for (int64_t b = 0; b < nb; ++b) {
            uint8_t* blk = p.w.data() + r * p.w_row_bytes + b * dtype_block_bytes(type);
            std::memset(blk, fill, dtype_block_bytes(type));
            set_scales(type, blk, 1.0f / 256, 1.0f / 512);
          }
        check(p, 0, p.rows, 0, p.ncols, p.rows);
      }
}

// ---- activations -> Q8_K -----------------------------------------------------------------------

namespace {

// ggml's quantize_row_q8_K_ref, written from its definition (see kernels.h).
void q8_k_definition(const float* x, block_q8_K* y, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float* xb = x + i * kQKK;
    float amax = 0, max = 0;
    for (int j = 0; j < kQKK; ++j)
      if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), max = xb[j];
    std::memset(&y[i], 0, sizeof y[i]);
    if (amax == 0) continue;
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) {
      const float v = std::nearbyint(iscale * xb[j]);  // the default mode: half to even
      y[i].qs[j] = (int8_t)std::fmin(127.0f, v);
    }
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int e = 0; e < 16; ++e) s += y[i].qs[16 * g + e];
      y[i].bsums[g] = (int16_t)s;
    }
    y[i].d = 1 / iscale;
  }
}

void check_q8_k(const std::vector<float>& x, const char* what) {
  const int64_t nb = (int64_t)x.size() / kQKK;
  std::vector<block_q8_K> want(nb);
  q8_k_definition(x.data(), want.data(), (int64_t)x.size());
  for (const KernelTable* t : runnable_kernel_tables()) {
    if (t == &kReferenceKernels) continue;
    CHECK_MSG(t->quantize_row_q8_k != nullptr, std::string(t->name) + ": no quantize_row_q8_k");
    if (!t->quantize_row_q8_k) continue;
    std::vector<block_q8_K> got(nb);
    std::memset(got.data(), 0xA5, nb * sizeof(block_q8_K));
    t->quantize_row_q8_k(x.data(), got.data(), (int64_t)x.size());
    for (int64_t b = 0; b < nb; ++b)
      CHECK_MSG(std::memcmp(&got[b], &want[b], sizeof(block_q8_K)) == 0,
                std::string(t->name) + " quantize_row_q8_k " + what + ": block " + std::to_string(b) +
                    " differs from ggml's bytes");
  }
}

}  // namespace

TEST(gemm, quantize_row_q8_k_gives_ggml_bytes_on_random_rows) {
  std::vector<float> x(kQKK * 7);
  test::fill_normal(x.data(), (int64_t)x.size(), 2.0f);
  check_q8_k(x, "normal");
  test::fill_uniform(x.data(), (int64_t)x.size(), -1e-30f, 1e-30f);
  check_q8_k(x, "tiny");
}

// The scale comes from the first element of largest magnitude, with its sign; halves round to
// even (max = 127 gives iscale = -1, so 2.5 -> -2 and 3.5 -> -4); an all-zero block is all zeros.
TEST(gemm, quantize_row_q8_k_takes_the_first_extreme_rounds_half_to_even_and_zeroes_empty_blocks) {
  std::vector<float> x(kQKK * 3, 0.0f);
  for (int j = 0; j < kQKK; ++j) x[j] = (float)((j % 9) - 4) + 0.5f;  // ..., -3.5, -2.5, ..., 4.5
  x[17] = 127.0f;
  x[200] = -127.0f;  // same magnitude, later: not the scale
  // block 1 stays zero; block 2: the negative extreme comes first.
  for (int j = 0; j < kQKK; ++j) x[2 * kQKK + j] = 0.25f * (float)((j * 37) % 101 - 50);
  x[2 * kQKK + 3] = -20.0f;
  x[2 * kQKK + 4] = 20.0f;
  check_q8_k(x, "ties");
  std::vector<block_q8_K> y(3);
  q8_k_definition(x.data(), y.data(), (int64_t)x.size());
  CHECK(y[0].d == -1.0f && y[0].qs[0] == 4 && y[0].qs[1] == 2 && y[0].qs[2] == 2 && y[0].qs[3] == 0 && y[0].qs[17] == -127);
  CHECK(y[1].d == 0.0f && y[1].bsums[0] == 0);
  CHECK(y[2].d > 0.0f && y[2].qs[3] == -127 && y[2].qs[4] == 127);
}
