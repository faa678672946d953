// The avx2 table, one entry per line in the order of KernelTable (kernels.h). Every entry must
// name a avx2:: function: test_dispatch.cpp fails while any still points at ref::.
#include "kernels/avx2/avx2.h"
#include "kernels/reference/reference.h"

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
    ref::rmsnorm,
    ref::rope,
    ref::swiglu,
    ref::geglu,
    ref::softmax,
    ref::add,
    ref::scale,
    ref::route_topk,
    ref::attention,
};

}  // namespace edgellm
