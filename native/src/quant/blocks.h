// Block formats, bit-compatible with GGUF / ggml.
//
// A quantized row of k weights (k a multiple of 32) is k/32 consecutive blocks.
// Q4_0: weight = d * (nibble - 8); qs[j] holds weight j in its low nibble and weight j+16
//       in its high nibble.
// Q8_0: weight = d * qs[j].
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgellm {

constexpr int kQK = 32;  // weights per block for Q4_0 and Q8_0

struct block_q4_0 {
  uint16_t d;            // f16 scale
  uint8_t qs[kQK / 2];   // nibbles, stored +8
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block must be 18 bytes");

struct block_q8_0 {
  uint16_t d;            // f16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block must be 34 bytes");

// Tensor element types, numbered as in GGUF's ggml_type so file values map directly.
enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 8,
  BF16 = 30,
};

// Elements per block and bytes per block of a type.
inline int64_t dtype_block_elems(DType t) {
  return (t == DType::Q4_0 || t == DType::Q8_0) ? kQK : 1;
}
inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::Q4_0: return sizeof(block_q4_0);
    case DType::Q8_0: return sizeof(block_q8_0);
  }
  return 0;
}
// Bytes of one row of n elements; n must be a multiple of the block size.
inline size_t dtype_row_bytes(DType t, int64_t n) {
  return (size_t)(n / dtype_block_elems(t)) * dtype_block_bytes(t);
}
const char* dtype_name(DType t);
bool dtype_is_known(uint32_t raw);

}  // namespace edgellm
