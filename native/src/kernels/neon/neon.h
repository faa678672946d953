// aarch64 fast paths. Everything in neon:: runs on any ARMv8-A (Cortex-A72, Pi 4).
// neon_dotprod:: holds the integer GEMMs built for armv8.2-a+dotprod (files *_dotprod.cpp),
// used only when the CPU reports HWCAP_ASIMDDP (Cortex-A76, Pi 5).
#pragma once
#include "kernels/kernels.h"

namespace edgellm::neon {
#include "kernels/kernel_decls.inc"
// Q4_0_X4 / Q4_K_X4 / Q6_K_X4 through the plain Q4_0 / Q4_K / Q6_K GEMMs (quant/repack.h;
// only the dotprod table repacks).
void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
}  // namespace edgellm::neon

namespace edgellm::neon_dotprod {
void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1);
// The 32-weight-block types (gemm_dotprod.cpp).
void gemm_q4_1(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q5_0(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q5_1(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_iq4_nl(const GemmArgs& a, int64_t r0, int64_t r1);
// The Q8_K-activation types (gemm_k_dotprod.cpp).
void gemm_q2_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q3_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_iq4_xs(const GemmArgs& a, int64_t r0, int64_t r1);
// Q4_0, Q4_K and Q6_K repacked at load to Q4_0_X4, Q4_K_X4 and Q6_K_X4
// (gemm_repacked_dotprod.cpp).
void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1);
}  // namespace edgellm::neon_dotprod
