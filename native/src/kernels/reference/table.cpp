// The reference table, one entry per line in the order of KernelTable (kernels.h).
#include "kernels/reference/reference.h"

namespace edgellm {

const KernelTable kReferenceKernels = {
    Isa::Reference, "reference",
    ref::quantize_row_q8_0,
    ref::gemm_q4_0,
    ref::gemm_q8_0,
    ref::gemm_f16,
    ref::gemm_bf16,
    ref::gemm_f32,
    ref::f32_to_f16,
    ref::f16_to_f32,
    ref::rmsnorm,
    ref::rope,
    ref::swiglu,
    ref::geglu,
    ref::softmax,
    ref::add,
    ref::scale,
    ref::route_topk,
    ref::attention,
    ref::quantize_row_q8_1,
    ref::quantize_row_q8_k,
    ref::gemm_q4_1,
    ref::gemm_q5_0,
    ref::gemm_q5_1,
    ref::gemm_iq4_nl,
    ref::gemm_q2_k,
    ref::gemm_q3_k,
    ref::gemm_q4_k,
    ref::gemm_q5_k,
    ref::gemm_q6_k,
    ref::gemm_iq4_xs,
    ref::gemm_q4_0_x4,
    ref::gemm_q4_k_x4,
    ref::gemm_q6_k_x4,
};

}  // namespace edgellm
