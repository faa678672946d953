// Reference GEMM over repacked weights: each group back to its 4 Q4_0 rows, then the Q4_0
// reference, so a repacked kernel is held to exactly what the file's Q4_0 weights compute.
#include "kernels/reference/reference.h"
#include "quant/repack.h"

namespace edgellm::ref {

void gemm_q4_0_x4(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_q4_0_x4_via_rows(gemm_q4_0, a, r0, r1); }

}  // namespace edgellm::ref
