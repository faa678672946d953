// The compute kernels behind one dispatch table.
//
// Every kernel has one plain C++ reference (kernels/reference/) and fast paths with the same
// signatures for AVX2+FMA+F16C (kernels/avx2/, x86-64) and NEON (kernels/neon/, aarch64; the
// *_dotprod.cpp files are compiled for armv8.2-a+dotprod and used only when the CPU has it).
// What the fast paths share without intrinsics (tiling, selection, softmax bookkeeping) is
// header-only in kernels/common/.
// Tests hold every table to the reference table.
//
// Kernels work on ranges (rows [r0, r1), tasks [t0, t1)) so that runtime/ can split a call
// across the thread pool; a fast path never spawns threads and never allocates per call (one
// that needs a buffer larger than its stack keeps a per-thread one that only grows, so a decode
// step, which repeats its shapes, allocates nothing).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/blocks.h"

namespace edgellm {

// y[c][r] = sum_i W[r][i] * X[c][i] for columns c in [0, ncols) and rows r in [r0, r1).
// W rows are `k` elements of `wtype`, `w_row_bytes` apart.
// For quantized weights X is quantized activations in the format dtype_activation(wtype) names
// (quant/blocks.h): ncols rows of block_q8_0 (Q4_0, Q5_0, Q8_0, IQ4_NL), block_q8_1 (Q4_1,
// Q5_1) or block_q8_K (the K-quants, IQ4_XS), `x_col_bytes` apart (runtime/matmul quantizes
// them once per call; their codes are in [-127, 127]: no quantizer writes -128, and the AVX2
// kernels' sign trick relies on that). For F32 / F16 / BF16 weights X is f32.
// What a quantized GEMM computes: sum over blocks of the integer dot products of the weight
// codes with the activation codes, scaled as ggml's vec_dot_<type>_<activation> scales them
// (the reference kernels in kernels/reference/gemm*.cpp are the definition).
// y column c starts at y + c * y_col_stride (floats). ncols is 1 (GEMV) to 64 (small GEMM);
// a GEMM reads each weight block from memory once for all columns.
struct GemmArgs {
  const uint8_t* w;
  size_t w_row_bytes;
  int64_t k;
  const void* x;
  size_t x_col_bytes;
  int64_t ncols;
  float* y;
  int64_t y_col_stride;
};
using GemmFn = void (*)(const GemmArgs& a, int64_t r0, int64_t r1);

constexpr int kMaxGemmCols = 64;

// RoPE layouts: Normal rotates adjacent pairs (x[2i], x[2i+1]) (llama); NeoX rotates
// (x[i], x[i + n_rot/2]) (qwen2, gemma, neox).
enum class RopeMode { Normal = 0, NeoX = 2 };

// The sliding-window / sink view of one layer's KV cache for attention.
// K and V are f16, laid out [slot][n_head_kv][head_dim]. Position p lives in slot:
//   p                                   when ring == false (full cache, capacity >= p + 1)
//   p                                   when ring and p < sinks
//   sinks + (p - sinks) % (capacity - sinks)  when ring and p >= sinks
// A key at position kp is visible to a query at position qp when kp <= qp and
//   (window == 0 || qp - kp < window || kp < sinks).
struct KvView {
  const uint16_t* k;
  const uint16_t* v;
  int64_t capacity;  // slots
  int64_t sinks;     // S: first positions that stay visible (0 = none)
  int64_t window;    // W: the last W positions are visible (0 = unlimited, causal only)
  bool ring;
};

// Attention for a block of n_q queries at positions pos[0..n_q) (increasing) against a KV view.
// q:   [n_q][n_head][head_dim] f32;  out: [n_q][n_head][head_dim] f32.
// Grouped-query: head h reads KV head h / (n_head / n_head_kv).
// Scores are (q . k) * scale, softmax over the visible keys, then the weighted sum of V.
// A task is one (query, head) pair: task t = qi * n_head + h; kernels run tasks [t0, t1).
struct AttentionArgs {
  const float* q;
  const int64_t* pos;
  int64_t n_q;
  int64_t n_head;
  int64_t n_head_kv;
  int64_t head_dim;
  float scale;
  KvView kv;
  float* out;
  float softcap = 0.0f;  // > 0: scores become softcap * tanh(scores / softcap) (gemma2)
};

enum class Isa { Reference, Avx2, Avx512, Neon, NeonDotprod };

struct KernelTable {
  Isa isa;
  const char* name;

  // Activations -> Q8_0 (same bytes as quantize_row_q8_0_ref). n multiple of 32.
  void (*quantize_row_q8_0)(const float* x, block_q8_0* y, int64_t n);

  GemmFn gemm_q4_0;
  GemmFn gemm_q8_0;
  GemmFn gemm_f16;
  GemmFn gemm_bf16;
  GemmFn gemm_f32;

  // Row conversions for the KV cache.
  void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n);
  void (*f16_to_f32)(const uint16_t* x, float* y, int64_t n);

  // y = x / sqrt(mean(x^2) + eps) * w   (w may be null: no weight). y may alias x.
  void (*rmsnorm)(const float* x, const float* w, float* y, int64_t n, float eps);
  // In place over n_heads heads of head_dim floats; the first n_rot dims rotate with the
  // cos/sin pairs cs[2i] = cos(theta_i), cs[2i+1] = sin(theta_i), i < n_rot/2 (rope_cache()).
  void (*rope)(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs,
               RopeMode mode);
  // out = silu(gate) * up  and  out = gelu_tanh(gate) * up. out may alias gate or up.
  void (*swiglu)(const float* gate, const float* up, float* out, int64_t n);
  void (*geglu)(const float* gate, const float* up, float* out, int64_t n);
  // In place: x = exp(x - max) / sum.
  void (*softmax)(float* x, int64_t n);
  // out = a + b. out may alias a or b.
  void (*add)(const float* a, const float* b, float* out, int64_t n);
  // out = a * s.
  void (*scale)(const float* a, float s, float* out, int64_t n);

  // Mixture-of-experts router: the k largest logits (ties: lower index first), listed in
  // descending order, with weights = softmax over all n_experts at those indices, or, when
  // renormalize, softmax over the chosen k only (they sum to 1). k <= n_experts <= 256.
  void (*route_topk)(const float* logits, int64_t n_experts, int64_t k, bool renormalize,
                     int32_t* idx, float* weights);

  void (*attention)(const AttentionArgs& a, int64_t t0, int64_t t1);

  // Activations -> Q8_1 and Q8_K (same bytes as the reference quantizers; n a multiple of 32
  // and of 256 respectively).
  void (*quantize_row_q8_1)(const float* x, block_q8_1* y, int64_t n);
  void (*quantize_row_q8_k)(const float* x, block_q8_K* y, int64_t n);
  // The GEMMs of the other weight types (same contract as gemm_q4_0).
  GemmFn gemm_q4_1;
  GemmFn gemm_q5_0;
  GemmFn gemm_q5_1;
  GemmFn gemm_iq4_nl;
  GemmFn gemm_q2_k;
  GemmFn gemm_q3_k;
  GemmFn gemm_q4_k;
  GemmFn gemm_q5_k;
  GemmFn gemm_q6_k;
  GemmFn gemm_iq4_xs;
  // Q4_0 repacked at load to Q4_0_X4 (quant/repack.h), in whole 4-row groups: a.w is the first
  // group, rows [r0, r1) may start and end inside a group; matmul() runs the plain Q4_0 GEMM on
  // the rows % 4 tail rows. Null in tables that run Q4_0 as the file stores it; a table that sets
  // it gets its Q4_0 weights repacked at load (model.cpp) unless EDGELLM_REPACK=0.
  GemmFn gemm_q4_0_x4;
  // Q4_K repacked at load to Q4_K_X4 (quant/repack.h), the same way: whole 4-row groups, the
  // rows % 4 tail rows through gemm_q4_k, set exactly in the tables that set gemm_q4_0_x4
  // (test_dispatch checks).
  GemmFn gemm_q4_k_x4;
  GemmFn gemm_q6_k_x4;  // Q6_K -> Q6_K_X4, the same way

  GemmFn gemm_for(DType t) const;
};

// The table for this CPU (chosen once: on x86-64 the avx512 table (AVX-512 VNNI GEMMs) when the
// CPU has AVX512F/BW/VL/VNNI and the OS saves zmm state, else AVX2+FMA+F16C when present; NEON
// on aarch64 with the dotprod GEMMs when HWCAP_ASIMDDP is set; the reference elsewhere).
// EDGELLM_KERNELS=reference|avx2|avx512|neon|neon-dotprod forces one (refused if the CPU lacks it).
const KernelTable& kernels();
const KernelTable& reference_kernels();
// Every table this CPU can run, reference first (the tests compare each against it).
std::vector<const KernelTable*> runnable_kernel_tables();

// cos/sin pairs for one position, computed as ggml does (theta_i = freq_scale * pos * base^(-2i/n_rot),
// by repeated multiplication in f32). cs must hold n_rot floats.
void rope_cache(int64_t pos, int64_t n_rot, float base, float freq_scale, float* cs);

// Per-ISA tables, defined in the arch folders (only those compiled for this target exist).
extern const KernelTable kReferenceKernels;
#if defined(__x86_64__)
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;
#endif
#if defined(__aarch64__)
extern const KernelTable kNeonKernels;
extern const KernelTable kNeonDotprodKernels;
#endif

}  // namespace edgellm
