// Reference quantizers and dequantizers (plain C++). Quantizing Q4_0 and Q8_0 produces the
// same bytes as ggml's reference quantizer for the same input.
#pragma once
#include <cstdint>
#include <string>
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

// The other formats, as ggml's reference code computes them (weight quantizers: byte-identical
// with llama.cpp's quantizer without an importance matrix, i.e. ggml_quantize_chunk with no
// imatrix: ggml's quantize_row_*_ref, except IQ4_NL, whose model files get the 7-try scale
// search of quantize_iq4_nl rather than quantize_row_iq4_nl_ref's none).
// n a multiple of the type's block (32, or 256 for the K-quants, Q8_K and IQ4_XS).
void quantize_row_q8_1_ref(const float* x, block_q8_1* y, int64_t n);
void quantize_row_q8_K_ref(const float* x, block_q8_K* y, int64_t n);
void quantize_row_q4_1_ref(const float* x, block_q4_1* y, int64_t n);
void quantize_row_q5_0_ref(const float* x, block_q5_0* y, int64_t n);
void quantize_row_q5_1_ref(const float* x, block_q5_1* y, int64_t n);
void quantize_row_q2_K_ref(const float* x, block_q2_K* y, int64_t n);
void quantize_row_q3_K_ref(const float* x, block_q3_K* y, int64_t n);
void quantize_row_q4_K_ref(const float* x, block_q4_K* y, int64_t n);
void quantize_row_q5_K_ref(const float* x, block_q5_K* y, int64_t n);
void quantize_row_q6_K_ref(const float* x, block_q6_K* y, int64_t n);
void quantize_row_iq4_nl_ref(const float* x, block_iq4_nl* y, int64_t n);
void quantize_row_iq4_xs_ref(const float* x, block_iq4_xs* y, int64_t n);
void dequantize_row_q8_1(const block_q8_1* x, float* y, int64_t n);
void dequantize_row_q8_K(const block_q8_K* x, float* y, int64_t n);
void dequantize_row_q4_1(const block_q4_1* x, float* y, int64_t n);
void dequantize_row_q5_0(const block_q5_0* x, float* y, int64_t n);
void dequantize_row_q5_1(const block_q5_1* x, float* y, int64_t n);
void dequantize_row_q2_K(const block_q2_K* x, float* y, int64_t n);
void dequantize_row_q3_K(const block_q3_K* x, float* y, int64_t n);
void dequantize_row_q4_K(const block_q4_K* x, float* y, int64_t n);
void dequantize_row_q5_K(const block_q5_K* x, float* y, int64_t n);
void dequantize_row_q6_K(const block_q6_K* x, float* y, int64_t n);
void dequantize_row_iq4_nl(const block_iq4_nl* x, float* y, int64_t n);
void dequantize_row_iq4_xs(const block_iq4_xs* x, float* y, int64_t n);

// The type named `name` (a weight type's dtype_name, any case: "Q4_K", "q4_k"); false if none.
bool dtype_from_name(const std::string& name, DType* out);

// Any supported type -> f32, for one row of n elements.
void dequantize_row(DType t, const void* row, float* y, int64_t n);
// f32 -> any supported type, for one row of n elements (uses the reference quantizers).
void quantize_row(DType t, const float* x, void* row, int64_t n);

}  // namespace edgellm
