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
    // Not yet implemented: the reference kernels of the other types land first.
    nullptr,  // quantize_row_q8_1: ref::
    nullptr,  // quantize_row_q8_k: ref::
    nullptr,  // gemm_q4_1: ref::
    nullptr,  // gemm_q5_0: ref::
    nullptr,  // gemm_q5_1: ref::
    nullptr,  // gemm_iq4_nl: ref::
    nullptr,  // gemm_q2_k: ref::
    nullptr,  // gemm_q3_k: ref::
    nullptr,  // gemm_q4_k: ref::
    nullptr,  // gemm_q5_k: ref::
    nullptr,  // gemm_q6_k: ref::
    nullptr,  // gemm_iq4_xs: ref::
};

}  // namespace edgellm
