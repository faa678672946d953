// Weight layouts repacked at load for a kernel table's GEMMs (issue #18). Plain C++: the layout
// code runs (and is tested) on any host; only the kernels over it are per ISA.
//
// Q4_0_X4: Q4_0 rows interleaved 4 at a time for sdot with an activation lane
// (vdotq_laneq_s32): rows 4g..4g+3 (a group) become nb blocks of block_q4_0x4, block b holding
// block b of the 4 rows. One 16-byte vector of a block is 4 rows x 4 consecutive weights, so
// one sdot by lane v of an activation vector is the 4 rows' dot products over those 4 weights:
//   qs[16 v + 4 i + t], row i, t < 4:  low nibble  = weight 4 v + t,
//                                     high nibble = weight 16 + 4 v + t,
// each nibble being the Q4_0 code n xor 8, i.e. n - 8 as a 4-bit two's complement: `v << 4`
// and `v & 0xF0` read as int8 are then 16 (n - 8) for the low and high nibbles, signed codes
// with no offset term (the kernels divide the block's integer sum by 16, exactly).
// d[i] is row i's f16 scale, the 4 next to each other for one load.
//
// A group is 4 rows' bytes (72 bytes per block = 4 x 18), so a repacked tensor has the size of
// the original, experts stay rows x row_bytes apart, and the repack can run in place. Rows past
// the last whole group (rows % 4 of them) stay plain Q4_0 rows at their usual offsets.
//
// Q4_K_X4: Q4_K rows interleaved the same way, for the same sdot by activation lane: rows
// 4g..4g+3 become nb super-blocks of block_q4_Kx4, block b holding super-block b of the 4 rows,
// with what a kernel would otherwise decode per row and super-block laid out for the 4 rows at
// once:
//   d[i], dmin[i]: row i's f16 scales (one 16-byte load);
//   sm[16 h + 4 i + j] (h < 2, j < 4): sub-block s = 4 h + j of row i: its 6-bit scale in bits
//     0..5 and bits 4, 5 of its 6-bit min in bits 6, 7; the min's low 4 bits are the low (h = 0)
//     or high (h = 1) nibble of sm[32 + 4 i + j]. So `sm & 0x3F` is the scales with row i's 4 in
//     bytes 4i..4i+3, and the mins come out in the same order (an int8 vector per 4 sub-blocks,
//     which sdot by lane with the activation's sub-block sums turns into the 4 rows' min terms);
//   qs[64 s + 16 v + 4 i + t] (s < 8, v < 4, t < 4): row i's sub-block s, low nibble = weight
//     32 s + 4 v + t, high nibble = weight 32 s + 16 + 4 v + t, the codes 0..15 as stored: one
//     vector and an and / a shift are 4 rows x 4 weights for lane v of the sub-block's first /
//     second 16 activations.
// The 16 six-bit values of a row take the 12 bytes they take in Q4_K, so a group keeps the size
// of its 4 rows too (4 x 144 bytes); rows % 4 tail rows stay plain Q4_K.
//
// Q6_K_X4: Q6_K rows interleaved the same way (16 sub-blocks of 16 weights, int8 scales, codes
// 0..63 meaning q - 32). Block b of a group (4 x 210 bytes):
//   d[i]: row i's f16 scale;
//   sc[16 h + 4 i + j] (h, j < 4): the scale of row i's sub-block 4 h + j (int8 vectors of 4 rows
//     x 4 sub-blocks, as the min term's sdots and the scale widening read them);
//   ql[32 s + 16 u + 4 i + t] (s < 16, u < 2, t < 4): the low 4 bits of row i's weights
//     16 s + 8 u + t (low nibble) and 16 s + 8 u + 4 + t (high nibble);
//   qh[16 s + 4 i + t]: their high 2 bits: bits 0, 1 for weight 16 s + t, 4, 5 for 16 s + 4 + t,
//     2, 3 for 16 s + 8 + t, 6, 7 for 16 s + 12 + t: placed so that an and plus one insert (sli
//     / sri) per code vector joins the two parts.
#pragma once
#include <cstdint>

#include "kernels/kernels.h"
#include "quant/blocks.h"

namespace edgellm {

struct block_q4_0x4 {
  uint16_t d[4];    // f16 scales of the group's rows 0..3
  uint8_t qs[64];   // see above
};
static_assert(sizeof(block_q4_0x4) == 4 * sizeof(block_q4_0), "a repacked group keeps the size of its 4 rows");

struct block_q4_Kx4 {
  uint16_t d[4];     // f16 super-block scales of rows 0..3
  uint16_t dmin[4];  // f16 scales of the mins of rows 0..3
  uint8_t sm[48];    // sub-block scales and mins, see above
  uint8_t qs[512];   // see above
};
static_assert(sizeof(block_q4_Kx4) == 4 * sizeof(block_q4_K), "a repacked group keeps the size of its 4 rows");

struct block_q6_Kx4 {
  uint16_t d[4];    // f16 super-block scales of rows 0..3
  int8_t sc[64];    // sub-block scales, see above
  uint8_t ql[512];  // see above
  uint8_t qh[256];  // see above
};
static_assert(sizeof(block_q6_Kx4) == 4 * sizeof(block_q6_K), "a repacked group keeps the size of its 4 rows");

// Rows of a matrix that form whole 4-row groups (every repacked type).
inline int64_t x4_group_rows(int64_t rows) { return rows / 4 * 4; }

// The type a matrix of type t becomes when a table's GEMMs want it repacked (Q4_0 -> Q4_0_X4,
// Q4_K -> Q4_K_X4, Q6_K -> Q6_K_X4), or t itself; and back (the plain type of the rows % 4 tail rows).
DType repacked_type(DType t);
DType plain_type(DType t);

// rows x k Q4_0 (k a multiple of 32) -> Q4_0_X4. dst may be src (in place: one group at a time
// through a small buffer) or a separate buffer of the same size.
void repack_q4_0_x4(const void* src, int64_t rows, int64_t k, void* dst);

// The nb blocks of one repacked group back to 4 plain Q4_0 rows, out[i * nb + b] (row i, block b).
void unpack_q4_0_x4_group(const block_q4_0x4* group, int64_t nb, block_q4_0* out);

// A Q4_0_X4 GEMM (KernelTable::gemm_q4_0_x4's contract) through a Q4_0 one: each group of
// [r0, r1) back to its 4 rows, then gemm_q4_0 on them. The reference's, and the plain NEON
// table's (a Pi 4 never repacks; this serves a model repacked for the dotprod table that a
// test then runs through the plain table).
void gemm_q4_0_x4_via_rows(GemmFn gemm_q4_0, const GemmArgs& a, int64_t r0, int64_t r1);

// The same three for Q4_K -> Q4_K_X4 (k a multiple of 256).
void repack_q4_k_x4(const void* src, int64_t rows, int64_t k, void* dst);
void unpack_q4_k_x4_group(const block_q4_Kx4* group, int64_t nb, block_q4_K* out);
void gemm_q4_k_x4_via_rows(GemmFn gemm_q4_k, const GemmArgs& a, int64_t r0, int64_t r1);

// And for Q6_K -> Q6_K_X4.
void repack_q6_k_x4(const void* src, int64_t rows, int64_t k, void* dst);
void unpack_q6_k_x4_group(const block_q6_Kx4* group, int64_t nb, block_q6_K* out);
void gemm_q6_k_x4_via_rows(GemmFn gemm_q6_k, const GemmArgs& a, int64_t r0, int64_t r1);

// rows x k of type t (Q4_0, Q4_K or Q6_K) -> repacked_type(t), as above.
void repack_rows(DType t, const void* src, int64_t rows, int64_t k, void* dst);

}  // namespace edgellm
