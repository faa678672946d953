// GEMV bandwidth of quantized weight types against this machine's read bandwidth: the kernel
// bench (bench/kernel_bench.h, run_gemv_bench) for any types, from the command line.
//
//   edgellm_gemv_bench [--types iq4_xs,q4_1] [--threads 1,2] [--shapes 14336x4096,4096x14336]
//                      [--seconds 0.5] [--rounds 1] [--working-set-mib 0]
//
// The kernel table is the one this CPU gets (EDGELLM_KERNELS=avx2 etc. forces one). Prints one
// line per measurement: name, shape, threads, GB/s of weights streamed, read bandwidth at the
// same thread count, and their ratio. On a shared machine --rounds N repeats the whole bench
// (read bandwidth, then every GEMV) N times and reports the best GB/s of each line over the
// rounds, the ratio being best GEMV over best read bandwidth. Not a test.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/kernel_bench.h"

using namespace edgellm;

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "edgellm_gemv_bench: %s\n"
               "usage: edgellm_gemv_bench [--types iq4_xs,q4_1] [--threads 1,2] [--shapes 14336x4096] "
               "[--seconds 0.5]\n",
               why.c_str());
  std::exit(2);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

DType parse_type(const std::string& s) {
  for (DType t : kWeightTypes) {
    std::string name = dtype_name(t);
    for (char& c : name) c = (char)std::tolower((unsigned char)c);
    if (name == s && dtype_block_elems(t) > 1) return t;
  }
  usage("unknown or unquantized type '" + s + "' (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k .. q6_k, iq4_nl, iq4_xs)");
}

}  // namespace

int main(int argc, char** argv) {
  KernelBenchOptions o;
  o.threads = {1};
  o.shapes = {{14336, 4096}, {4096, 14336}};
  std::vector<DType> types{DType::IQ4_XS};
  int rounds = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage(arg + " needs a value");
    const std::string v = argv[++i];
    if (arg == "--types") {
      types.clear();
      for (const std::string& t : split(v)) types.push_back(parse_type(t));
    } else if (arg == "--threads") {
      o.threads.clear();
      for (const std::string& t : split(v)) o.threads.push_back(std::atoi(t.c_str()));
    } else if (arg == "--shapes") {
      o.shapes.clear();
      for (const std::string& s : split(v)) {
        const size_t x = s.find('x');
        if (x == std::string::npos) usage("shape '" + s + "' is not ROWSxCOLS");
        o.shapes.push_back({std::atoll(s.substr(0, x).c_str()), std::atoll(s.substr(x + 1).c_str())});
      }
    } else if (arg == "--seconds") {
      o.min_seconds = std::atof(v.c_str());
    } else if (arg == "--rounds") {
      rounds = std::atoi(v.c_str());
      if (rounds < 1) usage("--rounds must be >= 1");
    } else if (arg == "--working-set-mib") {
      o.working_set_bytes = (size_t)std::atoll(v.c_str()) << 20;
    } else {
      usage("unknown option " + arg);
    }
  }
  try {
    std::vector<KernelBenchRow> best;
    for (int round = 0; round < rounds; ++round) {
      const std::vector<KernelBenchRow> rows = run_gemv_bench(o, kernels(), types);
      if (best.empty()) best = rows;
      for (size_t i = 0; i < rows.size(); ++i)
        if (rows[i].gbps > best[i].gbps) best[i] = rows[i];
    }
    std::map<int, double> peak;  // best read bandwidth per thread count
    for (const KernelBenchRow& r : best)
      if (r.name == "read_bandwidth") peak[r.threads] = r.gbps;
    for (KernelBenchRow& r : best) {
      r.peak_gbps = peak[r.threads];
      r.ratio = r.peak_gbps > 0 ? r.gbps / r.peak_gbps : 0;
    }
    for (const KernelBenchRow& r : best)
      std::printf("%-16s %6lldx%-6lld threads %d  %7.2f GB/s  read %7.2f GB/s  ratio %.2f  (%s)\n", r.name.c_str(),
                  (long long)r.rows, (long long)r.cols, r.threads, r.gbps, r.peak_gbps, r.ratio, r.isa.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgellm_gemv_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
