// The avx512 table: the avx2 table (kernels/avx2/) with the AVX-512 VNNI kernels in place of
// the avx2 ones where they exist. One entry per line in the order of KernelTable (kernels.h).
// Spelled out rather than copied from kAvx2Kernels at start-up (as neon-dotprod is): this file
// is compiled with AVX-512 flags, so code run here at static initialization could use zmm
// instructions on a CPU without them; a constant initializer runs no code.
#include "kernels/avx2/avx2.h"
#include "kernels/avx512/avx512.h"

namespace edgellm {

const KernelTable kAvx512Kernels = {
    Isa::Avx512, "avx512",
    avx2::quantize_row_q8_0,
    avx512::gemm_q4_0,
    avx2::gemm_q8_0,
    avx2::gemm_f16,
    avx2::gemm_bf16,
    avx2::gemm_f32,
    avx2::f32_to_f16,
    avx2::f16_to_f32,
    avx2::rmsnorm,
    avx2::rope,
    avx2::swiglu,
    avx2::geglu,
    avx2::softmax,
    avx2::add,
    avx2::scale,
    avx2::route_topk,
    avx512::attention,
    // The other weight types (quant/blocks.h) and their activation quantizers.
    avx2::quantize_row_q8_1,
    avx2::quantize_row_q8_k,
    avx2::gemm_q4_1,
    avx2::gemm_q5_0,
    avx2::gemm_q5_1,
    avx2::gemm_iq4_nl,
    avx2::gemm_q2_k,
    avx2::gemm_q3_k,
    avx512::gemm_q4_k,
    avx512::gemm_q5_k,
    avx512::gemm_q6_k,
    avx2::gemm_iq4_xs,
    nullptr,  // gemm_q4_0_x4: Q4_0 runs as the file stores it (no repack on x86)
    nullptr,  // gemm_q4_k_x4: the same for Q4_K
    nullptr,  // gemm_q6_k_x4: and Q6_K
};

}  // namespace edgellm
