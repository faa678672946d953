// Reference GEMMs over repacked weights: each Q4_0_X4 group back to its 4 Q4_0 rows, then the Q4_0
// reference (Q4_K_X4 / Q6_K_X4: its 4 Q4_K / Q6_K rows, then that reference), so a repacked kernel is held to
// exactly what the file's weights compute.
#include "kernels/reference/reference.h"
#include "quant/repack.h"

namespace edgellm::ref {

void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q4_0_x4_via_rows(gemm_q4_0, a, r0, r1); }
void gemm_q4_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q4_k_x4_via_rows(gemm_q4_k, a, r0, r1); }
void gemm_q6_k_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q6_k_x4_via_rows(gemm_q6_k, a, r0, r1); }

}  // namespace edgellm::ref
