#include "bench/kernel_bench.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "quant/blocks.h"
#include "runtime/matmul.h"

namespace edgellm {

namespace {

constexpr size_t kGiB = size_t(1) << 30;
constexpr size_t kHugePage = size_t(2) << 20;  // aligned so transparent huge pages can back it
constexpr size_t kSumChunkBytes = size_t(1) << 20;  // one claim per MiB summed: overhead is noise

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "491520K", "2048K", "1M" -> bytes; 0 when unreadable.
size_t parse_cache_size(const std::string& s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (end == s.c_str()) return 0;
  switch (*end) {
    case 'K': return (size_t)v << 10;
    case 'M': return (size_t)v << 20;
    case 'G': return (size_t)v << 30;
    default: return (size_t)v;
  }
}

size_t last_level_cache_bytes() {
  int best_level = -1;
  size_t best = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i);
    std::ifstream level_in(dir + "/level"), size_in(dir + "/size");
    int level = 0;
    std::string size;
    if (!(level_in >> level) || !(size_in >> size)) continue;
    if (level > best_level) {
      best_level = level;
      best = parse_cache_size(size);
    }
  }
  return best;
}

size_t ram_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// splitmix64: cheap, and good enough that the bytes do not compress or repeat.
inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Byte offsets of the f16 scale fields (d, and m / dmin where the format has one) in a block.
std::vector<size_t> scale_offsets(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q5_0: case DType::Q8_0: case DType::IQ4_NL: case DType::IQ4_XS: return {0};
    case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: return {0, 2};
    case DType::Q2_K: return {offsetof(block_q2_K, d), offsetof(block_q2_K, dmin)};
    case DType::Q3_K: return {offsetof(block_q3_K, d)};
    case DType::Q6_K: return {offsetof(block_q6_K, d)};
    default: return {};
  }
}

bool is_benchable(DType t) { return dtype_block_elems(t) > 1 && !scale_offsets(t).empty(); }

// Fills the buffer as consecutive blocks of type t: random bytes, with every f16 scale in
// [2^-10, 2^-6) with random sign, so every matrix cut from it at a block boundary is sane (no
// NaN, infinity or subnormal that would change the speed).
void fill_blocks(ThreadPool& pool, DType t, uint8_t* buf, size_t bytes) {
  const size_t block_bytes = dtype_block_bytes(t);
  const std::vector<size_t> scales = scale_offsets(t);
  const int64_t n_blocks = (int64_t)(bytes / block_bytes);
  pool.parallel_for(n_blocks, 1 << 14, [&](int64_t b, int64_t e, int) {
    uint64_t state = 0x243F6A8885A308D3ull ^ (uint64_t)b;
    uint8_t* p = buf + (size_t)b * block_bytes;
    uint8_t* end = buf + (size_t)e * block_bytes;
    for (; p + 8 <= end; p += 8) {
      const uint64_t r = splitmix64(state);
      std::memcpy(p, &r, 8);
    }
    for (; p < end; ++p) *p = (uint8_t)splitmix64(state);
    for (int64_t i = b; i < e; ++i)
      for (size_t off : scales) {
        const uint64_t r = splitmix64(state);
        const uint32_t exponent = 5 + (uint32_t)(r >> 62);  // 5..8: 2^-10 .. 2^-7 times 1.mantissa
        const uint16_t d = (uint16_t)(((r >> 61 & 1) << 15) | (exponent << 10) | ((r >> 40) & 0x3FF));
        std::memcpy(buf + (size_t)i * block_bytes + off, &d, 2);
      }
  });
  // Bytes past the last whole block are only summed, never used as weights.
  std::memset(buf + (size_t)n_blocks * block_bytes, 0, bytes - (size_t)n_blocks * block_bytes);
}

std::string lower(const char* s) {
  std::string out(s);
  for (char& c : out) c = (char)std::tolower((unsigned char)c);
  return out;
}

// Sums 64-bit words with independent accumulators so the loop vectorizes and the memory
// system, not the adds, is the limit.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
    a4 += p[i + 4];
    a5 += p[i + 5];
    a6 += p[i + 6];
    a7 += p[i + 7];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

std::atomic<uint64_t> g_sink{0};  // keeps the sums observable

void sum_buffer(ThreadPool& pool, const uint8_t* buf, size_t bytes) {
  const uint64_t* words = reinterpret_cast<const uint64_t*>(buf);
  const int64_t n_words = (int64_t)(bytes / 8);
  pool.parallel_for(n_words, (int64_t)(kSumChunkBytes / 8), [words](int64_t b, int64_t e, int) {
    g_sink.fetch_add(sum_words(words + b, (size_t)(e - b)), std::memory_order_relaxed);
  });
}

// Read bandwidth in GB/s over whole passes of `bytes`, after a shorter warm-up pass.
KernelBenchRow measure_read_bandwidth(ThreadPool& pool, const uint8_t* buf, size_t bytes, double min_seconds) {
  sum_buffer(pool, buf, std::min(bytes, size_t(64) << 20));
  size_t total = 0;
  const Clock::time_point t0 = Clock::now();
  double elapsed = 0;
  do {
    sum_buffer(pool, buf, bytes);
    total += bytes;
    elapsed = seconds_since(t0);
  } while (elapsed < min_seconds);
  KernelBenchRow row{"read_bandwidth", 0, 0, pool.size(), 0, 0, 1.0, elapsed, ""};
  row.gbps = (double)total / elapsed / 1e9;
  row.peak_gbps = row.gbps;
  return row;
}

// GEMV of type t through matmul(), one matrix after another from the buffer.
KernelBenchRow measure_gemv(ThreadPool& pool, const KernelTable& kt, DType t, const uint8_t* buf, size_t bytes,
                            int64_t rows, int64_t cols, double min_seconds) {
  const size_t matrix_bytes = dtype_row_bytes(t, cols) * (size_t)rows;
  const size_t n_matrices = std::max<size_t>(1, bytes / matrix_bytes);
  std::vector<float> x((size_t)cols), y((size_t)rows);
  uint64_t state = 42;
  for (float& v : x) v = (float)((int64_t)(splitmix64(state) >> 40) - (1 << 23)) / (float)(1 << 23);
  MatmulScratch scratch;
  auto gemv = [&](size_t i) {
    matmul(pool, kt, t, buf + (i % n_matrices) * matrix_bytes, rows, cols, x.data(), 1, y.data(), scratch);
  };
  gemv(n_matrices - 1);  // warm-up: wakes the threads, sizes the scratch
  size_t calls = 0;
  const Clock::time_point t0 = Clock::now();
  double elapsed = 0;
  do {
    gemv(calls++);
    elapsed = seconds_since(t0);
  } while (elapsed < min_seconds);
  KernelBenchRow row{"gemv_" + lower(dtype_name(t)), rows, cols, pool.size(), 0, 0, 0, elapsed, kt.name ? kt.name : ""};
  row.gbps = (double)(calls * matrix_bytes) / elapsed / 1e9;
  g_sink.fetch_add((uint64_t)(y[0] != 0), std::memory_order_relaxed);
  return row;
}

}  // namespace

size_t default_kernel_bench_working_set_bytes() {
  size_t ws = std::max(kGiB, 4 * last_level_cache_bytes());
  ws = (ws + kGiB - 1) / kGiB * kGiB;
  const size_t ram = ram_bytes();
  if (ram > 0) ws = std::min(ws, ram / 4);
  return ws;
}

std::vector<KernelBenchRow> run_kernel_bench(const KernelBenchOptions& options, const KernelTable& kt) {
  if (!(options.min_seconds >= 0))
    throw std::invalid_argument("kernel bench: min_seconds must be >= 0");
  std::vector<int> threads;
  for (int t : options.threads) {
    if (t < 1) throw std::invalid_argument("kernel bench: thread count " + std::to_string(t) + " is not >= 1");
    if (std::find(threads.begin(), threads.end(), t) == threads.end()) threads.push_back(t);
  }
  for (DType t : options.types)
    if (!is_benchable(t))
      throw std::invalid_argument(std::string("kernel bench: ") + dtype_name(t) +
                                  " is not a quantized weight type (try q4_0, q4_k, q6_k, iq4_xs, ...)");
  size_t largest = 0;
  for (const auto& s : options.shapes)
    for (DType t : options.types) {
      const int64_t block = dtype_block_elems(t);
      if (s.first < 1 || s.second < block || s.second % block != 0)
        throw std::invalid_argument("kernel bench: shape " + std::to_string(s.first) + "x" + std::to_string(s.second) +
                                    " needs rows >= 1 and cols a positive multiple of " + std::to_string(block) +
                                    " (the " + dtype_name(t) + " block)");
      largest = std::max(largest, dtype_row_bytes(t, s.second) * (size_t)s.first);
    }
  const size_t working_set =
      options.working_set_bytes ? options.working_set_bytes : default_kernel_bench_working_set_bytes();
  const size_t bytes = (std::max(working_set, largest) + 63) / 64 * 64;

  std::map<int, std::unique_ptr<ThreadPool>> pools;
  for (int t : threads) pools[t] = std::make_unique<ThreadPool>(t);

  const size_t alloc_bytes = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  Buffer buf(static_cast<uint8_t*>(std::aligned_alloc(kHugePage, alloc_bytes)));
  if (!buf) throw std::runtime_error("kernel bench: cannot allocate " + std::to_string(bytes >> 20) + " MiB");
#if defined(MADV_HUGEPAGE)
  // Transparent huge pages where allowed: 512x fewer page faults while filling (seconds on a
  // Pi) and fewer TLB misses while streaming. Advice only; ignoring a failure is fine.
  madvise(buf.get(), alloc_bytes, MADV_HUGEPAGE);
#endif
  fill_blocks(*pools.rbegin()->second, options.types.empty() ? DType::Q4_0 : options.types.front(), buf.get(), bytes);

  std::vector<KernelBenchRow> rows;
  std::map<int, double> peak;
  for (int t : threads) {
    KernelBenchRow r = measure_read_bandwidth(*pools[t], buf.get(), bytes, options.min_seconds);
    r.isa = kt.name ? kt.name : "";
    peak[t] = r.gbps;
    rows.push_back(r);
  }
  for (size_t i = 0; i < options.types.size(); ++i) {
    const DType type = options.types[i];
    if (i > 0) fill_blocks(*pools.rbegin()->second, type, buf.get(), bytes);
    for (const auto& s : options.shapes)
      for (int t : threads) {
        KernelBenchRow r =
            measure_gemv(*pools[t], kt, type, buf.get(), bytes, s.first, s.second, options.min_seconds);
        r.peak_gbps = peak[t];
        r.ratio = r.peak_gbps > 0 ? r.gbps / r.peak_gbps : 0;
        rows.push_back(r);
      }
  }
  return rows;
}

}  // namespace edgellm
