// Y = W X across the thread pool, for any weight type.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/thread_pool.h"

namespace edgellm {

// Reused between calls so that a decode step does not allocate.
struct MatmulScratch {
  std::vector<block_q8_0> xq;
};

// W is `rows` rows of `k` elements of `wtype`, contiguous (row bytes = dtype_row_bytes).
// X is ncols columns of k floats, contiguous ([ncols][k]); Y is [ncols][rows].
// Quantized weights: X is quantized to Q8_0 once (in parallel), then rows are split across the
// pool in chunks; columns go through the kernel 64 at a time.
void matmul(ThreadPool& pool, const KernelTable& kt, DType wtype, const void* w, int64_t rows,
            int64_t k, const float* x, int64_t ncols, float* y, MatmulScratch& scratch);

}  // namespace edgellm
