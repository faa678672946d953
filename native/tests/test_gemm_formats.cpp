// GEMMs of Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K and IQ4_XS in every kernel table, against a
// scalar statement of ggml's dot products written here from the block layouts (quant/blocks.h):
// per block the integer dot product of weight codes and activation codes, scaled as ggml's
// vec_dot_<type>_q8_<x> scales it. Weights and activations are random block bytes (every code
// value, every scale bit pattern, sane f16 scales), so the packed fields are all exercised.
// Shapes reach the tiles' edges: a lone last block, k = 256 * odd, rows not a multiple of the
// tile, sub-ranges, 1-8, 13 and 64 columns, padded rows and columns, strided y.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"
#include "test.h"

using namespace edgellm;

namespace {

constexpr DType kTypes[] = {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::IQ4_NL,
                            DType::Q2_K, DType::Q3_K, DType::IQ4_XS};

// Fast paths reorder f32 sums: compared relative to the sum of the magnitudes of the scaled
// integer terms (as test_gemm.cpp does); one weight code off by one moves a result by ~1/k of it.
constexpr double kRtol = 2e-6;

uint32_t next_u32() { return test::rng()(); }

// A random f16 in +-[2^-10, 2^-6): a sane block scale.
uint16_t random_scale() {
  const uint32_t r = next_u32();
  return (uint16_t)(((r >> 31) << 15) | ((5 + (r & 3)) << 10) | ((r >> 8) & 0x3FF));
}

void random_bytes(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)next_u32();
}

int8_t random_q8() { return (int8_t)((int)(next_u32() % 255) - 127); }  // -127..127, as the quantizers make

// One weight block of type t with random codes and sane scales.
void random_weight_block(DType t, uint8_t* p) {
  random_bytes(p, dtype_block_bytes(t));
  auto put = [&](size_t offset, uint16_t h) { std::memcpy(p + offset, &h, 2); };
  switch (t) {
    case DType::Q4_1: put(offsetof(block_q4_1, d), random_scale()); put(offsetof(block_q4_1, m), random_scale()); break;
    case DType::Q5_0: put(offsetof(block_q5_0, d), random_scale()); break;
    case DType::Q5_1: put(offsetof(block_q5_1, d), random_scale()); put(offsetof(block_q5_1, m), random_scale()); break;
    case DType::IQ4_NL: put(offsetof(block_iq4_nl, d), random_scale()); break;
    case DType::Q2_K: put(offsetof(block_q2_K, d), random_scale()); put(offsetof(block_q2_K, dmin), random_scale()); break;
    case DType::Q3_K: put(offsetof(block_q3_K, d), random_scale()); break;
    case DType::IQ4_XS: put(offsetof(block_iq4_xs, d), random_scale()); break;
    default: break;
  }
}

// One activation row of k values in the format dtype_activation(t) takes, with consistent
// derived fields (Q8_1's s, Q8_K's bsums).
void random_activation_row(DType act, uint8_t* p, int64_t k) {
  if (act == DType::Q8_K) {
    block_q8_K* x = reinterpret_cast<block_q8_K*>(p);
    for (int64_t b = 0; b < k / kQKK; ++b) {
      x[b].d = std::ldexp((float)(next_u32() % 1000 + 1), -16);
      for (int i = 0; i < kQKK; ++i) x[b].qs[i] = random_q8();
      for (int g = 0; g < kQKK / 16; ++g) {
        int s = 0;
        for (int i = 0; i < 16; ++i) s += x[b].qs[16 * g + i];
        x[b].bsums[g] = (int16_t)s;
      }
    }
  } else if (act == DType::Q8_1) {
    block_q8_1* x = reinterpret_cast<block_q8_1*>(p);
    for (int64_t b = 0; b < k / kQK; ++b) {
      x[b].d = random_scale();
      int s = 0;
      for (int i = 0; i < kQK; ++i) s += (x[b].qs[i] = random_q8());
      x[b].s = float_to_half(half_to_float(x[b].d) * (float)s);
    }
  } else {
    block_q8_0* x = reinterpret_cast<block_q8_0*>(p);
    for (int64_t b = 0; b < k / kQK; ++b) {
      x[b].d = random_scale();
      for (int i = 0; i < kQK; ++i) x[b].qs[i] = random_q8();
    }
  }
}

struct Problem {
  DType type;
  int64_t rows, k, ncols;
  size_t w_row_bytes, x_col_bytes;
  std::vector<uint8_t> w, x;
};

Problem make_problem(DType type, int64_t rows, int64_t k, int64_t ncols) {
  const DType act = dtype_activation(type);
  Problem p{type, rows, k, ncols, dtype_row_bytes(type, k) + 8, dtype_row_bytes(act, k) + 20, {}, {}};
  p.w.assign(p.w_row_bytes * rows, 0xA5);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < k / dtype_block_elems(type); ++b)
      random_weight_block(type, p.w.data() + r * p.w_row_bytes + b * dtype_block_bytes(type));
  p.x.assign(p.x_col_bytes * ncols, 0x5A);
  for (int64_t c = 0; c < ncols; ++c) random_activation_row(act, p.x.data() + c * p.x_col_bytes, k);
  return p;
}

// ---- the scalar statement of each dot product ----------------------------------------------
// value: what y[c][r] must be; magnitude: the sum of |each scaled integer term|, the scale of the
// rounding error a reordered f32 sum may add.
struct Dot {
  double value = 0, magnitude = 0;
  void add(double scale, int64_t isum, int64_t iabs) {
    value += scale * (double)isum;
    magnitude += std::fabs(scale) * (double)iabs;
  }
};

// The 32 codes of a legacy block in x order (weight j: low nibble of qs[j] for j < 16, high
// nibble of qs[j - 16] otherwise; Q5's fifth bit j is bit j of qh little-endian).
void legacy_codes(DType t, const uint8_t* blk, int* q) {
  auto nib = [](const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4; };
  auto bit5 = [](const uint8_t* qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; };
  for (int j = 0; j < kQK; ++j) {
    switch (t) {
      case DType::Q4_1: q[j] = nib(reinterpret_cast<const block_q4_1*>(blk)->qs, j); break;
      case DType::Q5_0: {
        const block_q5_0* b = reinterpret_cast<const block_q5_0*>(blk);
        q[j] = (nib(b->qs, j) | bit5(b->qh, j) << 4) - 16;
        break;
      }
      case DType::Q5_1: {
        const block_q5_1* b = reinterpret_cast<const block_q5_1*>(blk);
        q[j] = nib(b->qs, j) | bit5(b->qh, j) << 4;
        break;
      }
      case DType::IQ4_NL: q[j] = kValuesIq4nl[nib(reinterpret_cast<const block_iq4_nl*>(blk)->qs, j)]; break;
      default: break;
    }
  }
}

// Weight codes (q, of 256) and per-16 sub-block scales (sc, of 16; IQ4_XS repeats each 32-weight
// scale twice) of a super-block, and for Q2_K the mins.
void super_codes(DType t, const uint8_t* blk, int* q, int* sc, int* mins) {
  if (t == DType::Q2_K || t == DType::Q3_K) {
    const uint8_t* qs = t == DType::Q2_K ? reinterpret_cast<const block_q2_K*>(blk)->qs
                                         : reinterpret_cast<const block_q3_K*>(blk)->qs;
    for (int n = 0; n < kQKK; ++n) {
      const int half = n / 128, shift = (n % 128) / 32, l = n % 32;
      q[n] = (qs[32 * half + l] >> (2 * shift)) & 3;
      if (t == DType::Q3_K) {
        const uint8_t* hmask = reinterpret_cast<const block_q3_K*>(blk)->hmask;
        if (!((hmask[l] >> (4 * half + shift)) & 1)) q[n] -= 4;
      }
    }
  }
  if (t == DType::Q2_K) {
    const block_q2_K* b = reinterpret_cast<const block_q2_K*>(blk);
    for (int j = 0; j < 16; ++j) {
      sc[j] = b->scales[j] & 0x0F;
      mins[j] = b->scales[j] >> 4;
    }
  } else if (t == DType::Q3_K) {
    const uint8_t* s = reinterpret_cast<const block_q3_K*>(blk)->scales;
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? s[j] & 0x0F : s[j - 8] >> 4;
      const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
      sc[j] = (low | high << 4) - 32;
    }
  } else {  // IQ4_XS
    const block_iq4_xs* b = reinterpret_cast<const block_iq4_xs*>(blk);
    for (int s = 0; s < 8; ++s) {
      const int ls = ((b->scales_l[s / 2] >> (4 * (s % 2))) & 0x0F) | (((b->scales_h >> (2 * s)) & 3) << 4);
      sc[2 * s] = sc[2 * s + 1] = ls - 32;
      for (int j = 0; j < 32; ++j) {
        const uint8_t byte = b->qs[16 * s + j % 16];
        q[32 * s + j] = kValuesIq4nl[j < 16 ? byte & 0x0F : byte >> 4];
      }
    }
  }
}

Dot expected(const Problem& p, int64_t r, int64_t c) {
  const uint8_t* wrow = p.w.data() + r * p.w_row_bytes;
  const uint8_t* xrow = p.x.data() + c * p.x_col_bytes;
  const size_t wb = dtype_block_bytes(p.type);
  Dot dot;
  if (dtype_block_elems(p.type) == kQK) {
    const bool q8_1 = dtype_activation(p.type) == DType::Q8_1;
    for (int64_t b = 0; b < p.k / kQK; ++b) {
      const uint8_t* blk = wrow + b * wb;
      int q[kQK];
      legacy_codes(p.type, blk, q);
      const int8_t* xq;
      float dx, sx = 0;
      if (q8_1) {
        const block_q8_1& x = reinterpret_cast<const block_q8_1*>(xrow)[b];
        xq = x.qs, dx = half_to_float(x.d), sx = half_to_float(x.s);
      } else {
        const block_q8_0& x = reinterpret_cast<const block_q8_0*>(xrow)[b];
        xq = x.qs, dx = half_to_float(x.d);
      }
      int64_t isum = 0, iabs = 0;
      for (int j = 0; j < kQK; ++j) {
        isum += q[j] * xq[j];
        iabs += std::abs(q[j] * xq[j]);
      }
      uint16_t dh, mh = 0;
      std::memcpy(&dh, blk, 2);  // d is the first field of every legacy block
      if (q8_1) std::memcpy(&mh, blk + 2, 2);  // and m the second of Q4_1 / Q5_1
      dot.add((double)half_to_float(dh) * dx, isum, iabs);
      if (q8_1) dot.add((double)half_to_float(mh) * sx, 1, 1);
    }
    return dot;
  }
  for (int64_t b = 0; b < p.k / kQKK; ++b) {
    const uint8_t* blk = wrow + b * wb;
    const block_q8_K& x = reinterpret_cast<const block_q8_K*>(xrow)[b];
    int q[kQKK], sc[16], mins[16];
    super_codes(p.type, blk, q, sc, mins);
    uint16_t dh;
    switch (p.type) {
      case DType::Q2_K: dh = reinterpret_cast<const block_q2_K*>(blk)->d; break;
      case DType::Q3_K: dh = reinterpret_cast<const block_q3_K*>(blk)->d; break;
      default: dh = reinterpret_cast<const block_iq4_xs*>(blk)->d; break;
    }
    const double d = (double)half_to_float(dh) * x.d;
    for (int j = 0; j < 16; ++j) {
      int64_t isum = 0, iabs = 0;
      for (int l = 0; l < 16; ++l) {
        isum += q[16 * j + l] * x.qs[16 * j + l];
        iabs += std::abs(q[16 * j + l] * x.qs[16 * j + l]);
      }
      dot.add(d * sc[j], isum, iabs);
    }
    if (p.type == DType::Q2_K) {
      const double dmin = (double)half_to_float(reinterpret_cast<const block_q2_K*>(blk)->dmin) * x.d;
      for (int j = 0; j < 16; ++j) dot.add(-dmin * mins[j], x.bsums[j], std::abs(x.bsums[j]));
    }
  }
  return dot;
}

// ---- running and comparing -----------------------------------------------------------------

std::string where(const KernelTable& t, const Problem& p, int64_t r0, int64_t r1, int64_t c) {
  return std::string(t.name) + " " + dtype_name(p.type) + " rows=" + std::to_string(p.rows) +
         " k=" + std::to_string(p.k) + " ncols=" + std::to_string(p.ncols) + " range=[" + std::to_string(r0) +
         "," + std::to_string(r1) + ") col " + std::to_string(c);
}

// Every table computes rows [r0, r1) of columns [c0, c0 + ncols) as the scalar statement does,
// writes them at y_col_stride = stride, and touches no other y.
void check_all_tables(const Problem& p, int64_t r0, int64_t r1, int64_t c0 = 0, int64_t ncols = -1) {
  if (ncols < 0) ncols = p.ncols;
  const int64_t stride = p.rows + 5;
  std::vector<Dot> want((size_t)(ncols * p.rows));
  for (int64_t c = 0; c < ncols; ++c)
    for (int64_t r = r0; r < r1; ++r) want[c * p.rows + r] = expected(p, r, c0 + c);
  for (const KernelTable* t : runnable_kernel_tables()) {
    const GemmFn fn = t->gemm_for(p.type);
    CHECK_MSG(fn != nullptr, std::string(t->name) + " has no GEMM for " + dtype_name(p.type));
    if (!fn) continue;
    std::vector<float> y((size_t)(stride * ncols), NAN);
    GemmArgs a{p.w.data(), p.w_row_bytes, p.k, p.x.data() + c0 * p.x_col_bytes, p.x_col_bytes, ncols, y.data(), stride};
    fn(a, r0, r1);
    for (int64_t c = 0; c < ncols; ++c) {
      int bad = 0, outside = 0;
      std::string first;
      for (int64_t r = 0; r < stride; ++r) {
        const float got = y[c * stride + r];
        if (r < r0 || r >= r1) {
          outside += !std::isnan(got);
          continue;
        }
        const Dot& d = want[c * p.rows + r];
        const double tol = kRtol * d.magnitude + 1e-30;
        if (!(std::fabs((double)got - d.value) <= tol) && bad++ == 0) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "row %lld: got %.9g, want %.9g (tol %.3g)", (long long)r, (double)got,
                        d.value, tol);
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

TEST(gemm, other_formats_one_block_all_column_counts) {
  for (DType t : kTypes)
    for (int64_t ncols : {1, 2, 3, 4, 5, 6, 7, 8, 13, 64}) check_all_tables(make_problem(t, 1, block_k(t), ncols), 0, 1);
}

// Odd block counts leave a lone last block after the 32-weight pairs; k = 256 * odd for the
// super-block formats. Rows 1, 3, 5, 7, 33 are not multiples of the 2-row or 4-row tiles.
TEST(gemm, other_formats_odd_blocks_and_rows) {
  for (DType t : kTypes)
    for (int64_t blocks : {3, 5})
      for (int64_t rows : {1, 3, 5, 7, 33})
        for (int64_t ncols : {1, 2, 5, 8}) check_all_tables(make_problem(t, rows, blocks * block_k(t), ncols), 0, rows);
}

TEST(gemm, other_formats_row_sub_ranges) {
  for (DType t : kTypes)
    for (int64_t ncols : {1, 3, 4, 13}) {
      const Problem p = make_problem(t, 37, 3 * block_k(t), ncols);
      check_all_tables(p, 5, 30);
      check_all_tables(p, 1, 2);
      check_all_tables(p, 29, 37);
      if (ncols > 2) check_all_tables(p, 0, 37, 2, ncols - 2);  // columns from the middle of X
    }
}

// Wide rows as in real models (k = 11008 = 43 * 256, 4864 = 19 * 256) and the 64-column GEMM.
TEST(gemm, other_formats_wide_rows_and_64_columns) {
  for (DType t : kTypes)
    for (int64_t k : {4864, 11008})
      for (int64_t ncols : {1, 4, 7, 64}) check_all_tables(make_problem(t, 6, k, ncols), 0, 6);
}

// The scalar statement must see a wrong kernel: one code changed by one step in a row of 2816
// moves the result beyond the tolerance (for most positions; a small activation can hide it).
TEST(gemm, other_formats_tolerance_detects_one_changed_code) {
  for (DType t : kTypes) {
    const Problem p = make_problem(t, 1, 2816, 1);
    const Dot base = expected(p, 0, 0);
    int detected = 0;
    const int trials = 20;
    for (int trial = 0; trial < trials; ++trial) {
      Problem q = p;
      const int64_t nblocks = p.k / block_k(t);
      const size_t off = (size_t)((trial * 7919) % nblocks) * dtype_block_bytes(t);
      // A byte in the code area of the block (past the f16 fields of the legacy formats, in qs
      // of the super-block ones), changed in its lowest code bit.
      size_t code_byte;
      switch (t) {
        case DType::Q4_1: code_byte = offsetof(block_q4_1, qs); break;
        case DType::Q5_0: code_byte = offsetof(block_q5_0, qs); break;
        case DType::Q5_1: code_byte = offsetof(block_q5_1, qs); break;
        case DType::IQ4_NL: code_byte = offsetof(block_iq4_nl, qs); break;
        case DType::Q2_K: code_byte = offsetof(block_q2_K, qs); break;
        case DType::Q3_K: code_byte = offsetof(block_q3_K, qs); break;
        default: code_byte = offsetof(block_iq4_xs, qs); break;
      }
      q.w[off + code_byte + trial % 16] ^= 0x01;
      const Dot moved = expected(q, 0, 0);
      if (std::fabs(moved.value - base.value) > kRtol * base.magnitude) ++detected;
    }
    CHECK_MSG(detected >= trials * 3 / 4, std::string(dtype_name(t)) + ": only " + std::to_string(detected) +
                                              " of 20 changed codes detected");
  }
}
