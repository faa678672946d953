// Plain C++ reference kernels: the definition of what every fast path must compute.
#pragma once
#include "kernels/kernels.h"

namespace edgellm::ref {
#include "kernels/kernel_decls.inc"
// Over Q4_0_X4 weights (quant/repack.h): a.w holds whole 4-row groups; any rows [r0, r1).
void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1);
// Over Q4_K_X4 weights, the same way.
void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
}  // namespace edgellm::ref
