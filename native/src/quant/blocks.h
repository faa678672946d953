// Block formats, bit-compatible with GGUF / ggml (ggml-common.h's layouts, field for field).
//
// A quantized row of k weights is k / block_elems consecutive blocks: 32-weight blocks for the
// legacy formats (Q4_0 .. Q8_1, IQ4_NL), 256-weight super-blocks for the K-quants and IQ4_XS.
// Scales are IEEE half (f16) unless noted. "q" below is the stored unsigned code.
//
// Q4_0:   w = d * (q - 8);      qs[j]: weight j low nibble, weight j+16 high nibble.
// Q4_1:   w = d * q + m;        nibbles as Q4_0.
// Q5_0:   w = d * (q - 16);     low 4 bits as Q4_0, bit 4 of weight j is bit j of qh (uint32 LE).
// Q5_1:   w = d * q + m;        bits as Q5_0.
// Q8_0:   w = d * qs[j] (int8).
// Q8_1:   Q8_0 plus s = d * sum(qs) (f16): the activations of the Q4_1/Q5_1 dot products.
// IQ4_NL: w = d * kValuesIq4nl[q]; nibbles as Q4_0.
//
// K-quants: a 256-weight super-block of 16 or 8 sub-blocks with their own (6- or 4-bit) scales,
// themselves scaled by the super-block's f16 d (and dmin for the formats with a minimum):
// Q2_K:   16 sub-blocks of 16; scales[i] = sc | m << 4; w = d*sc*q - dmin*m, q 2 bits.
//         qs: for each 128-weight half (32 bytes), weight 32*s + l (s = shift 0..3) is
//         (qs[half*32 + l] >> 2s) & 3.
// Q3_K:   16 sub-blocks of 16; 6-bit signed scales (stored +32) packed in 12 bytes; w = d*(sc-32)*(q-4·[hmask bit clear])
//         with q's low 2 bits laid out as Q2_K and the third bit in hmask.
// Q4_K:   8 sub-blocks of 32; 6-bit scale and min each, packed in 12 bytes (get_scale_min_k4);
//         w = d*sc*q - dmin*m; qs: per 64 weights (32 bytes), low nibbles then high nibbles.
// Q5_K:   as Q4_K with a fifth bit per weight in qh (bit 2i / 2i+1 of qh[l] for the i-th 64).
// Q6_K:   16 sub-blocks of 16 with int8 scales; w = d*sc*(q - 32), q = 4 low bits in ql and 2
//         high bits in qh.
// Q8_K:   activations for the K-quants and IQ4_XS: f32 d, int8 qs[256], bsums[16] = sums of
//         each 16 qs (ggml's quantize_row_q8_K).
// IQ4_XS: 8 sub-blocks of 32; 6-bit scales (scales_l nibble | scales_h 2 bits << 4), stored +32;
//         w = d * (ls - 32) * kValuesIq4nl[q]; qs per 32 weights as Q4_0's nibble order.
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgellm {

constexpr int kQK = 32;   // weights per block of the legacy formats (Q4_0 .. Q8_1, IQ4_NL)
constexpr int kQKK = 256; // weights per super-block of the K-quants and IQ4_XS
constexpr int kKScaleSize = 12;

struct block_q4_0 {
  uint16_t d;            // f16 scale
  uint8_t qs[kQK / 2];   // nibbles, stored +8
};
static_assert(sizeof(block_q4_0) == 18, "Q4_0 block must be 18 bytes");

struct block_q4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(block_q4_1) == 20, "Q4_1 block must be 20 bytes");

struct block_q5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(block_q5_0) == 22, "Q5_0 block must be 22 bytes");

struct block_q5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(block_q5_1) == 24, "Q5_1 block must be 24 bytes");

struct block_q8_0 {
  uint16_t d;            // f16 scale
  int8_t qs[kQK];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 block must be 34 bytes");

struct block_q8_1 {
  uint16_t d;  // f16 scale
  uint16_t s;  // f16 d * sum(qs)
  int8_t qs[kQK];
};
static_assert(sizeof(block_q8_1) == 36, "Q8_1 block must be 36 bytes");

struct block_iq4_nl {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL block must be 18 bytes");

struct block_q2_K {
  uint8_t scales[kQKK / 16];  // sc | m << 4
  uint8_t qs[kQKK / 4];
  uint16_t d, dmin;
};
static_assert(sizeof(block_q2_K) == 84, "Q2_K block must be 84 bytes");

struct block_q3_K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(block_q3_K) == 110, "Q3_K block must be 110 bytes");

struct block_q4_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(block_q4_K) == 144, "Q4_K block must be 144 bytes");

struct block_q5_K {
  uint16_t d, dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(block_q5_K) == 176, "Q5_K block must be 176 bytes");

struct block_q6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
static_assert(sizeof(block_q6_K) == 210, "Q6_K block must be 210 bytes");

struct block_q8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};
static_assert(sizeof(block_q8_K) == 292, "Q8_K block must be 292 bytes");

struct block_iq4_xs {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQKK / 64];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS block must be 136 bytes");

// IQ4_NL / IQ4_XS code book (ggml's kvalues_iq4nl).
inline constexpr int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the packed 12 bytes.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// Tensor element types, numbered as in GGUF's ggml_type so file values map directly.
// Q8_1 and Q8_K are activation formats: never a weight type of a model edgellm loads.
enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
  // Internal weight layouts, never in a file (outside GGUF's numbering; dtype_is_known refuses
  // them): Q4_0, Q4_K and Q6_K repacked at load for a kernel table (quant/repack.h).
  Q4_0_X4 = 0x10002,
  Q4_K_X4 = 0x1000C,
  Q6_K_X4 = 0x1000E,
};

// The weight types a model may hold (every one has a GEMM in every kernel table), in a fixed
// order for tests and reports.
inline constexpr DType kWeightTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                                         DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                                         DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS};

// Elements per block and bytes per block of a type (0 bytes: not a type edgellm knows).
inline int64_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: return 1;
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q8_1: case DType::IQ4_NL: case DType::Q4_0_X4: return kQK;
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
    case DType::Q8_K: case DType::IQ4_XS: case DType::Q4_K_X4: case DType::Q6_K_X4: return kQKK;
  }
  return 1;
}
inline size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::Q4_0: return sizeof(block_q4_0);
    case DType::Q4_1: return sizeof(block_q4_1);
    case DType::Q5_0: return sizeof(block_q5_0);
    case DType::Q5_1: return sizeof(block_q5_1);
    case DType::Q8_0: return sizeof(block_q8_0);
    case DType::Q8_1: return sizeof(block_q8_1);
    case DType::Q2_K: return sizeof(block_q2_K);
    case DType::Q3_K: return sizeof(block_q3_K);
    case DType::Q4_K: case DType::Q4_K_X4: return sizeof(block_q4_K);
    case DType::Q5_K: return sizeof(block_q5_K);
    case DType::Q6_K: case DType::Q6_K_X4: return sizeof(block_q6_K);
    case DType::Q8_K: return sizeof(block_q8_K);
    case DType::IQ4_NL: return sizeof(block_iq4_nl);
    case DType::IQ4_XS: return sizeof(block_iq4_xs);
    // Per row and block: a 4-row group of blocks is 4 Q4_0 blocks' bytes, so a tensor keeps its size.
    case DType::Q4_0_X4: return sizeof(block_q4_0);
  }
  return 0;
}
// Bytes of one row of n elements; n must be a multiple of the block size.
inline size_t dtype_row_bytes(DType t, int64_t n) {
  return (size_t)(n / dtype_block_elems(t)) * dtype_block_bytes(t);
}

// What a GEMM over weights of type t takes as X (GemmArgs::x): f32 for float weights, else the
// quantized activation format of ggml's vec_dot for that type.
inline DType dtype_activation(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: return DType::F32;
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: case DType::IQ4_NL: case DType::Q4_0_X4: return DType::Q8_0;
    case DType::Q4_1: case DType::Q5_1: return DType::Q8_1;
    default: return DType::Q8_K;  // Q2_K .. Q6_K, IQ4_XS
  }
}

const char* dtype_name(DType t);
// A weight type a model may hold (kWeightTypes).
bool dtype_is_known(uint32_t raw);

}  // namespace edgellm
