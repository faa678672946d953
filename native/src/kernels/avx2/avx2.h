// x86-64 fast paths, compiled with -mavx2 -mfma -mf16c (only called when the CPU has all three).
#pragma once
#include "kernels/kernels.h"

namespace edgellm::avx2 {
#include "kernels/kernel_decls.inc"
// Q4_0 with 2-3 columns in the decode tiling (gemm_q4_0 hands those to it).
void gemm_q4_0_few_cols(const GemmArgs& a, int64_t r0, int64_t r1);
// Q4_0 with the columns in the vector lanes (gemm_q4_0_lanes.cpp; gemm_q4_0 hands it 4 or more
// columns).
void gemm_q4_0_lanes(const GemmArgs& a, int64_t r0, int64_t r1);
// Q4_K / Q6_K with 16 rows in the vector lanes (gemm_kquants_rows.cpp): whole tiles of 16 rows
// from r0 (rows past the last whole tile are left alone); gemm_q4_k / gemm_q6_k hand it the
// column counts where it measured faster (gemm_kquants.cpp).
void gemm_q4_k_rows(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k_rows(const GemmArgs& a, int64_t r0, int64_t r1);
}  // namespace edgellm::avx2
