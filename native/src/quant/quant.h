// Reference quantizers and dequantizers (plain C++). Quantizing Q4_0 and Q8_0 produces the
// same bytes as ggml's reference quantizer for the same input.
#pragma once
#include <cstdint>
#include "quant/blocks.h"

namespace edgellm {

// n must be a multiple of 32 for the block formats.
void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n);
void quantize_row_q8_0_ref(const float* x, block_q8_0* y, int64_t n);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n);
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n);
void convert_row_f32_to_f16(const float* x, uint16_t* y, int64_t n);
void convert_row_f16_to_f32(const uint16_t* x, float* y, int64_t n);
void convert_row_f32_to_bf16(const float* x, uint16_t* y, int64_t n);
void convert_row_bf16_to_f32(const uint16_t* x, float* y, int64_t n);

// Any supported type -> f32, for one row of n elements.
void dequantize_row(DType t, const void* row, float* y, int64_t n);
// f32 -> any supported type, for one row of n elements (uses the reference quantizers).
void quantize_row(DType t, const float* x, void* row, int64_t n);

}  // namespace edgellm
