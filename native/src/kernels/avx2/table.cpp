// The avx2 table, one entry per line in the order of KernelTable (kernels.h). Every entry must
// name a avx2:: function: test_dispatch.cpp fails while any still points at ref::.
#include "kernels/avx2/avx2.h"
#include "kernels/reference/reference.h"

namespace edgellm {

const KernelTable kAvx2Kernels = {
    Isa::Avx2, "avx2",
    ref::quantize_row_q8_0,
    ref::gemm_q4_0,
    ref::gemm_q8_0,
    ref::gemm_f16,
    ref::gemm_bf16,
    ref::gemm_f32,
    ref::f32_to_f16,
    ref::f16_to_f32,
    avx2::rmsnorm,
    avx2::rope,
    avx2::swiglu,
    avx2::geglu,
    avx2::softmax,
    avx2::add,
    avx2::scale,
    avx2::route_topk,
    avx2::attention,
};

}  // namespace edgellm
