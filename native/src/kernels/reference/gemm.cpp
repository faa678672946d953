// Reference GEMV / small GEMM. Quantized weights take Q8_0 activations and integer block
// dot products, as ggml does: y = sum_blocks d_w * d_x * sum_j q_w[j] * q_x[j].
#include "kernels/reference/reference.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace edgellm::ref {

void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) { quantize_row_q8_0_ref(x, y, n); }

static const block_q8_0* x_col_q8(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const block_q8_0*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}
static const float* x_col_f32(const GemmArgs& a, int64_t c) {
  return reinterpret_cast<const float*>(static_cast<const uint8_t*>(a.x) + c * a.x_col_bytes);
}

void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / kQK;
  for (int64_t r = r0; r < r1; ++r) {
    const block_q4_0* w = reinterpret_cast<const block_q4_0*>(a.w + r * a.w_row_bytes);
    for (int64_t c = 0; c < a.ncols; ++c) {
      const block_q8_0* x = x_col_q8(a, c);
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < kQK / 2; ++j) {
          isum += ((w[b].qs[j] & 0x0F) - 8) * x[b].qs[j];
          isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + kQK / 2];
        }
        sum += (float)isum * (half_to_float(w[b].d) * half_to_float(x[b].d));
      }
      a.y[c * a.y_col_stride + r] = sum;
    }
  }
}

void gemm_q8_0(const GemmArgs& a, int64_t r0, int64_t r1) {
  const int64_t nb = a.k / kQK;
  for (int64_t r = r0; r < r1; ++r) {
    const block_q8_0* w = reinterpret_cast<const block_q8_0*>(a.w + r * a.w_row_bytes);
    for (int64_t c = 0; c < a.ncols; ++c) {
      const block_q8_0* x = x_col_q8(a, c);
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < kQK; ++j) isum += w[b].qs[j] * x[b].qs[j];
        sum += (float)isum * (half_to_float(w[b].d) * half_to_float(x[b].d));
      }
      a.y[c * a.y_col_stride + r] = sum;
    }
  }
}

// Float weights: f32 activations, f32 products summed in f32 (fast paths may reorder the sum).
template <float (*Load)(const uint8_t*, int64_t)>
static void gemm_float(const GemmArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* w = a.w + r * a.w_row_bytes;
    for (int64_t c = 0; c < a.ncols; ++c) {
      const float* x = x_col_f32(a, c);
      float sum = 0.0f;
      for (int64_t i = 0; i < a.k; ++i) sum += Load(w, i) * x[i];
      a.y[c * a.y_col_stride + r] = sum;
    }
  }
}
static float load_f32(const uint8_t* w, int64_t i) { return reinterpret_cast<const float*>(w)[i]; }
static float load_f16(const uint8_t* w, int64_t i) {
  return half_to_float(reinterpret_cast<const uint16_t*>(w)[i]);
}
static float load_bf16(const uint8_t* w, int64_t i) {
  return bf16_to_float(reinterpret_cast<const uint16_t*>(w)[i]);
}

void gemm_f32(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_float<load_f32>(a, r0, r1); }
void gemm_f16(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_float<load_f16>(a, r0, r1); }
void gemm_bf16(const GemmArgs& a, int64_t r0, int64_t r1) { gemm_float<load_bf16>(a, r0, r1); }

void f32_to_f16(const float* x, uint16_t* y, int64_t n) { convert_row_f32_to_f16(x, y, n); }
void f16_to_f32(const uint16_t* x, float* y, int64_t n) { convert_row_f16_to_f32(x, y, n); }

}  // namespace edgellm::ref
