// The neon table, one entry per line in the order of KernelTable (kernels.h). Every entry must
// name a neon:: function: test_dispatch.cpp fails if any points at the reference.
#include "kernels/neon/neon.h"

namespace edgellm {

const KernelTable kNeonKernels = {
    Isa::Neon, "neon",
    neon::quantize_row_q8_0,
    neon::gemm_q4_0,
    neon::gemm_q8_0,
    neon::gemm_f16,
    neon::gemm_bf16,
    neon::gemm_f32,
    neon::f32_to_f16,
    neon::f16_to_f32,
    neon::rmsnorm,
    neon::rope,
    neon::swiglu,
    neon::geglu,
    neon::softmax,
    neon::add,
    neon::scale,
    neon::route_topk,
    neon::attention,
    // The other weight types (quant/blocks.h) and their activation quantizers.
    neon::quantize_row_q8_1,
    neon::quantize_row_q8_k,
    neon::gemm_q4_1,
    neon::gemm_q5_0,
    neon::gemm_q5_1,
    neon::gemm_iq4_nl,
    neon::gemm_q2_k,
    neon::gemm_q3_k,
    neon::gemm_q4_k,
    neon::gemm_q5_k,
    neon::gemm_q6_k,
    neon::gemm_iq4_xs,
    neon::gemm_q4_0_x4,  // only the dotprod table repacks Q4_0, Q4_K and Q6_K; see quant/repack.h
    neon::gemm_q4_k_x4,
    neon::gemm_q6_k_x4,
};

// NEON everywhere, with the sdot GEMMs for the quantized types.
static KernelTable make_dotprod_table() {
  KernelTable t = kNeonKernels;
  t.isa = Isa::NeonDotprod;
  t.name = "neon-dotprod";
  t.gemm_q4_0 = neon_dotprod::gemm_q4_0;
  t.gemm_q8_0 = neon_dotprod::gemm_q8_0;
  t.gemm_q4_1 = neon_dotprod::gemm_q4_1;
  t.gemm_q5_0 = neon_dotprod::gemm_q5_0;
  t.gemm_q5_1 = neon_dotprod::gemm_q5_1;
  t.gemm_iq4_nl = neon_dotprod::gemm_iq4_nl;
  t.gemm_q2_k = neon_dotprod::gemm_q2_k;
  t.gemm_q3_k = neon_dotprod::gemm_q3_k;
  t.gemm_q4_k = neon_dotprod::gemm_q4_k;
  t.gemm_q5_k = neon_dotprod::gemm_q5_k;
  t.gemm_q6_k = neon_dotprod::gemm_q6_k;
  t.gemm_iq4_xs = neon_dotprod::gemm_iq4_xs;
  t.gemm_q4_0_x4 = neon_dotprod::gemm_q4_0_x4;
  t.gemm_q4_k_x4 = neon_dotprod::gemm_q4_k_x4;
  t.gemm_q6_k_x4 = neon_dotprod::gemm_q6_k_x4;
  return t;
}
const KernelTable kNeonDotprodKernels = make_dotprod_table();

}  // namespace edgellm
