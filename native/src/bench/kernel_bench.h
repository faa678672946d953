// How close the GEMV gets to the memory bandwidth this machine actually has.
//
// Decode is memory bound: every token streams all weights from DRAM once. So the bench
// measures (a) the read bandwidth that plain vectorized summing reaches with N threads, and
// (b) GEMV (one activation column) of each weight type asked for (Q4_0 by default) through
// matmul() and the ThreadPool, in GB/s of weight
// bytes streamed, rotating over enough matrices that they come from DRAM, not cache; the
// ratio of the two says how much a faster kernel could still gain.
// The bench prints nothing; the caller formats the rows (the addon's `edgellm bench kernels`).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/thread_pool.h"

namespace edgellm {

struct KernelBenchOptions {
  // Thread counts to measure (duplicates are measured once).
  std::vector<int> threads{1, default_thread_count()};
  // GEMV shapes as {rows, cols}: a weight matrix of `rows` rows of `cols` elements (cols a
  // multiple of 32), i.e. output size x input size. Defaults: TinyLlama-1.1B attention (2048x2048),
  // its FFN up/gate (5632x2048) and down (2048x5632), and a Llama-3-8B FFN up (14336x4096).
  std::vector<std::pair<int64_t, int64_t>> shapes{{2048, 2048}, {5632, 2048}, {2048, 5632}, {14336, 4096}};
  // Quantized weight types to measure the GEMV of (cols must be a multiple of each one's block:
  // 32, or 256 for the K-quants and IQ4_XS).
  std::vector<DType> types{DType::Q4_0};
  // Each measurement repeats until this much time has passed (after one warm-up).
  double min_seconds = 0.5;
  // Bytes read per bandwidth pass and spanned by the rotating weight matrices.
  // 0: default_kernel_bench_working_set_bytes().
  size_t working_set_bytes = 0;
};

struct KernelBenchRow {
  std::string name;     // "read_bandwidth" or "gemv_<type>" (gemv_q4_0, gemv_q4_k, ...)
  int64_t rows, cols;   // GEMV shape; 0, 0 for read_bandwidth
  int threads;
  double gbps;          // 1e9 bytes per second: bytes summed, or weight bytes streamed
  double peak_gbps;     // read_bandwidth at the same thread count in the same run
  double ratio;         // gbps / peak_gbps
  double seconds;       // measured time (after warm-up)
  std::string isa;      // KernelTable::name of the table used
};

// max(1 GiB, 4 x the last-level cache from /sys/devices/system/cpu/cpu0/cache), rounded up
// to a whole GiB, and at most a quarter of RAM.
size_t default_kernel_bench_working_set_bytes();

// Allocates max(working set, largest matrix) bytes once, then measures read_bandwidth for every
// thread count and, for each type, fills the buffer with random blocks of that type (in
// parallel) and measures gemv_<type> for every shape x thread count, in that order. Throws
// std::invalid_argument for a shape with rows < 1 or cols not a positive multiple of every
// type's block, a type that is not a quantized weight type, a thread count < 1, or
// min_seconds < 0.
std::vector<KernelBenchRow> run_kernel_bench(const KernelBenchOptions& options, const KernelTable& kt);

}  // namespace edgellm
