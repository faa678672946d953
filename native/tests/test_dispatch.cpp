// Every fast table must carry its own implementation of every kernel: a fast path that quietly
// falls back to the reference would pass every comparison test and be slow.
#include <cstring>

#include "kernels/kernels.h"
#include "sys/cpu_features.h"
#include "test.h"

using namespace edgellm;

namespace {

// The table's entries as raw pointers, in declaration order (isa and name excluded).
std::vector<const void*> entries(const KernelTable& t) {
  return {(const void*)t.quantize_row_q8_0, (const void*)t.gemm_q4_0, (const void*)t.gemm_q8_0,
          (const void*)t.gemm_f16,          (const void*)t.gemm_bf16, (const void*)t.gemm_f32,
          (const void*)t.f32_to_f16,        (const void*)t.f16_to_f32, (const void*)t.rmsnorm,
          (const void*)t.rope,              (const void*)t.swiglu,    (const void*)t.geglu,
          (const void*)t.softmax,           (const void*)t.add,       (const void*)t.scale,
          (const void*)t.route_topk,        (const void*)t.attention,
          (const void*)t.quantize_row_q8_1, (const void*)t.quantize_row_q8_k,
          (const void*)t.gemm_q4_1,         (const void*)t.gemm_q5_0, (const void*)t.gemm_q5_1,
          (const void*)t.gemm_iq4_nl,       (const void*)t.gemm_q2_k, (const void*)t.gemm_q3_k,
          (const void*)t.gemm_q4_k,         (const void*)t.gemm_q5_k, (const void*)t.gemm_q6_k,
          (const void*)t.gemm_iq4_xs};
}
const char* kEntryNames[] = {"quantize_row_q8_0", "gemm_q4_0", "gemm_q8_0", "gemm_f16", "gemm_bf16",
                             "gemm_f32",          "f32_to_f16", "f16_to_f32", "rmsnorm", "rope",
                             "swiglu",            "geglu",     "softmax",   "add",      "scale",
                             "route_topk",        "attention", "quantize_row_q8_1", "quantize_row_q8_k",
                             "gemm_q4_1", "gemm_q5_0", "gemm_q5_1", "gemm_iq4_nl", "gemm_q2_k", "gemm_q3_k",
                             "gemm_q4_k", "gemm_q5_k", "gemm_q6_k", "gemm_iq4_xs"};
static_assert(sizeof(kEntryNames) / sizeof(kEntryNames[0]) == 29, "one name per table entry");

void check_no_reference_entries(const KernelTable& t) {
  auto ref = entries(kReferenceKernels);
  auto fast = entries(t);
  for (size_t i = 0; i < fast.size(); ++i) {
    CHECK_MSG(fast[i] != nullptr, std::string(t.name) + "." + kEntryNames[i] + " is null");
    CHECK_MSG(fast[i] != ref[i], std::string(t.name) + "." + kEntryNames[i] + " is still the reference kernel");
  }
}

}  // namespace

TEST(dispatch, reference_table_is_complete) {
  auto ref = entries(kReferenceKernels);
  for (size_t i = 0; i < ref.size(); ++i) CHECK_MSG(ref[i] != nullptr, std::string("reference.") + kEntryNames[i] + " is null");
  // Every weight type has a GEMM, and every quantized one an activation quantizer.
  for (DType t : kWeightTypes) CHECK_MSG(kReferenceKernels.gemm_for(t) != nullptr, std::string("no GEMM for ") + dtype_name(t));
  CHECK(std::strcmp(reference_kernels().name, "reference") == 0);
}

TEST(dispatch, fast_tables_have_their_own_kernels) {
#if defined(__x86_64__)
  check_no_reference_entries(kAvx2Kernels);
  check_no_reference_entries(kAvx512Kernels);
  // The avx512 table differs from the avx2 one in the Q4_0 GEMM and the Q4_K/Q5_K/Q6_K ones.
  CHECK(kAvx512Kernels.gemm_q4_0 != kAvx2Kernels.gemm_q4_0);
  CHECK(kAvx512Kernels.gemm_q4_k != kAvx2Kernels.gemm_q4_k);
  CHECK(kAvx512Kernels.gemm_q5_k != kAvx2Kernels.gemm_q5_k);
  CHECK(kAvx512Kernels.gemm_q6_k != kAvx2Kernels.gemm_q6_k);
#endif
#if defined(__aarch64__)
  check_no_reference_entries(kNeonKernels);
  // The dotprod table differs from the NEON one exactly in the integer GEMMs.
  CHECK(kNeonDotprodKernels.gemm_q4_0 != kNeonKernels.gemm_q4_0);
  CHECK(kNeonDotprodKernels.gemm_q8_0 != kNeonKernels.gemm_q8_0);
  CHECK(kNeonDotprodKernels.gemm_q4_0 != kReferenceKernels.gemm_q4_0);
  CHECK(kNeonDotprodKernels.gemm_q8_0 != kReferenceKernels.gemm_q8_0);
  // ... and in every other quantized weight type's GEMM.
  for (DType t : kWeightTypes) {
    if (dtype_block_elems(t) == 1) continue;
    CHECK_MSG(kNeonDotprodKernels.gemm_for(t) != kNeonKernels.gemm_for(t),
              std::string("neon-dotprod's ") + dtype_name(t) + " GEMM is the plain NEON one");
    CHECK_MSG(kNeonDotprodKernels.gemm_for(t) != kReferenceKernels.gemm_for(t),
              std::string("neon-dotprod's ") + dtype_name(t) + " GEMM is the reference one");
  }
  // The layouts repacked at load (quant/repack.h): the dotprod table's sdot kernels over them,
  // the plain table's through its own row GEMMs; neither is the reference.
  for (DType t : {DType::Q4_0_X4, DType::Q4_K_X4, DType::Q6_K_X4}) {
    CHECK_MSG(kNeonDotprodKernels.gemm_for(t) != nullptr, std::string("neon-dotprod has no ") + dtype_name(t) + " GEMM");
    CHECK_MSG(kNeonDotprodKernels.gemm_for(t) != kNeonKernels.gemm_for(t),
              std::string("neon-dotprod's ") + dtype_name(t) + " GEMM is the plain NEON one");
    CHECK_MSG(kNeonDotprodKernels.gemm_for(t) != kReferenceKernels.gemm_for(t),
              std::string("neon-dotprod's ") + dtype_name(t) + " GEMM is the reference one");
    CHECK_MSG(kNeonKernels.gemm_for(t) != nullptr && kNeonKernels.gemm_for(t) != kReferenceKernels.gemm_for(t),
              std::string("neon's ") + dtype_name(t) + " GEMM is missing or the reference one");
  }
#endif
  // Only the tables that repack carry the repacked GEMMs, and then all of them.
  for (const KernelTable* t : runnable_kernel_tables())
    CHECK_MSG((t->gemm_q4_0_x4 == nullptr) == (t->gemm_q4_k_x4 == nullptr) &&
                  (t->gemm_q4_0_x4 == nullptr) == (t->gemm_q6_k_x4 == nullptr),
              std::string(t->name) + " has some repacked GEMMs without the others");
}

TEST(dispatch, picks_the_most_capable_runnable_table) {
  auto tables = runnable_kernel_tables();
  CHECK(tables.front() == &kReferenceKernels);
  const CpuFeatures& f = cpu_features();
  (void)f;
#if defined(__x86_64__)
  if (f.avx2 && f.fma && f.f16c) CHECK(tables.back() == (f.avx512vnni ? &kAvx512Kernels : &kAvx2Kernels));
#endif
#if defined(__aarch64__)
  CHECK(tables.back() == (f.dotprod ? &kNeonDotprodKernels : &kNeonKernels));
#endif
  if (!std::getenv("EDGELLM_KERNELS")) CHECK(&kernels() == tables.back());
}

TEST(dispatch, rope_cache_matches_the_formula) {
  float cs[8];
  rope_cache(3, 8, 10000.0f, 1.0f, cs);
  for (int i = 0; i < 4; ++i) {
    const double theta = 3.0 * std::pow(10000.0, -2.0 * i / 8.0);
    CHECK(std::fabs(cs[2 * i] - std::cos(theta)) < 1e-5);
    CHECK(std::fabs(cs[2 * i + 1] - std::sin(theta)) < 1e-5);
  }
}
