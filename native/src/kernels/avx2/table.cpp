// The avx2 table, one entry per line in the order of KernelTable (kernels.h). Every entry must
// name a avx2:: function: test_dispatch.cpp fails if any points at the reference.
#include "kernels/avx2/avx2.h"

namespace edgellm {

const KernelTable kAvx2Kernels = {
    Isa::Avx2, "avx2",
    avx2::quantize_row_q8_0,
    avx2::gemm_q4_0,
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
    avx2::attention,
    // The other weight types (quant/blocks.h) and their activation quantizers.
    avx2::quantize_row_q8_1,
    avx2::quantize_row_q8_k,
    avx2::gemm_q4_1,
    avx2::gemm_q5_0,
    avx2::gemm_q5_1,
    avx2::gemm_iq4_nl,
    avx2::gemm_q2_k,
    avx2::gemm_q3_k,
    avx2::gemm_q4_k,
    avx2::gemm_q5_k,
    avx2::gemm_q6_k,
    avx2::gemm_iq4_xs,
    nullptr,  // gemm_q4_0_x4: Q4_0 runs as the file stores it (no repack on x86)
    nullptr,  // gemm_q4_k_x4: the same for Q4_K
    nullptr,  // gemm_q6_k_x4: and Q6_K
};

}  // namespace edgellm
