// x86-64 AVX-512 fast paths (AVX512F/BW/VL + VNNI), compiled with those flags on top of the
// AVX2 set; called only when the CPU has them and the OS saves zmm state (cpu_features().avx512vnni).
// The avx512 table is the avx2 table with these kernels in place of the avx2 ones.
#pragma once
#include "kernels/kernels.h"

namespace edgellm::avx512 {
// Q4_0 x Q8_0 with vpdpbusd on 16-row register tiles: 2 to 8 columns (sequences decoding
// together) with each regrouped block held in registers, more (prompts) through a stack slab;
// 1 column (decoding one sequence) runs the avx2 streaming GEMV.
void gemm_q4_0(const GemmArgs& a, int64_t r0, int64_t r1);
// Q4_K / Q5_K / Q6_K x Q8_K with vpdpbusd on 16-row tiles, each super-block regrouped once for
// every column (gemm_k.cpp).
void gemm_q4_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q5_k(const GemmArgs& a, int64_t r0, int64_t r1);
void gemm_q6_k(const GemmArgs& a, int64_t r0, int64_t r1);
// Full-cache attention with 16 (query, head) rows of one KV head per pass, one per zmm lane, or,
// for the heads of a single query (decode), dims in lanes with each K/V tile shared by the heads;
// rings, windows and head sizes that are not a multiple of 16 run the avx2 kernel.
void attention(const AttentionArgs& a, int64_t t0, int64_t t1);
}  // namespace edgellm::avx512
