#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"
#include "sys/cpu_features.h"

namespace edgellm {

GemmFn KernelTable::gemm_for(DType t) const {
  switch (t) {
    case DType::Q4_0: return gemm_q4_0;
    case DType::Q8_0: return gemm_q8_0;
    case DType::F16: return gemm_f16;
    case DType::BF16: return gemm_bf16;
    case DType::F32: return gemm_f32;
    case DType::Q4_1: return gemm_q4_1;
    case DType::Q5_0: return gemm_q5_0;
    case DType::Q5_1: return gemm_q5_1;
    case DType::IQ4_NL: return gemm_iq4_nl;
    case DType::Q2_K: return gemm_q2_k;
    case DType::Q3_K: return gemm_q3_k;
    case DType::Q4_K: return gemm_q4_k;
    case DType::Q5_K: return gemm_q5_k;
    case DType::Q6_K: return gemm_q6_k;
    case DType::IQ4_XS: return gemm_iq4_xs;
    case DType::Q4_0_X4: return gemm_q4_0_x4;
    case DType::Q4_K_X4: return gemm_q4_k_x4;
    case DType::Q6_K_X4: return gemm_q6_k_x4;
    case DType::Q8_1: case DType::Q8_K: return nullptr;  // activation formats
  }
  return nullptr;
}

std::vector<const KernelTable*> runnable_kernel_tables() {
  std::vector<const KernelTable*> out{&kReferenceKernels};
  const CpuFeatures& f = cpu_features();
  (void)f;
#if defined(__x86_64__)
  if (f.avx2 && f.fma && f.f16c) out.push_back(&kAvx2Kernels);
  if (f.avx2 && f.fma && f.f16c && f.avx512vnni) out.push_back(&kAvx512Kernels);
#endif
#if defined(__aarch64__)
  out.push_back(&kNeonKernels);
  if (f.dotprod) out.push_back(&kNeonDotprodKernels);
#endif
  return out;
}

static const KernelTable& choose() {
  auto tables = runnable_kernel_tables();
  const char* forced = std::getenv("EDGELLM_KERNELS");
  if (forced && *forced) {
    for (const KernelTable* t : tables)
      if (std::strcmp(t->name, forced) == 0) return *t;
    throw std::runtime_error(std::string("EDGELLM_KERNELS=") + forced +
                             " is not runnable on this CPU; use one of: reference" +
#if defined(__x86_64__)
                             ", avx2 (needs AVX2+FMA+F16C), avx512 (needs AVX-512 F/BW/VL/VNNI with OS zmm support)"
#elif defined(__aarch64__)
                             ", neon, neon-dotprod (needs ARMv8.2 dotprod)"
#else
                             ""
#endif
    );
  }
  return *tables.back();  // the most capable one
}

const KernelTable& kernels() {
  static const KernelTable& t = choose();
  return t;
}

const KernelTable& reference_kernels() { return kReferenceKernels; }

void rope_cache(int64_t pos, int64_t n_rot, float base, float freq_scale, float* cs) {
  const float theta_scale = std::pow(base, -2.0f / (float)n_rot);
  float theta_base = (float)pos;
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const float theta = freq_scale * theta_base;
    cs[2 * i] = std::cos(theta);
    cs[2 * i + 1] = std::sin(theta);
    theta_base *= theta_scale;
  }
}

}  // namespace edgellm
