// Y = W X across the thread pool, for any weight type.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/thread_pool.h"

namespace edgellm {

// Reused between calls so that a decode step does not allocate: it grows to the largest
// quantized activations seen (bytes) and is never shrunk. One scratch per concurrent matmul caller.
struct MatmulScratch {
  std::vector<uint8_t> xq;
  // What xq holds (set by each call that quantizes; x null: nothing reusable), for a call with
  // same_input (see matmul).
  const float* x = nullptr;
  int64_t k = 0, ncols = 0;
  DType act = DType::F32;
  const KernelTable* kt = nullptr;
};

// Bytes of quantized activations that matmul() needs for ncols columns of k against weights of
// type wtype (0 for float weights).
size_t matmul_activation_bytes(DType wtype, int64_t k, int64_t ncols);

// W is `rows` rows of `k` elements of `wtype`, contiguous (row bytes = dtype_row_bytes).
// X is ncols columns of k floats, contiguous ([ncols][k]); Y is [ncols][rows] (column c of Y
// starts at y + c * rows). Y must not overlap W or X.
//
// Quantized weights: X is quantized once per call to dtype_activation(wtype) (Q8_0, Q8_1 or
// Q8_K) with the table's quantize_row_* (in parallel over blocks, into scratch; several columns
// are shared among the threads), then rows are split across the
// pool in chunks; inside a chunk, columns go through the kernel kMaxGemmCols at a time, so a
// chunk's weights are reused from cache by every column group. Float weights read X directly.
//
// wtype may be a repacked type (Q4_0_X4, Q4_K_X4, Q6_K_X4: repacked at load, quant/repack.h):
// the whole 4-row groups go through its GEMM (kt.gemm_for) and the rows % 4 rows after them,
// plain rows, through the GEMM of the type the file stores (plain_type).
//
// Throws std::invalid_argument with the reason when rows < 0, k < 1, ncols < 0, k is not a
// multiple of the weight type's block (32, or 256 for the K-quants and IQ4_XS), wtype is not a known type, the table lacks the kernel, or a
// pointer is null while its matrix is non-empty. rows == 0 or ncols == 0 does nothing.
//
// same_input: the caller promises that X has not been written since the previous matmul() with
// this scratch (the Q, K and V projections of one normed input; gate and up). If that call
// quantized the same X (pointer, k, ncols) to the same format with the same table, its
// quantization is used as it is instead of being repeated; otherwise X is quantized as usual.
void matmul(ThreadPool& pool, const KernelTable& kt, DType wtype, const void* w, int64_t rows,
            int64_t k, const float* x, int64_t ncols, float* y, MatmulScratch& scratch, bool same_input = false);

// Rows per chunk that matmul() hands to a thread: about 16 chunks per thread so that a thread
// the OS preempts costs little, but each chunk streams at least 16 KiB of weights (so the
// atomic claim is noise) and at most 256 KiB (so column groups reuse it from L2); a multiple
// of 4 (16 from 32 rows up, so threads do not share Y cache lines, and from 16 rows up for 2 or
// more columns, whole 16-row tiles). One chunk for 1 thread.
// A GEMM of kGemmChunkCols columns or more takes about 4 chunks per thread instead (at least 64
// rows and at most 1 MiB of weights, a multiple of 16): its kernels prepare the activation columns once per call (the avx512
// one sums each Q8_0 block of x), which then serves more rows, and a chunk already holds
// ncols x more work than a GEMV's.
int64_t matmul_rows_per_chunk(int64_t rows, size_t row_bytes, int threads, int64_t ncols = 1);
constexpr int64_t kGemmChunkCols = 4;

}  // namespace edgellm
