// The reference layer against ggml itself: node-llama-cpp's prebuilt libggml-base.so and
// libggml-cpu-x64.so (the CPU backend built for plain x86-64) export ggml's dequantize_row_*,
// quantize_row_q8_1_ref / q8_K_ref and the scalar ggml_vec_dot_<type>_<activation>_generic, so
// on random valid blocks of every quantized weight type:
//   - edgellm's dequantizers give ggml's f32 values bit for bit,
//   - the Q8_1 / Q8_K activation quantizers give ggml's bytes,
//   - the reference GEMM gives ggml's vec_dot (bit for bit where ggml sums in integers; within
//     f32 rounding where ggml applies sub-block scales in float: Q3_K, Q4_K..Q6_K, IQ4_XS).
// x86-64 only (the libraries are). Without node_modules (a worktree, or before `npm install`)
// the test prints a SKIPPED line, and fails when CI=true.
#if defined(__x86_64__)
#include <dlfcn.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

// ggml's signatures (ggml-cpu/quants.h, ggml-quants.h of the release node-llama-cpp bundles).
using DequantizeFn = void (*)(const void* x, float* y, int64_t k);
using QuantizeFn = void (*)(const float* x, void* y, int64_t k);
using VecDotFn = void (*)(int n, float* s, size_t bs, const void* vx, size_t bx, const void* vy, size_t by, int nrc);

// $EDGELLM_LLAMA_LIB_DIR, else node_modules next to the source tree; "" after the skip line.
std::string ggml_lib_dir() {
  const char* env = std::getenv("EDGELLM_LLAMA_LIB_DIR");
  const std::string dir = env && *env ? std::string(env)
                                      : std::string(EDGELLM_NODE_MODULES_DIR) + "/@node-llama-cpp/linux-x64/bins/linux-x64";
  struct stat st;
  if (stat((dir + "/libggml-base.so").c_str(), &st) == 0) return dir;
  const char* ci = std::getenv("CI");
  if (ci && std::string(ci) == "true")
    test::fail(__FILE__, __LINE__, "ggml's libraries not found in " + dir + " and CI=true: the ggml parity tests must run");
  else
    std::printf("     SKIPPED: ggml's libraries not found in %s (npm install, or set EDGELLM_LLAMA_LIB_DIR); "
                "the ggml parity tests did not run\n", dir.c_str());
  return "";
}

struct Ggml {
  void* base = nullptr;
  void* cpu = nullptr;
  bool open(const std::string& dir) {
    // RTLD_GLOBAL: the CPU backend resolves ggml-base's symbols through the global scope.
    base = dlopen((dir + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (base) cpu = dlopen((dir + "/libggml-cpu-x64.so").c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!base || !cpu) {
      test::fail(__FILE__, __LINE__, std::string("dlopen failed: ") + dlerror());
      return false;
    }
    // Fills the CPU backend's f16 -> f32 table that its vec_dot reads the scales through.
    auto init = reinterpret_cast<void (*)()>(dlsym(cpu, "ggml_cpu_init"));
    if (!init) {
      test::fail(__FILE__, __LINE__, "libggml-cpu-x64.so has no ggml_cpu_init");
      return false;
    }
    init();
    return true;
  }
  template <class Fn>
  Fn sym(void* lib, const std::string& name) {
    Fn f = reinterpret_cast<Fn>(dlsym(lib, name.c_str()));
    if (!f) test::fail(__FILE__, __LINE__, "ggml exports no " + name);
    return f;
  }
};

struct TypeSymbols {
  DType type;
  const char* dequantize;
  const char* vec_dot;
  double vec_dot_rtol;  // relative to sum |w_i x_i|; 0 = bit for bit
};

const TypeSymbols kTypes[] = {
    {DType::Q4_0, "dequantize_row_q4_0", "ggml_vec_dot_q4_0_q8_0_generic", 0},
    {DType::Q4_1, "dequantize_row_q4_1", "ggml_vec_dot_q4_1_q8_1_generic", 0},
    {DType::Q5_0, "dequantize_row_q5_0", "ggml_vec_dot_q5_0_q8_0_generic", 0},
    {DType::Q5_1, "dequantize_row_q5_1", "ggml_vec_dot_q5_1_q8_1_generic", 0},
    {DType::Q8_0, "dequantize_row_q8_0", "ggml_vec_dot_q8_0_q8_0_generic", 0},
    {DType::Q2_K, "dequantize_row_q2_K", "ggml_vec_dot_q2_K_q8_K_generic", 0},
    // ggml sums these in 8 float lanes (Q3_K..Q6_K) or per 32 weights (IQ4_XS); measured <= 4e-8.
    {DType::Q3_K, "dequantize_row_q3_K", "ggml_vec_dot_q3_K_q8_K_generic", 2e-7},
    {DType::Q4_K, "dequantize_row_q4_K", "ggml_vec_dot_q4_K_q8_K_generic", 2e-7},
    {DType::Q5_K, "dequantize_row_q5_K", "ggml_vec_dot_q5_K_q8_K_generic", 2e-7},
    {DType::Q6_K, "dequantize_row_q6_K", "ggml_vec_dot_q6_K_q8_K_generic", 2e-7},
    {DType::IQ4_NL, "dequantize_row_iq4_nl", "ggml_vec_dot_iq4_nl_q8_0_generic", 0},
    {DType::IQ4_XS, "dequantize_row_iq4_xs", "ggml_vec_dot_iq4_xs_q8_K_generic", 2e-7},
};

}  // namespace

TEST(gemm, reference_dequantizers_and_gemms_equal_ggml_own) {
  const std::string dir = ggml_lib_dir();
  if (dir.empty()) return;
  Ggml g;
  if (!g.open(dir)) return;
  std::mt19937 rng(20261206);
  const int64_t k = kQKK * 7;
  for (const TypeSymbols& e : kTypes) {
    auto dequantize = g.sym<DequantizeFn>(g.base, e.dequantize);
    auto vec_dot = g.sym<VecDotFn>(g.cpu, e.vec_dot);
    if (!dequantize || !vec_dot) continue;
    const DType act = dtype_activation(e.type);
    int dequantize_diffs = 0, dot_diffs = 0;
    std::string first;
    for (int trial = 0; trial < 100; ++trial) {
      std::vector<uint8_t> w(dtype_row_bytes(e.type, k)), xq(dtype_row_bytes(act, k));
      test::random_row(e.type, w.data(), k, rng);
      std::vector<float> want(k), got(k), x(k), xf(k), off(k);
      dequantize(w.data(), want.data(), k);
      dequantize_row(e.type, w.data(), got.data(), k);
      if (std::memcmp(want.data(), got.data(), (size_t)k * sizeof(float)) != 0) ++dequantize_diffs;

      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& v : x) v = nd(rng);
      test::quantize_activation(act, x.data(), xq.data(), k);
      float s = 0.0f, y = 0.0f;
      vec_dot((int)k, &s, 0, w.data(), 0, xq.data(), 0, 1);
      const GemmArgs a{w.data(), w.size(), k, xq.data(), xq.size(), 1, &y, 1};
      kReferenceKernels.gemm_for(e.type)(a, 0, 1);
      dequantize_row(act, xq.data(), xf.data(), k);
      test::offset_part(e.type, w.data(), k, off.data());
      double magnitude = 0;
      for (int64_t i = 0; i < k; ++i)
        magnitude += (std::fabs((double)got[i] - off[i]) + std::fabs((double)off[i])) * std::fabs((double)xf[i]);
      const bool same = e.vec_dot_rtol == 0 ? s == y : std::fabs((double)s - y) <= e.vec_dot_rtol * magnitude;
      if (!same && dot_diffs++ == 0) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "trial %d: ggml %.9g, reference %.9g (magnitude %.3g)", trial, (double)s, (double)y,
                      magnitude);
        first = buf;
      }
    }
    CHECK_MSG(dequantize_diffs == 0, std::string(dtype_name(e.type)) + ": " + std::to_string(dequantize_diffs) +
                                         " of 100 rows dequantize unlike ggml's " + e.dequantize);
    CHECK_MSG(dot_diffs == 0, std::string(dtype_name(e.type)) + ": reference GEMM differs from " + e.vec_dot + " in " +
                                  std::to_string(dot_diffs) + " of 100 rows; " + first);
  }
}

TEST(quant, q8_1_and_q8_k_activation_bytes_equal_ggml_own) {
  const std::string dir = ggml_lib_dir();
  if (dir.empty()) return;
  Ggml g;
  if (!g.open(dir)) return;
  auto q8_1 = g.sym<QuantizeFn>(g.base, "quantize_row_q8_1_ref");
  auto q8_k = g.sym<QuantizeFn>(g.base, "quantize_row_q8_K_ref");
  if (!q8_1 || !q8_k) return;
  std::mt19937 rng(7);
  const int64_t k = kQKK * 4;
  int diffs_1 = 0, diffs_k = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const float scale = trial % 3 == 0 ? 1e-3f : trial % 3 == 1 ? 1.0f : 1e4f;
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> x(k);
    for (float& v : x) v = nd(rng);
    if (trial % 5 == 0) {  // exact .5 ties at d = 1 (Q8_1 amax 127) and iscale = 1 (Q8_K max -127)
      std::uniform_int_distribution<int> code(-126, 125);
      for (int64_t i = 0; i < kQKK; ++i) x[i] = i % 32 == 0 ? -127.0f : (float)code(rng) + 0.5f;
    }
    if (trial % 7 == 0)
      for (int64_t i = kQKK; i < 2 * kQKK; ++i) x[i] = 0.0f;
    // Both start zeroed: ggml leaves a zero Q8_K block's bsums unwritten.
    std::vector<uint8_t> a(dtype_row_bytes(DType::Q8_1, k), 0), b(a.size(), 0);
    q8_1(x.data(), a.data(), k);
    quantize_row_q8_1_ref(x.data(), reinterpret_cast<block_q8_1*>(b.data()), k);
    diffs_1 += a != b;
    std::vector<uint8_t> c(dtype_row_bytes(DType::Q8_K, k), 0), d(c.size(), 0);
    q8_k(x.data(), c.data(), k);
    quantize_row_q8_K_ref(x.data(), reinterpret_cast<block_q8_K*>(d.data()), k);
    diffs_k += c != d;
  }
  CHECK_MSG(diffs_1 == 0, std::to_string(diffs_1) + " of 300 rows quantize to Q8_1 unlike ggml");
  CHECK_MSG(diffs_k == 0, std::to_string(diffs_k) + " of 300 rows quantize to Q8_K unlike ggml");
}

#endif  // __x86_64__
