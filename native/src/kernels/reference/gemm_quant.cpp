// Reference GEMMs of the weight formats beyond Q4_0 / Q8_0: the definition every fast path is
// held to. Per row, column and block: the integer dot product of the weight codes with the
// activation codes (quant/unpack.h decodes the weights), scaled as ggml's
// ggml_vec_dot_<type>_<activation> scales it; the blocks' f32 results are summed in block order.
//
//   Q5_0, IQ4_NL  x Q8_0:  d_w * d_x * isum
//   Q4_1, Q5_1    x Q8_1:  d_w * d_x * isum + m_w * s_x           (s_x = d_x * sum of x codes)
//   K-quants, IQ4_XS x Q8_K, per 256-weight super-block with sub-block scales sc_s, mins m_s:
//                          (d_w * d_x) * sum_s sc_s * isum_s - (dmin_w * d_x) * sum_s m_s * bsum_s
//   where bsum_s is the sum of the activation codes under sub-block s (from Q8_K's bsums) and
//   the min term exists for Q2_K, Q4_K and Q5_K only.
// ggml's scalar code applies some sub-block scales in f32 (Q3_K, Q6_K in 8 lanes, IQ4_XS per
// 32); here the whole super-block sum is an exact integer (|sum| < 2^28 for every format), which
// is the same value up to f32 rounding.
#include <algorithm>

#include "kernels/reference/reference.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant/unpack.h"

namespace edgellm::ref {

void quantize_row_q8_1(const float* x, block_q8_1* y, int64_t n) { quantize_row_q8_1_ref(x, y, n); }
void quantize_row_q8_k(const float* x, block_q8_K* y, int64_t n) { quantize_row_q8_K_ref(x, y, n); }

namespace {

template <class X>
const X* x_col(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const X*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}

int32_t dot32(const int8_t* w, const int8_t* x, int n) {
  int32_t s = 0;
  for (int j = 0; j < n; ++j) s += (int32_t)w[j] * (int32_t)x[j];
  return s;
}

// Rows [r0, r1): each weight block is decoded once (Decode fills `State`) per group of up to
// kMaxGemmCols columns, then dotted with the same block of every column of the group (Dot gives
// that block's f32 term); column sums run in block order. (ncols may exceed kMaxGemmCols here:
// the tests take one reference call over all columns as the expected result.)
template <class W, class X, class State, int BlockElems, void (*Decode)(const W&, State*),
          float (*Dot)(const W&, const State&, const X&)>
void gemm_blocks(const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / BlockElems;
  float sum[kMaxGemmCols];
  State state;
  for (int64_t r = r0; r < r1; ++r) {
    const W* w = reinterpret_cast<const W*>(a.w + r * a.w_row_bytes);
    for (int64_t c0 = 0; c0 < a.ncols; c0 += kMaxGemmCols) {
      const int64_t n = std::min<int64_t>(kMaxGemmCols, a.ncols - c0);
      for (int64_t c = 0; c < n; ++c) sum[c] = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        Decode(w[b], &state);
        for (int64_t c = 0; c < n; ++c) sum[c] += Dot(w[b], state, x_col<X>(a, c0 + c)[b]);
      }
      for (int64_t c = 0; c < n; ++c) a.y[(c0 + c) * a.y_col_stride + r] = sum[c];
    }
  }
}

// ---- 32-weight blocks ------------------------------------------------------------------------

struct Codes32 {
  int8_t code[kQK];
};

template <class W, void (*Unpack)(const W&, int8_t*)>
void decode32(const W& w, Codes32* s) {
  Unpack(w, s->code);
}

// Q5_0, IQ4_NL x Q8_0.
template <class W>
float dot_scaled(const W& w, const Codes32& s, const block_q8_0& x) {
  return (half_to_float(w.d) * half_to_float(x.d)) * (float)dot32(s.code, x.qs, kQK);
}

// Q4_1, Q5_1 x Q8_1: the minimum m times the activation block's sum s_x.
template <class W>
float dot_with_min(const W& w, const Codes32& s, const block_q8_1& x) {
  return (half_to_float(w.d) * half_to_float(x.d)) * (float)dot32(s.code, x.qs, kQK) +
         half_to_float(w.m) * half_to_float(x.s);
}

// ---- 256-weight super-blocks x Q8_K ------------------------------------------------------------

template <class W, void (*Unpack)(const W&, SuperBlockCodes*)>
void decode_super(const W& w, SuperBlockCodes* u) {
  Unpack(w, u);
}

template <class W>
float dot_super(const W&, const SuperBlockCodes& u, const block_q8_K& x) {
  const int n_sub = kQKK / u.sub_len;
  const int bsums_per_sub = u.sub_len / 16;
  int32_t isum = 0, msum = 0;
  for (int s = 0; s < n_sub; ++s) {
    isum += u.scale[s] * dot32(u.code + s * u.sub_len, x.qs + s * u.sub_len, u.sub_len);
    if (u.has_min) {
      int32_t bsum = 0;
      for (int g = 0; g < bsums_per_sub; ++g) bsum += x.bsums[s * bsums_per_sub + g];
      msum += u.min[s] * bsum;
    }
  }
  const float term = (u.d * x.d) * (float)isum;
  return u.has_min ? term - (u.dmin * x.d) * (float)msum : term;
}

}  // namespace

void gemm_q4_1(const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_blocks<block_q4_1, block_q8_1, Codes32, kQK, decode32<block_q4_1, unpack_q4_1>, dot_with_min<block_q4_1>>(a, r0, r1);
}
void gemm_q5_0(const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_blocks<block_q5_0, block_q8_0, Codes32, kQK, decode32<block_q5_0, unpack_q5_0>, dot_scaled<block_q5_0>>(a, r0, r1);
}
void gemm_q5_1(const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_blocks<block_q5_1, block_q8_1, Codes32, kQK, decode32<block_q5_1, unpack_q5_1>, dot_with_min<block_q5_1>>(a, r0, r1);
}
void gemm_iq4_nl(const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_blocks<block_iq4_nl, block_q8_0, Codes32, kQK, decode32<block_iq4_nl, unpack_iq4_nl>,
              dot_scaled<block_iq4_nl>>(a, r0, r1);
}

template <class W, void (*Unpack)(const W&, SuperBlockCodes*)>
static void gemm_super(const GemmArgs& a, int64_t r0, int64_t r1) {
  gemm_blocks<W, block_q8_K, SuperBlockCodes, kQKK, decode_super<W, Unpack>, dot_super<W>>(a, r0, r1);
}

void gemm_q2_k(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_q2_K, unpack_q2_K>(a, r0, r1); }
void gemm_q3_k(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_q3_K, unpack_q3_K>(a, r0, r1); }
void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_q4_K, unpack_q4_K>(a, r0, r1); }
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_q5_K, unpack_q5_K>(a, r0, r1); }
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_q6_K, unpack_q6_K>(a, r0, r1); }
void gemm_iq4_xs(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_super<block_iq4_xs, unpack_iq4_xs>(a, r0, r1); }

}  // namespace edgellm::ref
