// Single-thread GMAC/s of one quantized GEMM across every kernel table this CPU runs, measured in
// one process with the tables taking turns (the machine may be shared: time is the thread's CPU
// time, each figure is the best of --reps rounds, and every round runs every table once).
//
//   edgellm_gemm_bench [--type q4_k] [--rows 4096] [--k 4096] [--cols 1,2,4,8,16,64] [--reps 5]
//                      [--seconds 0.2]
//
// Weights are random blocks with finite f16 scales, activations random Q8_K / Q8_0 / Q8_1 codes:
// the figures do not depend on the values. The weight matrix (rows x k) is read once per call, so
// with the defaults it is larger than L2 and, for one column, the figure is bandwidth-bound.
// Not a test: it prints one line per table and column count.
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "quant/fp16.h"

using namespace edgellm;

namespace {

// This thread's CPU time: on a shared machine, wall-clock time would count other processes' turns.
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

DType parse_type(const std::string& s) {
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q2_K, DType::Q3_K,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_NL, DType::IQ4_XS}) {
    std::string name = dtype_name(t);
    for (char& c : name) c = (char)std::tolower((unsigned char)c);
    if (name == s) return t;
  }
  std::fprintf(stderr, "edgellm_gemm_bench: unknown --type %s (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k .. q6_k, iq4_nl, iq4_xs)\n",
               s.c_str());
  std::exit(2);
}

// Random bytes with every f16 of the block set to a small finite scale: the f16 fields sit at
// the start of every type except Q6_K (at its end) and Q2_K / Q3_K (d, dmin at the end).
void fill_blocks(DType t, uint8_t* p, int64_t nblocks, std::mt19937& rng) {
  const size_t bytes = dtype_block_bytes(t);
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8_t* blk = p + b * bytes;
    for (size_t i = 0; i < bytes; ++i) blk[i] = (uint8_t)rng();
    const uint16_t h = float_to_half(0.01f);
    switch (t) {
      case DType::Q6_K: std::memcpy(blk + bytes - 2, &h, 2); break;
      case DType::Q2_K: case DType::Q3_K:
        std::memcpy(blk + bytes - 2, &h, 2);
        if (t == DType::Q2_K) std::memcpy(blk + bytes - 4, &h, 2);
        break;
      case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K:
        std::memcpy(blk, &h, 2);
        std::memcpy(blk + 2, &h, 2);
        break;
      default: std::memcpy(blk, &h, 2); break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string type = "q4_k";
  int64_t rows = 4096, k = 4096;
  std::vector<int64_t> cols{1, 2, 4, 8, 16, 64};
  int reps = 5;
  double seconds = 0.2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!v) { std::fprintf(stderr, "edgellm_gemm_bench: %s needs a value\n", a.c_str()); return 2; }
    ++i;
    if (a == "--type") type = v;
    else if (a == "--rows") rows = std::atoll(v);
    else if (a == "--k") k = std::atoll(v);
    else if (a == "--reps") reps = std::atoi(v);
    else if (a == "--seconds") seconds = std::atof(v);
    else if (a == "--cols") {
      cols.clear();
      for (const char* p = v; *p;) {
        cols.push_back(std::atoll(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    } else { std::fprintf(stderr, "edgellm_gemm_bench: unknown option %s\n", a.c_str()); return 2; }
  }
  const DType t = parse_type(type);
  const DType xt = dtype_activation(t);
  if (k % dtype_block_elems(t) != 0 || rows < 1) {
    std::fprintf(stderr, "edgellm_gemm_bench: --k must be a multiple of %lld and --rows >= 1\n",
                 (long long)dtype_block_elems(t));
    return 2;
  }
  for (int64_t c : cols)
    if (c < 1 || c > kMaxGemmCols) { std::fprintf(stderr, "edgellm_gemm_bench: --cols must be 1..64\n"); return 2; }

  std::mt19937 rng(7);
  const size_t w_row = dtype_row_bytes(t, k), x_col = dtype_row_bytes(xt, k);
  std::vector<uint8_t> w(w_row * rows), x(x_col * kMaxGemmCols);
  fill_blocks(t, w.data(), (int64_t)(w.size() / dtype_block_bytes(t)), rng);
  for (uint8_t& b : x) b = (uint8_t)rng();
  for (int64_t c = 0; c < kMaxGemmCols; ++c)  // the activation scale leads every Q8 block
    for (int64_t b = 0; b < k / dtype_block_elems(xt); ++b) {
      uint8_t* blk = x.data() + c * x_col + b * dtype_block_bytes(xt);
      if (xt == DType::Q8_K) { const float d = 0.01f; std::memcpy(blk, &d, 4); }
      else { const uint16_t h = float_to_half(0.01f); std::memcpy(blk, &h, 2); if (xt == DType::Q8_1) std::memcpy(blk + 2, &h, 2); }
    }
  std::vector<float> y(rows * kMaxGemmCols);

  std::vector<const KernelTable*> tables;
  for (const KernelTable* kt : runnable_kernel_tables())
    if (kt->isa != Isa::Reference && kt->gemm_for(t)) tables.push_back(kt);
  std::printf("%s rows=%lld k=%lld, 1 thread (CPU time), best of %d rounds (GMAC/s = rows*k*cols / s)\n", dtype_name(t),
              (long long)rows, (long long)k, reps);
  for (int64_t nc : cols) {
    std::vector<double> best(tables.size(), 0);
    const GemmArgs a{w.data(), w_row, k, x.data(), x_col, nc, y.data(), rows};
    for (int rep = 0; rep < reps; ++rep)
      for (size_t i = 0; i < tables.size(); ++i) {
        const GemmFn f = tables[i]->gemm_for(t);
        f(a, 0, rows);  // warm-up
        int64_t calls = 0;
        const double t0 = thread_seconds();
        double el = 0;
        do {
          f(a, 0, rows);
          ++calls;
          el = thread_seconds() - t0;
        } while (el < seconds);
        const double gmacs = (double)rows * k * nc * calls / el / 1e9;
        if (gmacs > best[i]) best[i] = gmacs;
      }
    std::printf("cols=%-3lld", (long long)nc);
    for (size_t i = 0; i < tables.size(); ++i) {
      std::printf("  %s %7.2f GMAC/s", tables[i]->name, best[i]);
      if (i > 0 && best[0] > 0) std::printf(" (%.2fx %s)", best[i] / best[0], tables[0]->name);
    }
    std::printf("\n");
  }
  return 0;
}
