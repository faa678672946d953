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
}  // namespace edgellm::avx2
