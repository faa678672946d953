#include "runtime/matmul.h"

#include "quant/repack.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace edgellm {

namespace {

// Quantizing X takes about as long per float as reading a weight; 256 blocks (8192 floats)
// per chunk keep a GEMV's activations (k <= 8192) in one chunk, which runs without waking
// the pool, and split a batch's activations into pieces worth sharing.
constexpr int64_t kQuantizeGrainBlocks = 256;
constexpr size_t kMinChunkBytes = 16 * 1024;
constexpr size_t kMaxChunkBytes = 256 * 1024;

[[noreturn]] void invalid(const std::string& what) { throw std::invalid_argument("matmul: " + what); }

// One row of activations -> blocks of the activation format `act` (n a multiple of its block).
using ActQuantizer = void (*)(const KernelTable& kt, const float* x, void* y, int64_t n);
ActQuantizer activation_quantizer(const KernelTable& kt, DType act) {
  switch (act) {
    case DType::Q8_0:
      if (!kt.quantize_row_q8_0) return nullptr;
      return [](const KernelTable& t, const float* x, void* y, int64_t n) {
        t.quantize_row_q8_0(x, static_cast<block_q8_0*>(y), n);
      };
    case DType::Q8_1:
      if (!kt.quantize_row_q8_1) return nullptr;
      return [](const KernelTable& t, const float* x, void* y, int64_t n) {
        t.quantize_row_q8_1(x, static_cast<block_q8_1*>(y), n);
      };
    case DType::Q8_K:
      if (!kt.quantize_row_q8_k) return nullptr;
      return [](const KernelTable& t, const float* x, void* y, int64_t n) {
        t.quantize_row_q8_k(x, static_cast<block_q8_K*>(y), n);
      };
    default: return nullptr;
  }
}

void validate(const KernelTable& kt, DType wtype, const void* w, int64_t rows, int64_t k, const float* x,
              int64_t ncols, const float* y) {
  const DType plain = plain_type(wtype);  // wtype itself unless repacked at load
  if (!dtype_is_known((uint32_t)plain) || dtype_block_bytes(wtype) == 0)
    invalid("unsupported weight type " + std::to_string((uint32_t)wtype));
  if (rows < 0) invalid("rows must be >= 0, got " + std::to_string(rows));
  if (ncols < 0) invalid("ncols must be >= 0, got " + std::to_string(ncols));
  if (k < 1) invalid("k must be >= 1, got " + std::to_string(k));
  const int64_t block = dtype_block_elems(wtype);
  if (k % block != 0)
    invalid("k = " + std::to_string(k) + " is not a multiple of " + std::to_string(block) + ", which " +
            dtype_name(wtype) + " weights require");
  if (!kt.gemm_for(wtype))
    invalid(std::string("kernel table '") + (kt.name ? kt.name : "?") + "' has no GEMM for " + dtype_name(wtype) +
            (plain != wtype ? " (weights repacked at load for another table; load with EDGELLM_REPACK=0)" : ""));
  if (plain != wtype && rows % 4 != 0 && !kt.gemm_for(plain))
    invalid(std::string("kernel table '") + (kt.name ? kt.name : "?") + "' has no " + dtype_name(plain) +
            " GEMM for the rows past the last 4-row group");
  if (block > 1 && !activation_quantizer(kt, dtype_activation(wtype)))
    invalid(std::string("kernel table '") + (kt.name ? kt.name : "?") + "' has no quantizer for " +
            dtype_name(dtype_activation(wtype)) + " activations");
  if (rows > 0 && ncols > 0) {
    if (!w) invalid("w is null");
    if (!x) invalid("x is null");
    if (!y) invalid("y is null");
  }
}

struct QuantizeTask {
  const KernelTable* kt;
  ActQuantizer quantize;
  const float* x;
  uint8_t* xq;
  int64_t nb;           // blocks per column
  int64_t block_elems;  // 32 or 256
  size_t block_bytes;
};

// Blocks [b, e) of the flattened [ncols][nb] activation blocks; a chunk may span columns.
void quantize_blocks(const QuantizeTask& t, int64_t b, int64_t e) {
  while (b < e) {
    const int64_t col = b / t.nb, first = b % t.nb;
    const int64_t count = std::min(e - b, t.nb - first);
    t.quantize(*t.kt, t.x + (col * t.nb + first) * t.block_elems, t.xq + (size_t)(col * t.nb + first) * t.block_bytes,
               count * t.block_elems);
    b += count;
  }
}

struct GemmTask {
  GemmFn gemm;
  GemmArgs base;  // all columns; ncols may exceed kMaxGemmCols
  // Repacked weights (Q4_0_X4, Q4_K_X4, Q6_K_X4): rows from tail_row on are plain rows of tail_gemm's type.
  int64_t tail_row = INT64_MAX;
  GemmFn tail_gemm = nullptr;
};

void gemm_columns(GemmFn gemm, const GemmArgs& base, int64_t r0, int64_t r1) {
  for (int64_t c0 = 0; c0 < base.ncols; c0 += kMaxGemmCols) {
    GemmArgs a = base;
    a.x = static_cast<const uint8_t*>(base.x) + c0 * base.x_col_bytes;
    a.ncols = std::min<int64_t>(kMaxGemmCols, base.ncols - c0);
    a.y = base.y + c0 * base.y_col_stride;
    gemm(a, r0, r1);
  }
}

void gemm_rows(const GemmTask& t, int64_t r0, int64_t r1) {
  if (r0 < t.tail_row) gemm_columns(t.gemm, t.base, r0, std::min(r1, t.tail_row));
  if (r1 > t.tail_row) {
    // The tail as a matrix of its own: its row 0 is row tail_row.
    GemmArgs a = t.base;
    a.w = t.base.w + t.tail_row * t.base.w_row_bytes;
    a.y = t.base.y + t.tail_row;
    gemm_columns(t.tail_gemm, a, std::max(r0, t.tail_row) - t.tail_row, r1 - t.tail_row);
  }
}

}  // namespace

size_t matmul_activation_bytes(DType wtype, int64_t k, int64_t ncols) {
  const DType act = dtype_activation(wtype);
  if (act == DType::F32) return 0;
  return dtype_row_bytes(act, k) * (size_t)ncols;
}

int64_t matmul_rows_per_chunk(int64_t rows, size_t row_bytes, int threads, int64_t ncols) {
  if (threads <= 1 || rows <= 4) return std::max<int64_t>(rows, 1);
  if (ncols >= kGemmChunkCols) {
    // At most 1 MiB of weights per chunk (16 rows when a row is larger), for the column groups'
    // reuse from L2.
    const int64_t cap = std::max<int64_t>(16, (int64_t)(4 * kMaxChunkBytes / std::max<size_t>(row_bytes, 1)) / 16 * 16);
    int64_t r = std::max<int64_t>(64, (rows + threads * 4 - 1) / (threads * 4));
    r = std::min((r + 15) / 16 * 16, cap);
    return std::min(r, rows);
  }
  row_bytes = std::max<size_t>(row_bytes, 1);
  const int64_t target = (rows + threads * 16 - 1) / (threads * 16);
  const int64_t min_rows = (int64_t)((kMinChunkBytes + row_bytes - 1) / row_bytes);
  const int64_t max_rows = std::max<int64_t>(1, (int64_t)(kMaxChunkBytes / row_bytes));
  int64_t r = std::min(std::max(target, min_rows), std::max(max_rows, (int64_t)1));
  r = (r + 3) / 4 * 4;
  // Several columns (2 or 3 sequences decoding) use 16-row tiles for some types (the avx2
  // Q4_K tile): whole tiles, no leftover rows for a narrower tile.
  if (r >= 32 || (ncols > 1 && r >= 16)) r = (r + 15) / 16 * 16;
  return std::min(r, rows);
}

void matmul(ThreadPool& pool, const KernelTable& kt, DType wtype, const void* w, int64_t rows, int64_t k,
            const float* x, int64_t ncols, float* y, MatmulScratch& scratch, bool same_input) {
  validate(kt, wtype, w, rows, k, x, ncols, y);
  if (rows == 0 || ncols == 0) return;

  GemmTask task;
  task.gemm = kt.gemm_for(wtype);
  task.base.w = static_cast<const uint8_t*>(w);
  task.base.w_row_bytes = dtype_row_bytes(wtype, k);
  task.base.k = k;
  task.base.ncols = ncols;
  task.base.y = y;
  task.base.y_col_stride = rows;
  if (plain_type(wtype) != wtype) {
    task.tail_row = x4_group_rows(rows);
    task.tail_gemm = kt.gemm_for(plain_type(wtype));
  }

  const DType act = dtype_activation(wtype);
  if (act != DType::F32) {
    const int64_t be = dtype_block_elems(act);
    const int64_t nb = k / be;
    const bool held = same_input && scratch.x == x && scratch.k == k && scratch.ncols == ncols && scratch.act == act &&
                      scratch.kt == &kt;
    if (!held) {
      scratch.x = nullptr;  // nothing reusable until the quantization below is complete
      scratch.xq.resize(matmul_activation_bytes(wtype, k, ncols));
      const QuantizeTask q{&kt, activation_quantizer(kt, act), x, scratch.xq.data(), nb, be, dtype_block_bytes(act)};
      // The grain is in blocks: kQuantizeGrainBlocks 32-float blocks' worth of floats, and for
      // several columns (sequences decoding together) no more than a thread's share: 8 columns
      // of 1024 fit one grain, which the calling thread would otherwise quantize alone while
      // the pool waits for the GEMM (~2% of an 8-sequence decode step on 2 threads).
      int64_t grain = std::max<int64_t>(1, kQuantizeGrainBlocks * kQK / be);
      if (ncols > 1) grain = std::min(grain, std::max(nb, (ncols * nb + pool.size() - 1) / pool.size()));
      pool.parallel_for(ncols * nb, grain, [&q](int64_t b, int64_t e, int) { quantize_blocks(q, b, e); });
      scratch.x = x;
      scratch.k = k;
      scratch.ncols = ncols;
      scratch.act = act;
      scratch.kt = &kt;
    }
    task.base.x = scratch.xq.data();
    task.base.x_col_bytes = dtype_row_bytes(act, k);
  } else {
    // X is read as floats and may differ from what scratch quantized (the same buffer holds each
    // layer's input): nothing is reusable after this call.
    scratch.x = nullptr;
    task.base.x = x;
    task.base.x_col_bytes = (size_t)k * sizeof(float);
  }

  const int64_t grain = matmul_rows_per_chunk(rows, task.base.w_row_bytes, pool.size(), ncols);
  pool.parallel_for(rows, grain, [&task](int64_t r0, int64_t r1, int) { gemm_rows(task, r0, r1); });
}

}  // namespace edgellm
